"""Typed run configuration, resolved in one place.

Precedence, lowest first: RunConfig defaults < task defaults < model defaults < ``--config`` YAML <
``key=value`` overrides < explicit CLI flags. Unknown keys fail. The resolved config is saved as the
``config.yaml`` artifact of every run and logged as params.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from m2bench.errors import ConfigError
from m2bench.registry import suggest

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one (task, model) run."""

    task: str
    model: str
    subtask: str | None = None  # one subtask of the task (``--task locov1:qmsum``)
    sample: bool = False  # the bundled real sample, offline
    data_dir: str | None = None  # local data instead of the hub
    out: str = "runs"  # per-run metrics.json and rankings go to out/<task>/<model>/
    limit: int | None = None  # first N evaluation rows (queries for retrieval)
    batch_size: int = 32  # evaluation / encoding batch size
    max_steps: int | None = None  # bound on training steps (tasks that train)
    epochs: float | None = None  # bound on training epochs (tasks that train)
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    seeds: tuple[int, ...] | None = None  # tasks that train: one fine-tuning per seed, mean and std
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    init: str = "pretrained"  # pretrained weights where a model has them, or random
    checkpoint: str | None = None  # weights to load (local folder or hub id)
    resume: bool = False  # tasks that train: continue from the run's last training checkpoint
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  # model.<field>=...
    task_options: Mapping[str, Any] = field(default_factory=dict)  # task.<option>=...

    @classmethod
    def resolve(
        cls,
        task: str,
        model: str,
        *,
        task_defaults: Mapping[str, Any] = (),
        model_defaults: Mapping[str, Any] = (),
        config_file: str | Path | None = None,
        overrides: Sequence[str] = (),
        flags: Mapping[str, Any] = (),
    ) -> RunConfig:
        """Merge the layers of configuration into one frozen, validated config."""
        merged: dict[str, Any] = {"model_overrides": {}, "task_options": {}}
        layers = [dict(task_defaults), dict(model_defaults)]
        if config_file:
            layer = _read_yaml(config_file)
            for key, want in (("task", task), ("model", model)):  # as a saved config.yaml has them
                if key in layer and (named := layer.pop(key)) != want:
                    raise ConfigError(
                        f"config file {config_file} names {key} {named!r}, the command "
                        f"{want!r}; pass --{key} {named} or drop the file's {key}: line"
                    )
            layers.append(layer)
        layers.append(parse_overrides(overrides))
        layers.append({k: v for k, v in dict(flags).items() if v is not None})
        for layer in layers:
            for key, value in layer.items():
                _merge(merged, key, value)
        merged["task"], merged["model"] = task, model
        kinds = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in merged.items():  # each setting as its field's kind (batch_size=abc)
            if key not in ("task", "model", "seeds", "model_overrides", "task_options"):
                default = kinds[key].default
                merged[key] = typed_value(value, default if default is not dataclasses.MISSING
                                     else None, str(kinds[key].type), key)  # fmt: skip
        cfg = cls(**merged)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ConfigError`` on values outside their domain."""
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2^32), got {self.seed}")
        if self.seeds is not None:
            raw = self.seeds
            raw = raw.split(",") if isinstance(raw, str) else [raw] if isinstance(raw, int) else raw
            try:
                seeds = tuple(int(s) for s in raw)
                if not seeds or not all(0 <= s < 2**32 for s in seeds):
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(
                    f"seeds must be integers in [0, 2^32) like 1,2,3; got {self.seeds!r}"
                ) from None
            object.__setattr__(self, "seeds", seeds)
            object.__setattr__(self, "seed", seeds[0])  # the run's seed is the first job's
        if self.init not in ("pretrained", "random"):
            raise ConfigError(f"init {self.init!r} is not one of pretrained, random")
        if self.sample and self.data_dir:
            raise ConfigError("--sample and --data-dir exclude each other; pass one of them")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for config.yaml)."""
        d = dataclasses.asdict(self)
        d["model_overrides"] = dict(self.model_overrides)
        d["task_options"] = dict(self.task_options)
        d["seeds"] = list(self.seeds) if self.seeds is not None else None
        return d

    def flat(self) -> dict[str, Any]:
        """Flattened ``{name: value}`` for MLflow params (``model.x``, ``task.y``)."""
        d = self.to_dict()
        out = {k: v for k, v in d.items() if not isinstance(v, dict)}
        out.update({f"model.{k}": v for k, v in d["model_overrides"].items()})
        out.update({f"task.{k}": v for k, v in d["task_options"].items()})
        return out


FIELDS = [f.name for f in dataclasses.fields(RunConfig)]


def _merge(merged: dict[str, Any], key: str, value: Any) -> None:
    if key in ("model_overrides", "task_options"):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        merged[key] = {**merged[key], **value}
    elif key.startswith("model."):
        merged["model_overrides"] = {**merged["model_overrides"], key[6:]: value}
    elif key.startswith("task."):
        merged["task_options"] = {**merged["task_options"], key[5:]: value}
    elif key in FIELDS and key not in ("task", "model"):
        merged[key] = value
    elif key in ("task", "model"):
        raise ConfigError(f"{key} is chosen with --{key}, not as a setting ({key}={value!r})")
    else:
        hint = suggest(key, FIELDS)
        raise ConfigError(
            f"unknown config key {key!r}{hint}; valid: {', '.join(FIELDS)}, model.<field>, "
            "task.<option>"
        )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars (``3``, ``true``, ``1e-4``, ``abc``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. batch_size=16)")
        out[key.strip()] = _scalar(raw)
    return out


def _scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string; users mean a number
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass a YAML file of RunConfig keys")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return data


def apply_options(
    base: Any, options: Mapping[str, Any], *, what: str, extra: Sequence[str] = ()
) -> Any:
    """``base`` (a task's frozen recipe dataclass) with its ``task.<field>=`` options applied.

    Options named in ``extra`` are accepted but left to the caller; any other unknown option
    raises. Each value must be of its field's kind (a number for a number, ``true``/``false``
    for a flag); a tuple-valued field given as a string (``task.betas=0.9,0.95``) is split into
    floats.

    Raises:
        ConfigError: an option the recipe does not have, naming the valid ones, or a value of
            the wrong kind, naming the option.
    """
    names = {f.name for f in dataclasses.fields(base)}
    bad = sorted(set(options) - names - set(extra))
    if bad:
        hint = suggest(bad[0], sorted(names))
        raise ConfigError(
            f"unknown {what} option {bad[0]!r}{hint}; valid: task."
            + ", task.".join(sorted(names | set(extra)))
        )
    types = {f.name: str(f.type) for f in dataclasses.fields(base)}
    updates = {
        k: typed_value(v, getattr(base, k), types[k], f"{what} option task.{k}")
        for k, v in options.items()
        if k in names
    }
    return dataclasses.replace(base, **updates)


def check_ranges(
    recipe: Any, *, positive: Sequence[str] = (), non_negative: Sequence[str] = ()
) -> None:
    """Raise ``ConfigError`` naming the first ``task.<field>`` of ``recipe`` that is not > 0
    (``positive``) or not >= 0 (``non_negative``); values are already numbers
    (:func:`apply_options`)."""
    for names, bad, bound in ((positive, lambda v: v <= 0, "> 0"),
                              (non_negative, lambda v: v < 0, ">= 0")):  # fmt: skip
        for name in names:
            if bad(getattr(recipe, name)):
                raise ConfigError(f"task.{name} must be {bound}, got {getattr(recipe, name):g}")


def typed_value(value: Any, default: Any, annotation: str, name: str) -> Any:
    """``value`` as the kind of the field ``name`` it sets: the kind its annotation names
    (``float``, ``int``, ``bool``, ``str``, a tuple of floats), else its default's type. Numbers
    must be finite.

    Raises:
        ConfigError: a value of another kind (``task.epochs=abc``), naming the field.
    """
    if value is None and (default is None or "None" in annotation):
        return None
    words = set(re.findall(r"\w+", annotation))  # the annotation names the kind; else the default
    kind = next((t for t in (float, int, bool, str) if t.__name__ in words), None)
    if kind is None:
        if default is None:
            return value
        kind = type(default)
    if isinstance(default, tuple) or "tuple" in words:
        if isinstance(value, str):
            try:
                return tuple(float(x) for x in value.split(","))
            except ValueError:
                raise ConfigError(f"{name} must be numbers like 0.9,0.95, got {value!r}") from None
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind in (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if kind is int:
            if float(value) != int(value):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if kind is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{name} must be a text value, got {value!r}")
        return str(value)
    return value
