"""``m2bench train``: fine-tune a text encoder on a task's training files, save, then evaluate.

The training run is an MLflow run of its own (tag ``stage=train``; ``train/loss`` and ``train/lr``
per optimizer step); the saved checkpoint is then evaluated through the ordinary runner path
(``--checkpoint``), so its scores land in the leaderboard like any other weights.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from m2bench import loop, runner, runtime, timing, tracking
from m2bench.config import RunConfig, parse_overrides
from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.registry import create_model, get_model_spec, get_task, suggest

log = logging.getLogger(__name__)
TRAIN_FIELDS = [f.name for f in dataclasses.fields(loop.TrainConfig)]


@dataclass
class FinetuneResult:
    """The training run and the evaluation runs of the saved checkpoint."""

    run_id: str
    checkpoint: Path
    train: loop.TrainResult
    evaluations: list[runner.RunResult]


def _split_overrides(items: tuple[str, ...]) -> tuple[loop.TrainConfig, dict, list[str]]:
    train, model, rest = {}, {}, []
    for key, value in parse_overrides(items).items():
        if key.startswith("train."):
            if key[6:] not in TRAIN_FIELDS:
                hint = suggest(key[6:], TRAIN_FIELDS)
                raise ConfigError(
                    f"unknown training setting {key!r}{hint}; valid: train."
                    + ", train.".join(TRAIN_FIELDS)
                )
            train[key[6:]] = value
        elif key.startswith("model."):
            model[key[6:]] = value
        else:
            rest.append(f"{key}={value}")
    return loop.TrainConfig(**train), model, rest


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

    ``overrides``: ``train.<field>`` (see :class:`m2bench.loop.TrainConfig`, e.g. ``train.lr``,
    ``train.grad_accum``, ``train.max_steps``, ``train.epochs``) and ``model.<field>``.
    """
    plugin = get_task(task)
    if not hasattr(plugin, "training_examples"):
        raise ConfigError(
            f"task {plugin.spec.name!r} has no fine-tuning; `m2bench run` evaluates it"
        )
    mspec = get_model_spec(model_name)
    if mspec.kind != "text_encoder":
        raise ConfigError(
            f"model {model_name!r} is a {mspec.kind} model; training needs a text_encoder"
        )
    train_cfg, model_overrides, rest = _split_overrides(overrides)
    if rest:
        raise ConfigError(
            f"unknown training override {rest[0]!r}; use train.<field> or model.<field>"
        )
    save_dir = Path(save or Path(out) / plugin.spec.name / model_name / "checkpoint")
    runtime.prepare_out(save_dir)
    tracking.preflight(plugin.spec.name)
    data = plugin.load("test", data_dir=train_data)
    examples = plugin.training_examples(data, loss=loss, negatives=negatives, seed=seed)
    run_cfg = RunConfig(task=task, model=model_name, device=device, precision=precision,
                        seed=seed, init=init, checkpoint=checkpoint)  # fmt: skip
    dev, prec = runtime.resolve_device(run_cfg)
    runtime.seed_everything(seed)
    try:
        model = create_model(model_name, init=init, checkpoint=checkpoint, **model_overrides)
    except WeightsUnavailable as exc:
        raise WeightsUnavailable(f"{exc} (training needs a starting point)") from None
    model.to(dev)
    if not hasattr(model, "save_pretrained"):
        raise ConfigError(f"model {model_name!r} cannot save checkpoints")
    params = {
        "task": plugin.spec.name,
        "model": model_name,
        "loss": loss,
        "negatives": negatives,
        "batch_size": batch_size,
        "seed": seed,
        "init": init,
        "checkpoint": checkpoint or "",
        "train_data": str(Path(train_data).resolve()),
        **{f"train.{k}": v for k, v in dataclasses.asdict(train_cfg).items()},
        **runtime.model_config_params(model),
    }
    tags = runtime.run_tags("train", plugin.spec, mspec, run_cfg, model, data, dev, prec)
    run = tracking.start_run(plugin.spec.name, f"{model_name}:train", tags)
    try:
        run.log_params(params)
        run.log_text(yaml.safe_dump(params, sort_keys=False), "train_config.yaml")

        def on_step(step: int, value: float, lr: float) -> None:
            run.log_metrics({"train/loss": value, "train/lr": lr}, step=step)

        result = loop.train(
            model,
            lambda epoch: plugin.batches(
                examples, batch_size=batch_size, model=model, device=dev, epoch=epoch, seed=seed
            ),
            plugin.loss,
            -(-len(examples) // batch_size),
            train_cfg,
            device=dev,
            precision=prec,
            on_step=on_step,
            batch_size=lambda b: b["n"],
            progress=progress,
        )
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
    evaluations = []
    if eval_data or sample_eval:
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        evaluations = runner.run(
            task,
            [model_name],
            checkpoint=str(save_dir.resolve()),
            init="pretrained",
            data_dir=eval_data,
            sample=sample_eval or None,
            out=out,
            device=device,
            seed=seed,
            progress=progress,
            precision=None if precision == "auto" else precision,
            overrides=[
                f"model.{k}={v}" for k, v in model_overrides.items() if k in ("padding", "kernel")
            ],
        )
    return FinetuneResult(run.run_id, save_dir, result, evaluations)
