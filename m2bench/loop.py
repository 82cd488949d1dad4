"""The one training loop: AdamW, warm-up then linear or cosine decay, gradient clipping and
accumulation, autocast, progress bar, per-step logging through callbacks, checkpoints every N
steps and resumption from the last one.

Defaults follow the LoCo paper's retrieval fine-tuning (sentence-transformers ``fit``): AdamW with
weight decay 0.01 except on biases and norm weights, 10% warm-up, ``WarmupLinear`` decay, gradient
norm clipped at 1.0. ``schedule="cosine"`` is the GPT/Hyena pre-training schedule (warm-up, then
cosine to ``min_lr_frac`` x lr).

A checkpoint (``<dir>/last.pt``, written atomically) holds the model, the optimizer state, the
step, the position in the epoch and the random-number states; ``resume`` restarts from it, skipping
the micro-batches already consumed (the task's ``batches(epoch)`` must be deterministic per epoch),
so an interrupted run continues where its last checkpoint left it.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench import distributed, timing
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError, ModelFailure

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; every field is a ``train.<field>=`` override."""

    lr: float = 5e-6
    weight_decay: float = 0.01
    decoupled_wd: bool = False  # Composer's DecoupledAdamW: decay wd * lr_t / lr (not wd * lr_t)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_frac: float = 0.1  # fraction of optimizer steps with a linearly rising lr
    max_grad_norm: float | None = 1.0  # None: no clipping
    grad_accum: int = 32  # micro-batches per optimizer step
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; bounds ``epochs``
    schedule: str = "linear"  # after warm-up: linear to 0, or cosine to min_lr_frac * lr
    min_lr_frac: float = 0.0  # cosine floor as a fraction of lr


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often :func:`train` saves, and whether it resumes.

    Attributes:
        folder: checkpoints go to ``folder/last.pt``.
        every: optimizer steps between checkpoints (the last step is always saved).
        resume: start from ``folder/last.pt`` if it exists.
        settings: what must match to resume (batch size, sequence length, lr, ...): saved with
            each checkpoint; resuming under other values is refused (the data position and the
            schedule would not line up).
    """

    folder: Path
    every: int = 1000
    resume: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train` did."""

    steps: int
    micro_batches: int
    losses: list[float] = field(default_factory=list)  # mean loss of each optimizer step
    seconds: float = 0.0
    samples: int = 0
    tokens: int = 0
    resumed_from: int = 0  # the step a resumed run started from (0: a fresh run)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Decay matrices; leave biases and norm weights (all 1-D parameters) undecayed.

    A model may set its own groups (M2's implicit filters have their own lr and decay) with
    ``optimizer_groups(lr, weight_decay) -> list[dict]``; its remaining parameters follow the rule.
    """
    wd = cfg.weight_decay / cfg.lr if cfg.decoupled_wd else cfg.weight_decay
    groups: list[dict[str, Any]] = []
    special: set[int] = set()
    if hasattr(model, "optimizer_groups"):
        for g in model.optimizer_groups(cfg.lr, cfg.weight_decay):
            if cfg.decoupled_wd:
                g = {**g, "weight_decay": g["weight_decay"] / g["lr"]}
            groups.append(g)
            special |= {id(p) for p in g["params"]}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    return [*groups, {"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


#: ``(model, n_steps) -> (optimizer, set_lr)``; ``set_lr(step)`` runs after optimizer step ``step``
OptimizerFactory = Callable[
    [torch.nn.Module, int], tuple[torch.optim.Optimizer, Callable[[int], None]]
]


def lr_factor(cfg: TrainConfig, step: int, n_steps: int) -> float:
    """The multiplier of the peak lr after ``step`` optimizer steps (0 = before the first).

    Warm-up rises linearly over ``warmup_frac * n_steps`` steps (sentence-transformers'
    ``WarmupLinear``: ``(step + 1) / (warmup + 1)``); then linear decay to 0 or cosine decay to
    ``min_lr_frac``.
    """
    warmup = int(cfg.warmup_frac * n_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, n_steps - warmup))
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, (n_steps - step) / max(1, n_steps - warmup))


def warmup_linear(cfg: TrainConfig) -> OptimizerFactory:
    """AdamW over :func:`param_groups` with :func:`lr_factor`'s schedule (``cfg.schedule``)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule {cfg.schedule!r} is not one of {', '.join(SCHEDULES)}")

    def make(model: torch.nn.Module, n_steps: int):
        opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        peaks = [g["lr"] for g in opt.param_groups]

        def set_lr(step: int) -> None:
            for group, peak in zip(opt.param_groups, peaks, strict=True):
                group["lr"] = peak * lr_factor(cfg, step, n_steps)

        set_lr(0)
        return opt, set_lr

    return make


def total_steps(cfg: TrainConfig, micro_batches_per_epoch: int) -> int:
    """Optimizer steps the run will take."""
    steps = math.ceil(cfg.epochs * micro_batches_per_epoch / cfg.grad_accum)
    return max(1, min(steps, cfg.max_steps) if cfg.max_steps else steps)


def train(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    micro_batches_per_epoch: int,
    cfg: TrainConfig,
    *,
    device: torch.device,
    precision: str = "fp32",
    on_step: Callable[[int, float, float], None] | None = None,
    batch_size: Callable[[Any], int] = lambda b: 1,
    progress: bool = True,
    optimizer: OptimizerFactory | None = None,
    tokens: Callable[[Any], int] | None = None,
    on_throughput: Callable[[int, float, float], None] | None = None,
    throughput_every: int = 10,
    checkpointing: Checkpointing | None = None,
    on_epoch_end: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: on ``device``.
        batches: ``batches(epoch)`` yields the micro-batches of one epoch (shuffled by the task;
            the same for the same epoch, so that a resumed run can skip what it has seen).
        loss_fn: scalar mean loss of one micro-batch.
        micro_batches_per_epoch: length of one epoch, for the schedule.
        cfg: optimisation settings.
        device: where the model is.
        precision: autocast precision (``fp32`` = none).
        on_step: called after each optimizer step with (step, mean loss, lr), where step counts
            from 1 and lr is the one that step used (of the last parameter group).
        batch_size: samples in a micro-batch (for throughput); under torchrun every rank sees
            the global batch and trains on its slice (:mod:`m2bench.distributed`), so the
            throughput counts the samples of all ranks.
        progress: show a progress bar.
        optimizer: ``optimizer(model, n_steps) -> (optimizer, set_lr)`` where ``set_lr(step)``
            sets the lr after ``step`` optimizer steps (e.g. timm's optimizer and scheduler
            factories); default: AdamW with ``cfg``'s groups and :func:`lr_factor`'s schedule.
        tokens: tokens in a micro-batch (for throughput).
        on_throughput: called every ``throughput_every`` steps with (step, samples/s, tokens/s)
            over those steps (device-synchronised).
        throughput_every: optimizer steps per throughput reading.
        checkpointing: save every N steps to a folder and optionally resume from it.
        on_epoch_end: called after each epoch with its index (0-based), the last one included
            (also when ``max_steps`` ends it early); returning True stops training (early
            stopping on a validation score, as TSLib does).

    Raises:
        ModelFailure: the loss became NaN or infinite, or the data yielded no batch.
        DataError: the checkpoint to resume from cannot be read.
    """
    from tqdm.auto import tqdm

    n_steps = total_steps(cfg, micro_batches_per_epoch)
    dist = distributed.state()
    net = distributed.wrap(model)  # DDP or FSDP under torchrun (before the optimizer sees the
    opt, set_lr = (optimizer or warmup_linear(cfg))(model, n_steps)  # sharded parameters)
    result = TrainResult(steps=0, micro_batches=0)
    epoch, skip = 0, 0
    if checkpointing is not None and checkpointing.resume:
        epoch, skip = _restore(checkpointing.folder, model, opt, result, checkpointing.settings)
        if result.steps >= n_steps and result.resumed_from:
            raise ConfigError(
                f"{checkpointing.folder / 'last.pt'} is at step {result.steps}, this run ends at "
                f"step {n_steps}: raise --max-steps/--epochs to train on, or drop --resume"
            )
        set_lr(result.steps)
    model.train()
    bar = tqdm(total=n_steps, initial=result.steps, desc="train", unit="step",
               disable=not progress, leave=False)  # fmt: skip
    window: list[torch.Tensor] = []
    rate = _Rate(device)
    with timing.Stopwatch(device) as sw:
        while result.steps < n_steps:
            seen = 0
            for seen, batch in enumerate(batches(epoch), start=1):
                if seen <= skip:  # consumed before the checkpoint this run resumed from
                    continue
                local, weight = distributed.split_batch(batch)  # (batch, 1.0) on one process
                with autocast(device, precision):
                    loss = loss_fn(net, local) * weight
                (loss / cfg.grad_accum).backward()
                window.append(loss.detach().float())
                result.micro_batches += 1
                n_samples, n_tokens = batch_size(batch), tokens(batch) if tokens else 0
                result.samples += n_samples
                result.tokens += n_tokens
                rate.add(n_samples, n_tokens)
                if len(window) < cfg.grad_accum:
                    continue
                mean = torch.stack(window).mean().item()  # one host sync per optimizer step
                if dist.active:  # the weighted slice losses average to the global batch's loss
                    mean = distributed.all_sum(mean) / dist.world
                if not math.isfinite(mean):
                    raise ModelFailure(f"training loss is {mean} at step {result.steps}; "
                                       "lower the learning rate or use precision=fp32")  # fmt: skip
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                lr = opt.param_groups[-1]["lr"]  # the lr this step uses (set_lr moves it on)
                opt.step()
                opt.zero_grad(set_to_none=True)
                result.losses.append(mean)
                result.steps += 1
                set_lr(result.steps)
                window = []
                bar.update(1)
                bar.set_postfix(loss=f"{mean:.4f}")
                if on_step is not None:
                    on_step(result.steps, mean, lr)
                if on_throughput is not None and result.steps % throughput_every == 0:
                    on_throughput(result.steps, *rate.read())
                done = result.steps >= n_steps
                every = checkpointing.every if checkpointing is not None else 0
                if every and (done or result.steps % every == 0):  # rank 0 writes
                    _save(checkpointing.folder, model, opt, result, epoch, seen,
                          checkpointing.settings)  # fmt: skip
                if done:
                    break
            if seen == 0:
                raise ModelFailure("the training data yielded no batches; check the data")
            skip = 0
            # after every epoch, the last one too (also when max_steps cut it short): TSLib
            # validates after its final epoch, and early stopping may keep those weights
            stop = on_epoch_end is not None and on_epoch_end(epoch)
            epoch += 1
            if stop:
                break
    bar.close()
    model.eval()
    result.seconds = sw.seconds
    return result


class _Rate:
    """Samples and tokens per second between two readings (device-synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.tokens = device, 0, 0
        self.watch = timing.Stopwatch(device).__enter__()

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def read(self) -> tuple[float, float]:
        self.watch.__exit__()
        seconds = max(self.watch.seconds, 1e-9)
        out = (self.samples / seconds, self.tokens / seconds)
        self.samples, self.tokens = 0, 0
        self.watch = timing.Stopwatch(self.device).__enter__()
        return out


def _save(
    folder: Path,
    model,
    opt,
    result: TrainResult,
    epoch: int,
    seen: int,
    settings: dict | None = None,
) -> None:
    """Write ``folder/last.pt`` atomically (a crash mid-write keeps the previous checkpoint).

    Under torchrun every rank calls this (gathering the full weights and optimizer state is a
    collective) and rank 0 writes.
    """
    if distributed.state().active:
        from torch.distributed.checkpoint import state_dict as dcp

        full = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = dcp.get_model_state_dict(model, options=full)
        opt_state = dcp.get_optimizer_state_dict(model, opt, options=full)
        if not distributed.state().main:
            return
    else:
        model_state, opt_state = model.state_dict(), opt.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model_state, "optimizer": opt_state, "step": result.steps,
        "epoch": epoch, "micro_batches_in_epoch": seen, "micro_batches": result.micro_batches,
        "samples": result.samples, "tokens": result.tokens, "losses": result.losses,
        "settings": dict(settings or {}),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }  # fmt: skip
    tmp = folder / "last.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "last.pt")


def _restore(
    folder: Path, model, opt, result: TrainResult, settings: dict | None = None
) -> tuple[int, int]:
    """Load ``folder/last.pt`` into model, optimizer and result; (epoch, micro-batches to skip).

    Raises:
        DataError: an unreadable checkpoint.
        ConfigError: a checkpoint saved under other ``settings`` than this run's.
    """
    path = folder / "last.pt"
    if not path.is_file():
        return 0, 0  # nothing to resume: a fresh run
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot resume from {path} ({str(exc).splitlines()[0][:120]}); "
                        "delete it to start afresh") from None  # fmt: skip
    saved = state.get("settings") if isinstance(state, dict) else None
    settings = settings or {}
    changed = sorted(k for k in settings if saved and k in saved and saved[k] != settings[k])
    if changed:
        diff = ", ".join(f"{k} {saved[k]!r} -> {settings[k]!r}" for k in changed)
        raise ConfigError(
            f"cannot resume from {path}: it was trained with other settings ({diff}); run with "
            "its settings, or delete it to start over"
        )
    try:
        if distributed.state().active:  # full (unsharded) states, written by rank 0
            from torch.distributed.checkpoint import state_dict as dcp

            full = dcp.StateDictOptions(full_state_dict=True)
            dcp.set_model_state_dict(model, state["model"], options=full)
            dcp.set_optimizer_state_dict(model, opt, state["optimizer"], options=full)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot resume from {path} ({str(exc).splitlines()[0][:120]}); "
                        "delete it to start afresh") from None  # fmt: skip
    result.steps = result.resumed_from = state["step"]
    result.micro_batches, result.samples = state["micro_batches"], state["samples"]
    result.tokens, result.losses = state["tokens"], list(state["losses"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["epoch"], state["micro_batches_in_epoch"]
