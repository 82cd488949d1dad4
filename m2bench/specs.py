"""The contracts between the runner, tasks and models: frozen dataclasses, no behaviour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Model interfaces (``ModelSpec.kind``). The forward signature of each is fixed:
#: encoder: (input_ids, attention_mask) -> hidden (B, L, D); causal_lm: input_ids -> logits;
#: image: images -> features; forecast: x (B, L, C) -> y (B, H, C), time-series models with the
#: full contract of ``baselines.ts_common`` (marks, mask, ``features``);
#: text_encoder: ``encode(texts, ...)`` -> embeddings (N, D) (see ``m2bench.encoding``);
#: lexical: ``index(texts)`` then ``search(queries, k)`` (e.g. BM25).
MODEL_KINDS = ("encoder", "causal_lm", "image", "forecast", "text_encoder", "lexical")
TASK_KINDS = ("retrieval", "lm", "image_cls", "seq_cls", "forecast", "timeseries")
FAMILIES = ("m2", "baseline")


@dataclass(frozen=True)
class DataSource:
    """Where a task's data comes from; logged with every run.

    Attributes:
        hf: hub dataset repo id(s), comma-separated when a task reads several repos.
        revision: pinned hub revision (commit sha or tag) used when loading from the hub.
        license: license of the data, as stated by its source.
        sample: folder (relative to ``tasks/data``) of the bundled real sample used by ``--sample``.
        sample_sha256: expected sha256 of each sample file, ``{file name: hex digest}``.
        citation: where the data and its description come from.
    """

    hf: str = ""
    revision: str = "main"
    license: str = ""
    sample: str = ""
    sample_sha256: tuple[tuple[str, str], ...] = ()
    citation: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A task's identity, protocol version and scoring direction."""

    name: str
    version: int
    kind: str
    metric: str
    higher_is_better: bool
    source: DataSource
    default_models: tuple[str, ...]
    model_kinds: tuple[str, ...]
    sample_size: int
    trains: bool = False
    subtasks: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    description: str = ""
    #: RunConfig defaults of this task, below the model's and the user's (e.g. the image geometry
    #: it gives every model: ``{"model.img_size": 28, "model.in_chans": 1}``)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: the task runs one fine-tuning job per seed itself (``ctx.seeds``) and reports mean and
    #: ``_std``; otherwise the runner calls ``evaluate`` once per seed and aggregates the same way
    multi_seed: bool = False
    #: the task batches training and test by its recipe's ``task.batch_size`` (its protocol's
    #: batches), so the runner refuses ``--batch-size`` (the evaluation batch elsewhere)
    batches_by_recipe: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} not in {TASK_KINDS}")
        if self.metric not in self.metrics:
            object.__setattr__(self, "metrics", (self.metric, *self.metrics))


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what it claims.

    Attributes:
        name: registry name, ``<family>_<size>[_<ctx>]``.
        kind: interface, one of ``MODEL_KINDS``.
        family: ``m2`` or ``baseline``.
        params_m: claimed parameter count in millions (``None`` for models without parameters).
        builder: ``builder(**overrides) -> model``.
        config_cls: the config dataclass whose fields are the valid overrides (``None``: the
            builder's keyword arguments are).
        max_len: maximum input length in tokens (``None`` when not applicable).
        description: one line shown by ``m2bench list models``, including truncation behaviour.
        weights: default source of pretrained weights (hub id), empty when none is released.
        loader: ``loader(source, name, **overrides) -> model`` building the model with weights
            from ``source`` (a local folder or hub id); ``None`` when the builder handles weights
            itself or the model has none.
    """

    name: str
    kind: str
    family: str
    params_m: float | None
    builder: Callable[..., Any]
    config_cls: type | None = None
    max_len: int | None = None
    description: str = ""
    weights: str = ""
    loader: Callable[..., Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model {self.name}: kind {self.kind!r} not in {MODEL_KINDS}")
        if self.family not in FAMILIES:
            raise ValueError(f"model {self.name}: family {self.family!r} not in {FAMILIES}")


@dataclass(frozen=True)
class LoadedData:
    """What a task's ``load`` returns: its rows plus where they came from.

    Attributes:
        tables: named row lists, e.g. ``{"queries": [...], "documents": [...]}``.
        provenance: ``data_source``, ``data_revision`` (sha256 or hub commit) and counts, logged
            as run tags.
    """

    tables: dict[str, list[dict[str, Any]]]
    provenance: dict[str, str]


@dataclass(frozen=True)
class EvalContext:
    """How the runner asks a task to evaluate: device, precision, batch size, output folder."""

    device: Any  # torch.device
    precision: str  # fp32 | bf16 | fp16 (resolved, never "auto")
    batch_size: int
    out_dir: Any  # pathlib.Path: the task writes its artifacts (e.g. rankings) here
    options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    # for tasks that train (``spec.trains``): a fresh model per fine-tuning job, the seeds, the
    # bounds of each job, and a logger of per-step metrics into the run
    build_model: Any = None  # (**config overrides) -> model, fresh weights, on ``device``
    seeds: tuple[int, ...] = (0,)
    max_steps: int | None = None
    epochs: float | None = None
    log_metrics: Any = None  # (metrics: dict[str, float], step: int) -> None
    resume: bool = False  # continue from the last training checkpoint in ``out_dir``


@dataclass(frozen=True)
class EvalOutput:
    """A task's evaluation result.

    Attributes:
        metrics: flat quality metrics: ``<metric>`` (the task score), ``<subtask>/<metric>``,
            ``<subtask>/n_eval``; must contain ``spec.metric``.
        perf: throughput and memory, ``perf/<name>``.
        summary: per-subtask main metric for the end-of-run table, ``{subtask: value}``.
        tags: extra run tags (how each job ran: recipe, starting weights).
    """

    metrics: dict[str, float]
    perf: dict[str, float]
    summary: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # e.g. each fine-tuning job's recipe
