"""Typed run configuration, resolved in one place.

Precedence, lowest first: RunConfig defaults < task defaults < model defaults < ``--config`` YAML <
``key=value`` overrides < explicit CLI flags. Unknown keys fail. The resolved config is saved as the
``config.yaml`` artifact of every run and logged as params.
"""

from __future__ import annotations

import dataclasses
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
            layers.append(_read_yaml(config_file))
        layers.append(parse_overrides(overrides))
        layers.append({k: v for k, v in dict(flags).items() if v is not None})
        for layer in layers:
            for key, value in layer.items():
                _merge(merged, key, value)
        merged["task"], merged["model"] = task, model
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
        if self.seeds is not None:
            raw = self.seeds
            raw = raw.split(",") if isinstance(raw, str) else [raw] if isinstance(raw, int) else raw
            try:
                seeds = tuple(int(s) for s in raw)
                if not seeds:
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(
                    f"seeds must be integers like 1,2,3; got {self.seeds!r}"
                ) from None
            object.__setattr__(self, "seeds", seeds)
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
    raises. A tuple-valued field given as a string (``task.betas=0.9,0.95``) is split into floats.

    Raises:
        ConfigError: an option the recipe does not have, naming the valid ones.
    """
    names = {f.name for f in dataclasses.fields(base)}
    bad = sorted(set(options) - names - set(extra))
    if bad:
        hint = suggest(bad[0], sorted(names))
        raise ConfigError(
            f"unknown {what} option {bad[0]!r}{hint}; valid: task."
            + ", task.".join(sorted(names | set(extra)))
        )
    updates = {k: v for k, v in options.items() if k in names}
    for key, value in updates.items():
        if isinstance(value, str) and isinstance(getattr(base, key), tuple):
            updates[key] = tuple(float(x) for x in value.split(","))
    return dataclasses.replace(base, **updates)
