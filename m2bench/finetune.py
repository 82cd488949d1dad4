"""``m2bench train``: fine-tune a text encoder on a task's training files, save, then evaluate.

The training run is an MLflow run of its own (tag ``stage=train``; ``train/loss`` and ``train/lr``
per optimizer step; artifacts ``config.yaml``, ``train_config.yaml`` and ``env.txt``); the saved
checkpoint is then evaluated through the ordinary runner path (``--checkpoint``), so its scores
land in the leaderboard like any other weights, and each evaluation run is tagged
``train_run_id`` with the training run's id. Every input is checked before the training run
starts: bad input costs no compute and records nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from m2bench import loop, runner, runtime, timing, tracking
from m2bench.config import RunConfig, parse_overrides, typed_value
from m2bench.errors import ConfigError, DataError, StoreError, WeightsUnavailable
from m2bench.registry import (
    check_checkpoint_path,
    check_weights_options,
    create_model,
    get_model_spec,
    get_task,
    suggest,
)

log = logging.getLogger(__name__)
TRAIN_FIELDS = [f.name for f in dataclasses.fields(loop.TrainConfig)]
_FIELDS = {f.name: f for f in dataclasses.fields(loop.TrainConfig)}
_FLAGS = {"max_steps": " (--max-steps)", "epochs": " (--epochs)"}  # settings with a CLI flag
_DOMAINS = {  # field: (valid value?, what a valid value is)
    "lr": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "eps": (lambda v: v > 0, "> 0"),
    "warmup_frac": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "max_grad_norm": (lambda v: v is None or v > 0, "> 0 (or null: no clipping)"),
    "grad_accum": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v is None or v >= 1, ">= 1"),
    "schedule": (lambda v: v in loop.SCHEDULES, "one of " + ", ".join(loop.SCHEDULES)),
    "min_lr_frac": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


@dataclass
class FinetuneResult:
    """The training run and the evaluation runs of the saved checkpoint."""

    run_id: str
    checkpoint: Path
    train: loop.TrainResult
    evaluations: list[runner.RunResult]


def _typed(name: str, value: Any) -> Any:
    """``value`` as the kind of the ``TrainConfig`` field ``name`` (its annotation's)."""
    field = _FIELDS[name]
    default = None if field.default is dataclasses.MISSING else field.default
    return typed_value(value, default, str(field.type), f"train.{name}{_FLAGS.get(name, '')}")


def _settings(items: tuple[str, ...]) -> tuple[loop.TrainConfig, dict[str, Any]]:
    """The ``train.<field>`` settings, typed and checked, and the ``model.<field>`` overrides."""
    train, model = {}, {}
    for key, value in parse_overrides(items).items():
        if key.startswith("train."):
            if key[6:] not in TRAIN_FIELDS:
                hint = suggest(key[6:], TRAIN_FIELDS)
                raise ConfigError(
                    f"unknown training setting {key!r}{hint}; valid: train."
                    + ", train.".join(TRAIN_FIELDS)
                )
            train[key[6:]] = _typed(key[6:], value)
        elif key.startswith("model."):
            model[key[6:]] = value
        else:
            raise ConfigError(
                f"unknown training override {key}={value!r}; use train.<field> or model.<field>"
            )
    cfg = loop.TrainConfig(**train)
    for name, (valid, domain) in _DOMAINS.items():
        if not valid(getattr(cfg, name)):
            raise ConfigError(
                f"train.{name}{_FLAGS.get(name, '')} must be {domain}, got {getattr(cfg, name)!r}"
            )
    return cfg, model


def _writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and prove it writable, or raise naming ``flag``."""
    try:
        runtime.prepare_out(folder)
    except StoreError:
        raise StoreError(
            f"{flag} folder {folder} is not writable; pass {flag} DIR with a writable folder"
        ) from None


def _load(
    plugin: Any, flag: str, folder: str | None, subtask: str | None, sample: bool = False
) -> Any:
    """The task's data in ``folder`` (or its bundled sample); errors name ``flag``, not the
    runner's ``--data-dir`` or ``--sample``."""
    path = None if sample else Path(folder).expanduser()
    if path is not None and not path.is_dir():
        raise DataError(
            f"{flag} {folder} is not a folder; pass a folder in the task's local format "
            "(README, `m2bench train`)"
        )
    try:
        return plugin.load("test", data_dir=path, sample=sample, subtask=subtask)
    except DataError as exc:
        text = str(exc)
        if "--data-dir" in text or "--sample" in text:  # the runner's advice, not train's flags
            text = text.rpartition("; ")[0] or text
        raise DataError(f"{flag} {folder or ''}".rstrip() + f": {text}") from None


def finetune(
    task: str,
    model_name: str,
    *,
    train_data: str,
    eval_data: str | None = None,
    sample_eval: bool = False,
    loss: str = "opl",
    negatives: int = 32,
    batch_size: int = 1,
    save: str | None = None,
    out: str = "runs",
    init: str = "pretrained",
    checkpoint: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model_name`` on ``train_data`` (the task's local format), save and evaluate.

    ``task`` is ``name`` or ``name:subtask`` (train and evaluate on that subtask only).
    ``overrides``: ``train.<field>`` (see :class:`m2bench.loop.TrainConfig`, e.g. ``train.lr``,
    ``train.grad_accum``, ``train.max_steps``, ``train.epochs``) and ``model.<field>``.

    Raises:
        ConfigError, DataError, StoreError: bad input, before any training run is recorded.
    """
    task_name, _, subtask = task.partition(":")
    plugin = get_task(task_name)
    spec = plugin.spec
    if not hasattr(plugin, "training_examples"):
        raise ConfigError(f"task {spec.name!r} has no fine-tuning; `m2bench run` evaluates it")
    mspec = get_model_spec(model_name)
    if mspec.kind != "text_encoder":
        raise ConfigError(
            f"model {model_name!r} is a {mspec.kind} model; training needs a text_encoder"
        )
    train_cfg, model_overrides = _settings(overrides)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if negatives < 1:
        raise ConfigError(f"--negatives must be >= 1, got {negatives}")
    if eval_data and sample_eval:
        raise ConfigError("--eval-data and --sample-eval exclude each other; pass one of them")
    check_weights_options(mspec, init, checkpoint)
    check_checkpoint_path(checkpoint)
    run_cfg = RunConfig(task=spec.name, model=model_name, subtask=subtask or None,
                        data_dir=str(train_data), out=out, batch_size=batch_size,
                        max_steps=train_cfg.max_steps, epochs=train_cfg.epochs, device=device,
                        seed=seed, precision=precision, init=init, checkpoint=checkpoint,
                        model_overrides=model_overrides)  # fmt: skip
    run_cfg.validate()
    dev, prec = runtime.resolve_device(run_cfg)
    save_dir = Path(save or Path(out) / spec.name / model_name / "checkpoint")
    _writable(save_dir, "--save" if save else "--out")
    if eval_data or sample_eval:
        _writable(Path(out) / spec.name, "--out")
    tracking.preflight(spec.name)
    data = _load(plugin, "--train-data", train_data, run_cfg.subtask)
    if eval_data or sample_eval:  # the evaluation's data too, before training for it
        flag = "--eval-data" if eval_data else "--sample-eval"
        _load(plugin, flag, eval_data, run_cfg.subtask, sample=sample_eval)
    examples = plugin.training_examples(data, loss=loss, negatives=negatives, seed=seed)
    if not examples:
        raise DataError(
            f"--train-data {train_data} gives no training examples (each needs a query, a "
            "relevant passage and another document of its subtask)"
        )
    extra = {"loss": loss, "negatives": negatives, "eval_data": eval_data,
             "sample_eval": sample_eval, "save": str(save_dir)}  # fmt: skip
    run, result = _train(plugin, model_name, run_cfg, train_cfg, examples, data, extra,
                         dev, prec, save_dir, progress)  # fmt: skip
    evaluations = []
    if eval_data or sample_eval:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        evaluations = _evaluate(task, run_cfg, run, save_dir, eval_data, sample_eval, progress)
    return FinetuneResult(run.run_id, save_dir, result, evaluations)


def _evaluate(task, run_cfg, train_run, save_dir, eval_data, sample_eval,
              progress) -> list[runner.RunResult]:  # fmt: skip
    """Evaluate the saved checkpoint as an ordinary run, tagged with the training run's id."""
    evaluations = runner.run(
        task,
        [run_cfg.model],
        checkpoint=str(save_dir.resolve()),
        init="pretrained",
        data_dir=eval_data,
        sample=sample_eval or None,
        out=run_cfg.out,
        device=run_cfg.device,
        seed=run_cfg.seed,
        progress=progress,
        precision=None if run_cfg.precision == "auto" else run_cfg.precision,
        overrides=[
            f"model.{k}={v}"
            for k, v in run_cfg.model_overrides.items()
            if k in ("padding", "kernel")
        ],
    )
    for evaluation in evaluations:  # the link from the scores back to their training run
        if evaluation.run_id is not None:
            tags = {"train_run_id": train_run.run_id}
            tracking.Run(train_run.client, evaluation.run_id).set_tags(tags)
    return evaluations


def _train(plugin, model_name, run_cfg, train_cfg, examples, data, extra, dev, prec, save_dir,
           progress) -> tuple[tracking.Run, loop.TrainResult]:  # fmt: skip
    """Build the model, train it in its own MLflow run (ended) and save it."""
    spec, mspec = plugin.spec, get_model_spec(model_name)
    runtime.seed_everything(run_cfg.seed)
    try:
        model = create_model(model_name, init=run_cfg.init, checkpoint=run_cfg.checkpoint,
                             **run_cfg.model_overrides)  # fmt: skip
    except WeightsUnavailable as exc:
        raise WeightsUnavailable(f"{exc} (training needs a starting point)") from None
    if not hasattr(model, "save_pretrained"):
        raise ConfigError(f"model {model_name!r} cannot save checkpoints")
    model.to(dev)
    batch_size = run_cfg.batch_size
    params = {
        "task": spec.name,
        "model": model_name,
        "loss": extra["loss"],
        "negatives": extra["negatives"],
        "batch_size": batch_size,
        "seed": run_cfg.seed,
        "init": run_cfg.init,
        "checkpoint": run_cfg.checkpoint or "",
        "train_data": str(Path(run_cfg.data_dir).resolve()),
        **{f"train.{k}": v for k, v in dataclasses.asdict(train_cfg).items()},
        **runtime.model_config_params(model),
    }
    config = {**run_cfg.to_dict(), "train": {**extra, **dataclasses.asdict(train_cfg)}}
    tags = runtime.run_tags("train", spec, mspec, run_cfg, model, data, dev, prec)
    run = tracking.start_run(spec.name, f"{model_name}:train", tags)
    try:
        run.log_params(params)
        run.log_text(yaml.safe_dump(config, sort_keys=False), "config.yaml")
        run.log_text(yaml.safe_dump(params, sort_keys=False), "train_config.yaml")
        run.log_text(tracking.environment_text(), "env.txt")

        def on_step(step: int, value: float, lr: float) -> None:
            run.log_metrics({"train/loss": value, "train/lr": lr}, step=step)

        result = loop.train(
            model,
            lambda epoch: plugin.batches(examples, batch_size=batch_size, model=model,
                                         device=dev, epoch=epoch, seed=run_cfg.seed),
            plugin.loss,
            -(-len(examples) // batch_size),
            train_cfg,
            device=dev,
            precision=prec,
            on_step=on_step,
            batch_size=lambda b: b["n"],
            progress=progress,
        )  # fmt: skip
        model.save_pretrained(save_dir)
        run.log_metrics(
            {
                "train/steps": result.steps,
                "train/examples": len(examples),
                "train/first_loss": result.losses[0],
                "train/final_loss": result.losses[-1],
                "perf/train_samples_per_s": result.samples / max(result.seconds, 1e-9),
                "perf/peak_mem_gb": timing.peak_memory_gb(dev),
            }
        )
        run.set_tags({"checkpoint_dir": str(save_dir.resolve())})
        run.end("FINISHED")
    except KeyboardInterrupt:
        run.end("KILLED", error="interrupted by the user")
        raise
    except Exception as exc:
        run.end("FAILED", error=runtime.describe_error(exc))
        raise
    return run, result
