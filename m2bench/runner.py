"""The single path: config -> data -> model -> evaluate -> metrics + throughput -> MLflow.

Names no task and no model: everything task- or model-specific comes through their specs. For a
task that trains (``spec.trains``, e.g. GLUE: one fine-tuning per subtask and seed, each from
fresh weights), the runner hands the task a model factory, the seeds and the step/epoch bounds
in the ``EvalContext``; the task runs the fine-tuning jobs with ``m2bench.loop.train``.
"""

from __future__ import annotations

import inspect
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
from m2bench.registry import (
    check_checkpoint_path,
    check_weights_options,
    create_model,
    get_model_spec,
    get_task,
    suggest,
)
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
    _check_task_options(plugin, c.task_options)
    data = plugin.load(
        "test",
        limit=c.limit,
        data_dir=c.data_dir,
        sample=c.sample,
        subtask=c.subtask,
        **c.task_options,
    )
    return [_run_one(plugin, data, cfg, out_root, progress) for cfg in cfgs]


def _check_task_options(plugin, options) -> None:
    """A ``task.<option>=`` that the task's ``load`` does not take is an error (a task whose
    ``load`` takes ``**options`` checks them itself)."""
    params = inspect.signature(plugin.load).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(set(params) - {"self", "split", "limit", "data_dir", "sample", "subtask"})
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ConfigError(
            f"unknown {plugin.spec.name} option task.{bad[0]}{suggest(bad[0], valid)}; valid: "
            + (", ".join(f"task.{v}" for v in valid) or "none")
        )


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
    check_checkpoint_path(cfg.checkpoint)
    if cfg.seeds is not None and not spec.trains:
        raise ConfigError(f"--seeds: task {spec.name!r} does not train; use --seed for its runs")
    if spec.batches_by_recipe and cfg.batch_size != RunConfig.batch_size:
        raise ConfigError(
            f"batch_size: {spec.name} trains and tests in its protocol's batches; set "
            f"task.batch_size={cfg.batch_size} instead of --batch-size"
        )
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
    if main:  # the last run's files (in its MLflow artifacts) must not pass for this run's
        for old in out_dir.iterdir():  # weights (*.pt) and folders (checkpoints) stay
            if old.is_file() and old.suffix != ".pt":
                old.unlink()
    try:
        flat = cfg.flat()
        run.log_params(flat)
        built: list[dict[str, Any]] = []  # model.* of the models the task trains (its geometry)

        def model_params() -> dict[str, Any]:
            """The trained models' ``model.*`` fields where all agree, else this instance's."""
            params = built[0] if built else model_config_params(model)
            return {k: v for k, v in params.items() if k not in flat}

        def build_model(**geometry):  # the task may fix input shapes (e.g. a forecast horizon)
            net = create_model(cfg.model, init=cfg.init, checkpoint=cfg.checkpoint,
                               **{**cfg.model_overrides, **geometry}).to(device)  # fmt: skip
            params = model_config_params(net)
            built[:] = [{k: v for k, v in built[0].items() if params.get(k) == v} if built
                        else params]  # fmt: skip
            return net

        if not spec.trains:
            run.log_params(model_params())
        run.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        run.log_text(tracking.environment_text(), "env.txt")
        train_ctx = {}
        if spec.trains:  # fine-tuning jobs build fresh weights; this instance only gave the specs
            train_ctx = dict(
                build_model=build_model,
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
        result = _evaluate(plugin, model, data, ctx)
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
        if spec.trains:
            run.log_params(model_params())
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


def _evaluate(plugin, model, data, ctx: EvalContext):
    """``plugin.evaluate`` once, or once per seed (each in ``out_dir/seed<S>``) for a task that
    trains but runs one seed itself: then each metric is the mean over seeds, ``<metric>_std``
    its sample standard deviation, and ``<metric>`` of each seed is kept as ``seed<S>/<metric>``
    for the quality metrics."""
    spec = plugin.spec
    if not spec.trains or spec.multi_seed or len(ctx.seeds) < 2:
        return plugin.evaluate(model, data, ctx)
    runs = {}
    for seed in ctx.seeds:
        out_dir = Path(ctx.out_dir) / f"seed{seed}"
        out_dir.mkdir(parents=True, exist_ok=True)
        log.info("%s: seed %d of %s", spec.name, seed, ctx.seeds)
        runs[seed] = plugin.evaluate(model, data, replace(ctx, seeds=(seed,), out_dir=out_dir))
    first = runs[ctx.seeds[0]]

    def mean(get) -> dict[str, float]:
        return {k: float(np.mean([get(r)[k] for r in runs.values()])) for k in get(first)}

    metrics = mean(lambda r: r.metrics)
    for key in first.metrics:
        if key.startswith("train/") or key.endswith("n_eval") or key == "params_m":
            continue
        values = [r.metrics[key] for r in runs.values()]
        metrics[f"{key}_std"] = float(np.std(values, ddof=1))
        metrics.update({f"seed{s}/{key}": r.metrics[key] for s, r in runs.items()})
    tags = {**first.tags, "seeds": ",".join(map(str, ctx.seeds))}
    return type(first)(metrics, mean(lambda r: r.perf), mean(lambda r: r.summary), tags)


class _RankRun:
    """What ranks other than 0 log to: nothing (rank 0 records the run)."""

    run_id = None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
