"""The single path: config -> data -> model -> evaluate -> metrics + throughput -> MLflow.

Names no task and no model: everything task- or model-specific comes through their specs. For a
task that trains (``spec.trains``, e.g. GLUE: one fine-tuning per subtask and seed, each from
fresh weights), the runner hands the task a model factory, the seeds and the step/epoch bounds
in the ``EvalContext``; the task runs the fine-tuning jobs with ``m2bench.loop.train``.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from m2bench import distributed, timing, tracking
from m2bench.config import RunConfig
from m2bench.errors import ConfigError, ModelFailure, WeightsUnavailable
from m2bench.registry import check_weights_options, create_model, get_model_spec, get_task
from m2bench.runtime import (
    describe_error,
    model_config_params,
    param_counts,
    prepare_out,
    resolve_device,
    run_tags,
    seed_everything,
)
from m2bench.specs import EvalContext

log = logging.getLogger(__name__)
SAMPLE_STEPS = 20  # optimizer steps per fine-tuning job of a --sample run, unless --max-steps


@dataclass
class RunResult:
    """Outcome of one (task, model) run: FINISHED, FAILED or SKIPPED."""

    model: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None


def run(
    task: str,
    models: Sequence[str] = (),
    *,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    **flags: Any,
) -> list[RunResult]:
    """Run each model on ``task`` (``name`` or ``name:subtask``); one MLflow run per model.

    Everything that can be checked (names, config, output folder, tracking store, data) is checked
    before any model is built, so bad input costs no compute and records nothing.
    """
    task_name, _, subtask = task.partition(":")
    plugin = get_task(task_name)
    spec = plugin.spec
    names = list(models) or list(spec.default_models)
    cfgs = [_resolve(spec, name, subtask or None, config_file, overrides, flags) for name in names]
    c = cfgs[0]
    dist = distributed.init(c.device)  # a no-op unless launched by torchrun
    out_root = prepare_out(Path(c.out) / spec.name)
    if dist.main:  # only rank 0 talks to MLflow
        tracking.preflight(spec.name)
    data = plugin.load(
        "test",
        limit=c.limit,
        data_dir=c.data_dir,
        sample=c.sample,
        subtask=c.subtask,
        **c.task_options,
    )
    return [_run_one(plugin, data, cfg, out_root, progress) for cfg in cfgs]


def _resolve(spec, model, subtask, config_file, overrides, flags) -> RunConfig:
    mspec = get_model_spec(model)
    if mspec.kind not in spec.model_kinds:
        raise ConfigError(
            f"model {model!r} is a {mspec.kind} model; task {spec.name!r} takes "
            f"{', '.join(spec.model_kinds)} models (`m2bench list models`)"
        )
    cfg = RunConfig.resolve(
        spec.name,
        model,
        task_defaults=spec.defaults,
        model_defaults=mspec.extra.get("defaults", {}),
        config_file=config_file,
        overrides=overrides,
        flags={**flags, "subtask": subtask},
    )
    check_weights_options(mspec, cfg.init, cfg.checkpoint)
    resolve_device(cfg)  # --device cuda without a GPU fails here, before any compute
    if cfg.sample:  # the sample is a quick offline check: its rows, and a few steps if it trains
        steps = cfg.max_steps or (SAMPLE_STEPS if spec.trains else None)
        cfg = replace(cfg, limit=cfg.limit or spec.sample_size, max_steps=steps)
    return cfg


def _run_one(plugin, data, cfg: RunConfig, out_root: Path, progress: bool) -> RunResult:
    spec = plugin.spec
    device, precision = resolve_device(cfg)
    seed_everything(cfg.seed)
    try:
        model = create_model(
            cfg.model, init=cfg.init, checkpoint=cfg.checkpoint, **cfg.model_overrides
        )
    except WeightsUnavailable as exc:
        log.warning("%s skipped: %s", cfg.model, exc)
        return RunResult(cfg.model, "SKIPPED", error=str(exc))
    mspec = model.spec
    tags = run_tags("eval", spec, mspec, cfg, model, data, device, precision)
    main = distributed.state().main
    if main:
        world = distributed.state().world
        tags = {**tags, "world_size": str(world),
                "parallel": distributed.strategy() if world > 1 else "none"}  # fmt: skip
    run = tracking.start_run(spec.name, cfg.model, tags) if main else _RankRun()
    out_dir = out_root / cfg.model
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        run.log_params({**cfg.flat(), **model_config_params(model)})
        run.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        run.log_text(tracking.environment_text(), "env.txt")
        train_ctx = {}
        if spec.trains:  # fine-tuning jobs build fresh weights; this instance only gave the specs
            train_ctx = dict(
                build_model=lambda **geometry: create_model(  # the task may fix input shapes
                    cfg.model,
                    init=cfg.init,
                    checkpoint=cfg.checkpoint,
                    **{**cfg.model_overrides, **geometry},
                ).to(device),
                seeds=cfg.seeds or (cfg.seed,),
                max_steps=cfg.max_steps,
                epochs=cfg.epochs,
                log_metrics=run.log_step,
                resume=cfg.resume,
            )
        elif isinstance(model, torch.nn.Module):
            model.to(device).eval()
        ctx = EvalContext(
            device=device,
            precision=precision,
            batch_size=cfg.batch_size,
            out_dir=out_dir,
            options=dict(cfg.task_options),
            progress=progress,
            **train_ctx,
        )
        timing.reset_peak_memory(device)  # each run's own peak, not the process's so far
        result = plugin.evaluate(model, data, ctx)
        score = result.metrics.get(spec.metric)
        if score is None or not np.isfinite(score):
            raise ModelFailure(f"task {spec.name} returned no finite {spec.metric} ({score})")
        # a task that builds its model at its own geometry reports that model's parameters
        counts = param_counts(model)
        if "params_m" in result.metrics:  # the task's model (its geometry) wins; the builder's
            counts = {}  # default-geometry counts would describe another model
        metrics = {**counts, **result.metrics, **result.perf}
        if main:
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        run.log_metrics(metrics)
        run.set_tags(result.tags)
        run.log_artifacts(out_dir)
        run.end("FINISHED")
        return RunResult(cfg.model, "FINISHED", metrics, result.summary, run.run_id)
    except KeyboardInterrupt:
        run.end("KILLED", error="interrupted by the user")
        raise
    except Exception as exc:  # a failing model must not end the sweep; the run records why
        error = describe_error(exc)
        log.error("%s failed: %s", cfg.model, error)
        run.log_text(traceback.format_exc(), "error.txt")
        run.end("FAILED", error=error)
        return RunResult(cfg.model, "FAILED", run_id=run.run_id, error=error)


class _RankRun:
    """What ranks other than 0 log to: nothing (rank 0 records the run)."""

    run_id = None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
