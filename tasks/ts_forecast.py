"""Long-term time-series forecasting (``ts-forecast``) under the Time-Series-Library protocol.

Benchmarks: ETTh1, ETTh2, ETTm1, ETTm2 (Zhou et al., Informer, AAAI 2021), Weather, Electricity,
Traffic, Exchange (Lai et al. 2018), ILI; input 96 -> 96/192/336/720 (ILI 36 -> 24/36/48/60). The
study this serves: JustDense (Park et al. 2025, arXiv 2508.09153), which swaps the sequence mixers
of time-series models for dense layers. Protocol and data: ``tasks/ts_data.py`` and
``shared/specs/timeseries_protocol.md`` §1-2, §7-8.

Training as TSLib: Adam (no weight decay), lr 1e-4, batch 32, at most 10 epochs, MSE loss on the
z-scale, ``lradj type1`` (epochs 1-2 at lr, then halved each epoch), early stopping on the
validation loss (unweighted mean of per-batch losses; ties count as improvement) with patience 3,
the best weights restored before testing. Test: every window once (``drop_last`` off, as TSLib
since 2024-07); metrics over the concatenated predictions: MSE and MAE on the z-scale (the
published convention) and in original units (``orig_mse``, ``orig_mae``).

``--protocol``/``task.protocol``: ``tslib`` and ``clean`` are the same for long-term forecasting
(its known leaks concern classification, M4 and anomaly detection); ``task.legacy_drop_last=true``
drops the last partial test batch as pre-2024-07 TSLib did, for matching older published tables
(the run logs the windows it scored). Deviations: the validation batches are not shuffled (their
unweighted mean then does not depend on the RNG); models receive the input window only (no
time-feature marks; DLinear uses none).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench import loop, timing
from m2bench.config import apply_options
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError
from m2bench.metrics import point_errors
from m2bench.models import count_params
from m2bench.registry import register_task
from m2bench.runtime import seed_everything
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks import ts_data

PROTOCOLS = ("tslib", "clean")


@dataclass(frozen=True)
class Recipe:
    """TSLib's forecasting settings (``task.<field>=``); lengths default per dataset."""

    pred_len: int = 0  # H; 0: the dataset's first horizon (96; ILI 24)
    seq_len: int = 0  # L; 0: the dataset's (96; ILI 36)
    protocol: str = "clean"
    epochs: int = 10
    patience: int = 3
    lr: float = 1e-4
    batch_size: int = 32
    lradj: str = "type1"  # type1: halve after epoch 2, 3, ...; constant: no decay
    legacy_drop_last: bool = False
    revision: str = "main"


def _recipe(options: dict[str, Any]) -> Recipe:
    recipe = apply_options(Recipe(), options, what="ts-forecast")
    if recipe.protocol not in PROTOCOLS:
        raise ConfigError(f"task.protocol {recipe.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if recipe.lradj not in ("type1", "constant"):
        raise ConfigError(f"task.lradj {recipe.lradj!r} is not one of type1, constant")
    return recipe


SPEC = TaskSpec(
    name="ts-forecast",
    version=1,
    kind="forecast",
    metric="mse",
    higher_is_better=False,
    source=DataSource(
        hf=ts_data.HUB,
        revision="main",
        license="ETT CC BY-ND 4.0 (unmodified); others per their sources (tasks/data/ts/SOURCE.md)",
        sample=ts_data.SAMPLE,
        citation="TSLib (Wu et al., TimesNet, ICLR 2023); JustDense: arXiv 2508.09153",
    ),
    default_models=("patchtst", "patchtst_dense", "itransformer", "itransformer_dense", "dlinear"),
    model_kinds=("forecast",),
    sample_size=256,
    trains=True,
    subtasks=tuple(ts_data.DATASETS),
    metrics=("mse", "mae", "orig_mse", "orig_mae"),
    description="long-term forecasting, TSLib protocol: MSE/MAE (z-scale and original units)",
)


@register_task(SPEC)
class TsForecast:
    """Long-term forecasting task plugin; the subtask names the dataset (``ts-forecast:ETTh1``)."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """The scaled series of the dataset (first ``limit`` test windows are scored)."""
        recipe = _recipe(options)
        name = subtask or ("ETTh1" if sample else None)
        if name is None:
            raise DataError("name the dataset: --task ts-forecast:ETTh1 (one of "
                            f"{', '.join(ts_data.DATASETS)}), or --sample")  # fmt: skip
        path, source, revision = ts_data.locate(name, data_dir, sample, recipe.revision)
        seq_len = recipe.seq_len or ts_data.DATASETS[name].seq_len
        series = ts_data.read_series(name, path, seq_len, source, revision)
        prov = {"data_source": source, "data_revision": revision, "dataset": name}
        return LoadedData({"series": [series], "limit": [limit]}, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train with TSLib's recipe and early stopping, then score every test window."""
        if ctx.build_model is None:
            raise ConfigError("ts-forecast trains its model: run it through `m2bench run`")
        recipe = _recipe(ctx.options)
        series, limit = data.tables["series"][0], data.tables["limit"][0]
        ds = ts_data.DATASETS[series.name]
        seq_len, pred_len = recipe.seq_len or ds.seq_len, recipe.pred_len or ds.horizons[0]
        seed_everything(ctx.seeds[0])
        net = ctx.build_model(seq_len=seq_len, pred_len=pred_len, enc_in=len(series.columns))
        values = torch.from_numpy(series.values)
        windows = {
            s: _starts(series, s, seq_len, pred_len) for s in ("train", "validation", "test")
        }
        if min(len(w) for w in windows.values()) == 0:
            raise DataError(f"{series.name}: a split has no {seq_len}->{pred_len} window "
                            f"({ {k: len(v) for k, v in windows.items()} })")  # fmt: skip
        stats = _train(net, values, windows, seq_len, pred_len, recipe, ctx)
        test = windows["test"][:limit]
        if recipe.legacy_drop_last and len(test) > recipe.batch_size:
            test = test[: len(test) // recipe.batch_size * recipe.batch_size]
        pred, truth, seconds = _predict(net, values, test, seq_len, pred_len, ctx, recipe)
        z = point_errors(truth, pred)
        orig = point_errors(series.inverse(truth), series.inverse(pred))
        name = series.name
        metrics = {
            **z, "orig_mse": orig["mse"], "orig_mae": orig["mae"], f"{name}/mse": z["mse"],
            f"{name}/mae": z["mae"], f"{name}/n_eval": float(len(test)),
            "params_m": count_params(net) / 1e6, **stats["metrics"],
        }  # fmt: skip
        perf = {**stats["perf"], "perf/infer_samples_per_s": len(test) / max(seconds, 1e-9),
                "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device)}  # fmt: skip
        tags = {"protocol": recipe.protocol, "seq_len": str(seq_len), "pred_len": str(pred_len),
                "setting": f"{series.name} {seq_len}->{pred_len} {recipe.protocol}",
                "recipe": f"adam lr={recipe.lr:g} bs={recipe.batch_size} epochs<={recipe.epochs} "
                          f"patience={recipe.patience} lradj={recipe.lradj}",
                "legacy_drop_last": str(recipe.legacy_drop_last).lower()}  # fmt: skip
        return EvalOutput(metrics, perf, {name: z["mse"]}, tags)


def _starts(series: ts_data.Series, split: str, seq_len: int, pred_len: int) -> list[int]:
    start, _ = series.borders[split]
    return [start + i for i in range(series.windows(split, seq_len, pred_len))]


def _batch(values: torch.Tensor, starts: list[int], seq_len: int, pred_len: int):
    x = torch.stack([values[s : s + seq_len] for s in starts])
    y = torch.stack([values[s + seq_len : s + seq_len + pred_len] for s in starts])
    return x, y


@torch.no_grad()
def _predict(net, values, starts, seq_len, pred_len, ctx, recipe):
    net.eval()
    preds, truths, seconds = [], [], 0.0
    for b in range(0, len(starts), recipe.batch_size):  # every window once, in order
        x, y = _batch(values, starts[b : b + recipe.batch_size], seq_len, pred_len)
        with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
            out = net(x.to(ctx.device))
        seconds += sw.seconds
        preds.append(out.float().cpu().numpy())
        truths.append(y.numpy())
    return np.concatenate(preds), np.concatenate(truths), seconds


def _train(net, values, windows, seq_len, pred_len, recipe: Recipe, ctx: EvalContext) -> dict:
    train = windows["train"]
    per_epoch = -(-len(train) // recipe.batch_size)
    seed = ctx.seeds[0]

    def batches(epoch: int):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + epoch))
        for b in range(per_epoch):
            idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size].tolist()
            x, y = _batch(values, [train[i] for i in idx], seq_len, pred_len)
            yield x.to(ctx.device), y.to(ctx.device)

    def loss_fn(model, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x).float(), y)

    def adam(model, n_steps):
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)

        def set_lr(step: int) -> None:  # TSLib type1: after epoch e (1-based), lr0 * 0.5^(e-1)
            done = step // per_epoch
            factor = 1.0 if recipe.lradj == "constant" or done == 0 else 0.5 ** (done - 1)
            for g in opt.param_groups:
                g["lr"] = recipe.lr * factor

        return opt, set_lr

    best = {"loss": float("inf"), "state": None, "bad": 0, "epochs": 0}

    def on_epoch_end(epoch: int) -> bool:
        pred, truth, _ = _predict(
            net, values, windows["validation"], seq_len, pred_len, ctx, recipe
        )
        sizes = [len(windows["validation"][b : b + recipe.batch_size])
                 for b in range(0, len(windows["validation"]), recipe.batch_size)]  # fmt: skip
        per_batch = np.split(((pred - truth) ** 2).mean(axis=(1, 2)), np.cumsum(sizes)[:-1])
        val = float(np.mean([b.mean() for b in per_batch]))  # TSLib: mean of batch means
        best["epochs"] = epoch + 1
        if ctx.log_metrics is not None:
            ctx.log_metrics({"train/val_loss": val}, epoch + 1)
        if val <= best["loss"]:
            best.update(loss=val, state=copy.deepcopy(net.state_dict()), bad=0)
        else:
            best["bad"] += 1
        net.train()
        return best["bad"] >= recipe.patience

    def on_step(step: int, value: float, lr: float) -> None:
        if ctx.log_metrics is not None and step % 50 == 0:
            ctx.log_metrics({"train/loss": value, "train/lr": lr}, step)

    cfg = loop.TrainConfig(lr=recipe.lr, grad_accum=1, max_grad_norm=None, epochs=recipe.epochs,
                           max_steps=ctx.max_steps)  # fmt: skip
    result = loop.train(net, batches, loss_fn, per_epoch, cfg, device=ctx.device,
                        precision=ctx.precision, on_step=on_step, progress=ctx.progress,
                        batch_size=lambda b: b[0].shape[0], optimizer=adam,
                        on_epoch_end=on_epoch_end)  # fmt: skip
    if best["state"] is not None:  # the best validation epoch's weights, as TSLib reloads them
        net.load_state_dict(best["state"])
    metrics = {
        "train/steps": float(result.steps), "train/epochs": float(best["epochs"]),
        "train/best_val_loss": best["loss"], "train_final_loss": result.losses[-1],
    }  # fmt: skip
    perf = {"perf/train_samples_per_s": result.samples / max(result.seconds, 1e-9)}
    return {"metrics": metrics, "perf": perf}
