"""The one training loop: AdamW, linear warm-up then linear decay, gradient clipping and
accumulation, autocast, progress bar, per-step logging through a callback.

Defaults follow the LoCo paper's retrieval fine-tuning (sentence-transformers ``fit``): AdamW with
weight decay 0.01 except on biases and norm weights, 10% warm-up, ``WarmupLinear`` decay, gradient
norm clipped at 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from m2bench import timing
from m2bench.encoding import autocast
from m2bench.errors import ModelFailure


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


@dataclass
class TrainResult:
    """What :func:`train` did."""

    steps: int
    micro_batches: int
    losses: list[float] = field(default_factory=list)  # mean loss of each optimizer step
    seconds: float = 0.0
    samples: int = 0


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


def warmup_linear(cfg: TrainConfig) -> OptimizerFactory:
    """AdamW over :func:`param_groups` with sentence-transformers' ``WarmupLinear`` schedule."""

    def make(model: torch.nn.Module, n_steps: int):
        warmup = int(cfg.warmup_frac * n_steps)
        opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (n_steps - step) / max(1, n_steps - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        return opt, lambda _step: sched.step()

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
) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: on ``device``.
        batches: ``batches(epoch)`` yields the micro-batches of one epoch (shuffled by the task).
        loss_fn: scalar mean loss of one micro-batch.
        micro_batches_per_epoch: length of one epoch, for the schedule.
        cfg: optimisation settings.
        device: where the model is.
        precision: autocast precision (``fp32`` = none).
        on_step: called after each optimizer step with (step, mean loss, lr).
        batch_size: samples in a micro-batch (for throughput).
        progress: show a progress bar.
        optimizer: ``optimizer(model, n_steps) -> (optimizer, set_lr)`` where ``set_lr(step)`` is
            called after each optimizer step (e.g. timm's optimizer and scheduler factories);
            default: AdamW with ``cfg``'s groups and :func:`warmup_linear`.

    Raises:
        ModelFailure: the loss became NaN or infinite.
    """
    from tqdm.auto import tqdm

    n_steps = total_steps(cfg, micro_batches_per_epoch)
    opt, set_lr = (optimizer or warmup_linear(cfg))(model, n_steps)
    model.train()
    result = TrainResult(steps=0, micro_batches=0)
    bar = tqdm(total=n_steps, desc="train", unit="step", disable=not progress, leave=False)
    window: list[float] = []
    with timing.Stopwatch(device) as sw:
        epoch = 0
        while result.steps < n_steps:
            before = result.micro_batches
            for batch in batches(epoch):
                with autocast(device, precision):
                    loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise ModelFailure(
                        f"training loss is {loss.item()} at step {result.steps}; "
                        "lower train.lr or use precision=fp32"
                    )
                (loss / cfg.grad_accum).backward()
                window.append(loss.item())
                result.micro_batches += 1
                result.samples += batch_size(batch)
                if len(window) == cfg.grad_accum:
                    if cfg.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    mean = sum(window) / len(window)
                    result.losses.append(mean)
                    result.steps += 1
                    set_lr(result.steps)
                    window = []
                    bar.update(1)
                    bar.set_postfix(loss=f"{mean:.4f}")
                    if on_step is not None:
                        on_step(result.steps, mean, opt.param_groups[-1]["lr"])
                    if result.steps >= n_steps:
                        break
            if result.micro_batches == before:
                raise ModelFailure("the training data yielded no batches; check --train-data")
            epoch += 1
    bar.close()
    model.eval()
    result.seconds = sw.seconds
    return result
