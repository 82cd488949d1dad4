"""TSLib's training procedure, shared by the time-series tasks (``ts-forecast``, ``ts-impute``,
``ts-short``, ``ts-classify``, ``ts-anomaly``).

Protocol (``shared/specs/timeseries_protocol.md`` §1): Adam (RAdam for classification), default
betas, no weight decay; shuffled training batches (``drop_last`` off); after each epoch a validation
score s (lower is better: a loss, or minus the accuracy); the weights are kept when s <= best (ties
count as improvement) and training stops after ``patience`` epochs without improvement; the best
weights are restored before testing. ``lradj``: ``type1`` sets the learning rate for epoch e+1 to
lr * 0.5^(e-1) after epoch e (epochs 1 and 2 at lr, epoch 3 at lr/2, ...); ``constant`` keeps it.

Deviation: the training order is drawn from a generator seeded with (seed + epoch), not from the
global RNG, so a run's batches do not depend on what else consumed random numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from m2bench import loop
from m2bench.config import apply_options, check_ranges
from m2bench.errors import ConfigError
from m2bench.specs import EvalContext

LRADJ = ("type1", "constant")
OPTIMIZERS = ("adam", "radam")
PROTOCOLS = ("tslib", "clean")  # --protocol: the published protocol, or its leaks fixed

R = TypeVar("R")


def task_recipe(default: R, options: dict[str, Any], what: str) -> R:
    """``default`` with the run's ``task.<field>=`` options applied, its ``protocol`` (and
    ``lradj``, where it has one) and the values of its training fields checked before any data
    is read.

    Raises:
        ConfigError: an unknown option (with close names), a value of the wrong kind, a
            learning rate, epoch count, patience or batch size <= 0 (0 epochs only where 0
            means the dataset's default), an unknown protocol or lradj.
    """
    recipe = apply_options(default, options, what=what)
    fields = [f for f in ("lr", "epochs", "patience", "batch_size") if hasattr(recipe, f)]
    check_ranges(
        recipe,
        positive=[f for f in fields if getattr(default, f) != 0],
        non_negative=[f for f in fields if getattr(default, f) == 0],
    )  # 0: the default
    if recipe.protocol not in PROTOCOLS:
        raise ConfigError(f"task.protocol {recipe.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if getattr(recipe, "lradj", LRADJ[0]) not in LRADJ:
        raise ConfigError(f"task.lradj {recipe.lradj!r} is not one of {', '.join(LRADJ)}")
    return recipe


def max_epochs(epochs: int, ctx: EvalContext) -> float:
    """The run's bound on epochs: ``--epochs`` where given, else the recipe's ``epochs``."""
    return ctx.epochs if ctx.epochs is not None else epochs


@dataclass(frozen=True)
class FitRecipe:
    """What :func:`fit` needs from a task's recipe."""

    lr: float = 1e-4
    epochs: float = 10
    patience: int = 3
    batch_size: int = 32
    lradj: str = "type1"
    optimizer: str = "adam"
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.lradj not in LRADJ:
            raise ConfigError(f"task.lradj {self.lradj!r} is not one of {', '.join(LRADJ)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.epochs <= 0 or self.batch_size < 1 or self.patience < 1 or self.lr <= 0:
            raise ConfigError("task.epochs, task.batch_size, task.patience and task.lr must be > 0")


def fit(
    net: torch.nn.Module,
    *,
    n_train: int,
    make_batch: Callable[[list[int], int], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    val_score: Callable[[], float],
    recipe: FitRecipe,
    ctx: EvalContext,
    val_name: str = "val_loss",
) -> dict[str, dict[str, float]]:
    """Train ``net`` on ``n_train`` examples with early stopping; restore the best weights.

    Args:
        make_batch: (indices into the training set, epoch) -> a batch on the device; the epoch
            lets a task draw per-epoch randomness (e.g. imputation masks) reproducibly.
        loss_fn: (model, batch) -> scalar loss.
        val_score: () -> the validation score, lower is better; called after every epoch with
            the model in eval mode.

    Returns:
        ``{"metrics": {...}, "perf": {...}}``: steps, epochs run, best validation score, last
        training loss, training samples per second.
    """
    per_epoch = -(-n_train // recipe.batch_size)
    seed = ctx.seeds[0]

    def batches(epoch: int) -> Iterator[Any]:
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + epoch))
        for b in range(per_epoch):
            yield make_batch(order[b * recipe.batch_size : (b + 1) * recipe.batch_size].tolist(),
                             epoch)  # fmt: skip

    def optimizer(model: torch.nn.Module, n_steps: int):
        cls = torch.optim.RAdam if recipe.optimizer == "radam" else torch.optim.Adam
        opt = cls(model.parameters(), lr=recipe.lr)

        def set_lr(step: int) -> None:  # type1: after epoch e (1-based), lr0 * 0.5^(e-1)
            done = step // per_epoch
            factor = 1.0 if recipe.lradj == "constant" or done == 0 else 0.5 ** (done - 1)
            for g in opt.param_groups:
                g["lr"] = recipe.lr * factor

        return opt, set_lr

    best: dict[str, Any] = {"score": float("inf"), "state": None, "bad": 0, "epochs": 0}

    def on_epoch_end(epoch: int) -> bool:
        net.eval()
        with torch.no_grad():
            score = float(val_score())
        net.train()
        best["epochs"] = epoch + 1
        if ctx.log_metrics is not None:
            ctx.log_metrics({f"train/{val_name}": score}, epoch + 1)
        if score <= best["score"]:
            best.update(score=score, state=copy.deepcopy(net.state_dict()), bad=0)
        else:
            best["bad"] += 1
        return best["bad"] >= recipe.patience

    def on_step(step: int, value: float, lr: float) -> None:
        if ctx.log_metrics is not None and step % 50 == 0:
            ctx.log_metrics({"train/loss": value, "train/lr": lr}, step)

    cfg = loop.TrainConfig(lr=recipe.lr, grad_accum=1, max_grad_norm=recipe.max_grad_norm,
                           epochs=max_epochs(recipe.epochs, ctx),
                           max_steps=ctx.max_steps)  # fmt: skip
    result = loop.train(net, batches, loss_fn, per_epoch, cfg, device=ctx.device,
                        precision=ctx.precision, on_step=on_step, progress=ctx.progress,
                        batch_size=_batch_size, optimizer=optimizer,
                        on_epoch_end=on_epoch_end)  # fmt: skip
    if best["state"] is not None:  # the best validation epoch's weights, as TSLib reloads them
        net.load_state_dict(best["state"])
    net.eval()
    metrics = {
        "train/steps": float(result.steps), "train/epochs": float(best["epochs"]),
        f"train/best_{val_name}": best["score"], "train_final_loss": result.losses[-1],
    }  # fmt: skip
    perf = {"perf/train_samples_per_s": result.samples / max(result.seconds, 1e-9)}
    return {"metrics": metrics, "perf": perf}


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])
