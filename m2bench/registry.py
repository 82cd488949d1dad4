"""Name -> object registries for tasks and models.

Registries are loud: registering a name twice raises, and an unknown name raises an error that
lists the closest registered names (as lm-eval and mteb do).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from m2bench.errors import M2BenchError, UnknownNameError

T = TypeVar("T")


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """A ``did you mean`` clause for ``name`` among ``choices`` (empty if nothing is close)."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        close = [c for c in choices if name.lower() in c.lower()][:n]
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class Registry(Generic[T]):
    """A mapping from unique lowercase names to entries of one kind ("task", "model")."""

    def __init__(self, kind: str, list_command: str) -> None:
        self.kind = kind
        self._list_command = list_command
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a second registration of the same name raises."""
        if name in self._entries:
            raise M2BenchError(f"{self.kind} {name!r} is registered twice; rename one of them")
        if name != name.lower() or " " in name:
            raise M2BenchError(f"{self.kind} name {name!r} must be lowercase without spaces")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """Look ``name`` up; unknown names raise with close matches and how to list all names."""
        try:
            return self._entries[name]
        except KeyError:
            hint = suggest(name, list(self._entries))
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (`{self._list_command}` lists them all)"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def decorator(self, make_entry: Callable[[Callable], T], name: str) -> Callable:
        """For ``@register_x(...)`` decorators: registers ``make_entry(fn)`` under ``name``."""

        def wrap(fn: Callable) -> Callable:
            self.register(name, make_entry(fn))
            return fn

        return wrap


# --- the two registries of m2bench -------------------------------------------------------------

TASKS: Registry = Registry("task", "m2bench list tasks")
MODELS: Registry = Registry("model", "m2bench list models")
_PLUGINS_LOADED = False


def load_plugins() -> None:
    """Import the packages whose import registers tasks and models (idempotent)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import baselines  # noqa: F401
    import m2bench.models  # noqa: F401
    import tasks  # noqa: F401


def register_model(
    name: str,
    *,
    kind: str,
    family: str,
    params_m: float | None,
    config_cls: type | None = None,
    max_len: int | None = None,
    description: str = "",
    weights: str = "",
    loader: Callable | None = None,
    **extra: object,
) -> Callable:
    """Decorator registering a builder ``fn(**overrides) -> model`` under ``name``."""
    from m2bench.specs import ModelSpec

    def make(fn: Callable) -> ModelSpec:
        return ModelSpec(
            name=name,
            kind=kind,
            family=family,
            params_m=params_m,
            builder=fn,
            config_cls=config_cls,
            max_len=max_len,
            description=description or _first_line(fn.__doc__),
            weights=weights,
            loader=loader,
            extra=dict(extra),
        )

    return MODELS.decorator(make, name)


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


def register_task(spec: object) -> Callable:
    """Class decorator registering a task: an instance of the class under ``spec.name``.

    The class provides ``load``, ``evaluate`` (and ``batches``/``loss`` when ``spec.trains``).
    """

    def wrap(cls: type) -> type:
        cls.spec = spec
        TASKS.register(spec.name, cls())
        return cls

    return wrap


def get_model_spec(name: str) -> object:
    """The ``ModelSpec`` registered under ``name``."""
    load_plugins()
    return MODELS.get(name)


def get_task(name: str) -> object:
    """The task registered under ``name`` (without any ``:subtask`` suffix)."""
    load_plugins()
    return TASKS.get(name.split(":", 1)[0])


def list_tasks() -> list[str]:
    """Names of all registered tasks."""
    load_plugins()
    return TASKS.names()


def list_models(kind: str | None = None) -> list[str]:
    """Names of all registered models, optionally only those of one ``kind``."""
    load_plugins()
    return [n for n in MODELS.names() if kind is None or MODELS.get(n).kind == kind]


def valid_overrides(spec: object) -> list[str]:
    """The override names ``create_model`` accepts for ``spec``."""
    import dataclasses
    import inspect

    if spec.config_cls is not None:
        return [f.name for f in dataclasses.fields(spec.config_cls)]
    params = inspect.signature(spec.builder).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD]


INITS = ("pretrained", "random")


def check_weights_options(spec: object, init: str, checkpoint: str | None) -> None:
    """Refuse an ``init``/``checkpoint`` combination the model cannot take (before any compute)."""
    from m2bench.errors import ConfigError

    if spec.loader is None and checkpoint:
        raise ConfigError(f"model {spec.name!r} loads no weights; drop --checkpoint for it")
    if init == "random" and spec.extra.get("pretrained_only"):
        raise ConfigError(f"model {spec.name!r} exists only pretrained; use --init pretrained")


def check_checkpoint_path(checkpoint: str | None) -> None:
    """A ``--checkpoint`` written as a path (``/``, ``./``, ``../``, ``~``) must exist: a typo is
    an error for the command line, not weights that are unavailable (a skip)."""
    from pathlib import Path

    from m2bench.errors import ConfigError

    if checkpoint and checkpoint.startswith(("/", "./", "../", "~")):
        if not Path(checkpoint).expanduser().exists():
            raise ConfigError(f"--checkpoint {checkpoint} does not exist; pass a folder or file "
                              "of weights, or a hub id (org/name)")  # fmt: skip


def create_model(
    name: str, *, init: str = "random", checkpoint: str | None = None, **overrides: object
) -> object:
    """Build the registered model ``name``.

    Args:
        name: registry name.
        init: ``random`` (the default, as timm's ``pretrained=False``) keeps the initialisation;
            ``pretrained`` loads weights from ``checkpoint`` or the model's default hub id, for
            models that have them (``m2bench run`` defaults to ``pretrained``).
        checkpoint: a local folder or hub id of weights to load.
        **overrides: fields of the model's config; unknown ones raise listing the valid fields.

    Raises:
        ConfigError: bad override, or a checkpoint/init the model cannot take.
        WeightsUnavailable: pretrained weights asked for but not obtainable (the caller skips).
    """
    from m2bench.errors import ConfigError, WeightsUnavailable

    spec = get_model_spec(name)
    valid = valid_overrides(spec)
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ConfigError(
            f"model {name!r} has no setting {', '.join(map(repr, bad))}; "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    if init not in INITS:
        raise ConfigError(f"init {init!r} is not one of {', '.join(INITS)}")
    if checkpoint and init != "pretrained":
        raise ConfigError("a checkpoint is loaded only with init='pretrained' (--init pretrained)")
    check_weights_options(spec, init, checkpoint)
    if spec.loader is not None and init == "pretrained":
        source = checkpoint or spec.weights
        if not source:
            raise WeightsUnavailable(
                f"no released weights are known for {name}; pass --checkpoint DIR_OR_HUB_ID, "
                "or --init random for an untrained model"
            )
        model = spec.loader(source, name, **overrides)
    else:
        model = spec.builder(**overrides)
    try:
        model.spec = spec
    except AttributeError:  # objects with __slots__ keep no spec; the runner passes it along
        pass
    return model
