"""The run's surroundings: output folders, device and precision, seeds, parameter counts and
the one-line text of a failure. Shared by the runner and ``m2bench train``."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench.config import RunConfig
from m2bench.errors import ConfigError, M2BenchError, StoreError
from m2bench.models import count_params


def prepare_out(folder: Path) -> Path:
    """Create ``folder`` and prove it writable, or raise ``StoreError`` naming the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".m2bench-write-test-{os.getpid()}"  # one per process (torchrun ranks)
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"--out folder {folder} is not writable ({exc.strerror}); "
            "pass --out DIR with a writable folder"
        ) from None
    return folder


def resolve_device(cfg: RunConfig) -> tuple[torch.device, str]:
    """The torch device and the concrete precision (``auto`` resolved) of ``cfg``."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for but no CUDA GPU is visible; use --device cpu")
    dev = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    precision = (
        cfg.precision if cfg.precision != "auto" else ("bf16" if dev.type == "cuda" else "fp32")
    )
    return dev, precision


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; switch TF32 off (logged as ``tf32=false``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32; bf16 autocast is explicit
    torch.backends.cudnn.allow_tf32 = False


def describe_error(exc: BaseException) -> str:
    """One line for the ``error`` tag and the results table."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory; lower --batch-size"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, M2BenchError) else f"{type(exc).__name__}: {text}"


def model_config_params(model: Any) -> dict[str, Any]:
    """``model.<field>`` params of a model whose ``config`` is a dataclass."""
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {f"model.{k}": v for k, v in dataclasses.asdict(config).items()}


def param_counts(model: Any) -> dict[str, float]:
    """``params_m`` and ``params_nonembed_m`` of a torch model (nothing for other models)."""
    if not isinstance(model, torch.nn.Module):
        return {}
    return {
        "params_m": count_params(model) / 1e6,
        "params_nonembed_m": count_params(model, non_embedding=True) / 1e6,
    }


def weights_tags(mspec: Any, cfg: RunConfig) -> dict[str, str]:
    """``init``, ``weights_source`` (and the spec's ``weights_note``) of a run."""
    if mspec.loader is None:
        return {"init": "n/a", "weights_source": "none"}
    if cfg.init != "pretrained":
        return {"init": cfg.init, "weights_source": "none"}
    tags = {"init": "pretrained", "weights_source": cfg.checkpoint or mspec.weights}
    if "weights_note" in mspec.extra and not cfg.checkpoint:
        tags["weights_note"] = mspec.extra["weights_note"]
    return tags


def overrides_tag(overrides: Any) -> str:
    """The ``model_overrides`` tag: ``k=v`` pairs of the ``model.<field>=`` settings, sorted."""
    return " ".join(f"{k}={v}" for k, v in sorted(dict(overrides).items()))


def training_budget(spec: Any, cfg: RunConfig) -> str:
    """How training was bounded, for tasks that train: ``recipe`` (the task's own recipe), or
    ``max_steps=N`` / ``epochs=E`` where the run cut or changed it; empty for tasks that do not
    train. The leaderboard never ranks runs of different budgets against each other."""
    if not spec.trains:
        return ""
    bounds = []
    if cfg.max_steps is not None:
        bounds.append(f"max_steps={cfg.max_steps}")
    if cfg.epochs is not None:
        bounds.append(f"epochs={cfg.epochs:g}")
    return " ".join(bounds) or "recipe"


def run_tags(
    stage: str,
    spec: Any,
    mspec: Any,
    cfg: RunConfig,
    model: Any,
    data: Any,
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    """The tags every run of ``stage`` (``eval``, ``train``) carries: task, model, weights, data,
    hardware and code provenance, and the model's own (truncation, kernels, ...)."""
    from m2bench import tracking

    return {
        "stage": stage,
        "task": spec.name,
        "task_version": spec.version,
        "model": cfg.model,
        "family": mspec.family,
        "kind": mspec.kind,
        "sample": str(cfg.sample).lower(),
        "precision": precision,
        "tf32": "false",
        **weights_tags(mspec, cfg),
        "seed": cfg.seed,
        "budget": training_budget(spec, cfg),
        "subtask": cfg.subtask or "all",
        "eval_limit": str(cfg.limit) if cfg.limit is not None else "all",
        "model_overrides": overrides_tag(cfg.model_overrides),
        **data.provenance,
        **tracking.hardware(device),
        **tracking.provenance(),
        **getattr(model, "run_tags", dict)(),
    }
