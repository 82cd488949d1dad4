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
(the run logs the windows it scored). Models receive TSLib's ``timeF`` time features of the input
and output steps (``x_mark``, ``y_mark``; ``task.marks=false`` turns them off); DLinear and
PatchTST ignore them, as in TSLib. Deviation: the validation batches are not shuffled (their
unweighted mean then does not depend on the RNG). Training: :mod:`tasks.ts_train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench import distributed, timing
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError
from m2bench.metrics import point_errors
from m2bench.models import count_params
from m2bench.registry import register_task
from m2bench.runtime import seed_everything
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks import ts_data, ts_train


@dataclass(frozen=True)
class Recipe:
    """TSLib's forecasting settings (``task.<field>=``); lengths default per dataset."""

    pred_len: int = 0  # H; 0: the dataset's first horizon (96; ILI 24)
    seq_len: int = 0  # L; 0: the dataset's (96; ILI 36)
    label_len: int = 0  # decoder start tokens of encoder-decoder models; 0: the dataset's (48; 18)
    protocol: str = "clean"
    epochs: int = 10
    patience: int = 3
    lr: float = 1e-4
    batch_size: int = 32
    lradj: str = "type1"  # type1: halve after epoch 2, 3, ...; constant: no decay
    legacy_drop_last: bool = False
    marks: bool = True  # TSLib's timeF time features (freq h) as x_mark / y_mark
    revision: str = "main"


def _recipe(options: dict[str, Any]) -> Recipe:
    recipe = ts_train.task_recipe(Recipe(), options, "ts-forecast")
    for name in ("pred_len", "seq_len", "label_len"):
        if getattr(recipe, name) < 0:
            raise ConfigError(f"task.{name} must be >= 1 (0: the dataset's), got "
                              f"{getattr(recipe, name)}")  # fmt: skip
    return recipe


def _windows(series: ts_data.Series, seq_len: int, pred_len: int) -> dict[str, list[int]]:
    """Each split's window starts; a split without a window is an error, before any training.

    Raises:
        DataError: ``seq_len + pred_len`` longer than a split, naming the lengths that fit.
    """
    windows = {s: series.starts(s, seq_len, pred_len) for s in ("train", "validation", "test")}
    if min(len(w) for w in windows.values()) == 0:
        counts = ", ".join(f"{k} {len(v)}" for k, v in windows.items())
        horizons = ", ".join(map(str, ts_data.DATASETS[series.name].horizons))
        raise DataError(f"{series.name}: a split has no {seq_len}->{pred_len} window ({counts}); "
                        f"pass a shorter --pred-len (its horizons: {horizons})")  # fmt: skip
    return windows


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
    batches_by_recipe=True,
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
        _windows(series, seq_len, recipe.pred_len or ts_data.DATASETS[name].horizons[0])
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
        mark_dim = series.marks.shape[1] if recipe.marks and series.marks is not None else 0
        geometry = dict(seq_len=seq_len, pred_len=pred_len, enc_in=len(series.columns),
                        mark_dim=mark_dim)  # fmt: skip
        if hasattr(getattr(model, "config", None), "label_len"):  # encoder-decoder models
            geometry["label_len"] = recipe.label_len or ds.label_len  # TSLib: 48 (ILI 18)
        net = ctx.build_model(**geometry)
        windows = _windows(series, seq_len, pred_len)
        stats = _train(net, series, windows, seq_len, pred_len, recipe, ctx)
        test = windows["test"][:limit]
        if recipe.legacy_drop_last and len(test) > recipe.batch_size:
            test = test[: len(test) // recipe.batch_size * recipe.batch_size]
        pred, truth, seconds = _predict(net, series, test, seq_len, pred_len, ctx, recipe)
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
                "setting": f"{series.name} {seq_len}->{pred_len} {recipe.protocol}"
                           + (" drop_last" if recipe.legacy_drop_last else ""),
                "recipe": f"adam lr={recipe.lr:g} bs={recipe.batch_size} "
                          f"epochs<={ts_train.max_epochs(recipe.epochs, ctx):g} "
                          f"patience={recipe.patience} lradj={recipe.lradj}",
                "legacy_drop_last": str(recipe.legacy_drop_last).lower(),
                "time_marks": f"timeF h ({mark_dim})" if mark_dim else "none",
                "label_len": str(geometry.get("label_len", "n/a"))}  # fmt: skip
        return EvalOutput(metrics, perf, {name: z["mse"]}, tags)


def _batch(series: ts_data.Series, starts: list[int], seq_len: int, pred_len: int, device,
           marks: bool):  # fmt: skip
    """(x, x_mark, y_mark, y) for windows starting at ``starts``; marks None when off."""
    values = series.values
    x = np.stack([values[s : s + seq_len] for s in starts])
    y = np.stack([values[s + seq_len : s + seq_len + pred_len] for s in starts])
    out = [torch.from_numpy(x).to(device), None, None, torch.from_numpy(y).to(device)]
    if marks and series.marks is not None:
        m = series.marks
        out[1] = torch.from_numpy(np.stack([m[s : s + seq_len] for s in starts])).to(device)
        out[2] = torch.from_numpy(
            np.stack([m[s + seq_len : s + seq_len + pred_len] for s in starts])
        ).to(device)
    return tuple(out)


@torch.no_grad()
def _predict(net, series, starts, seq_len, pred_len, ctx, recipe):
    """Predictions and truths of the windows at ``starts``, in order, each window once.

    Under torchrun each rank predicts its contiguous shard and every rank gets all of them.
    """
    net.eval()
    preds, truths, seconds = [], [], 0.0
    mine = distributed.shard(starts)
    for b in range(0, len(mine), recipe.batch_size):
        x, xm, ym, y = _batch(series, mine[b : b + recipe.batch_size], seq_len, pred_len,
                              ctx.device, recipe.marks)  # fmt: skip
        with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
            out = net(x, xm, ym)
        seconds += sw.seconds
        preds.append(out.float().cpu().numpy())
        truths.append(y.cpu().numpy())
    empty = np.zeros((0, pred_len, len(series.columns)), np.float32)
    parts = distributed.gather((np.concatenate(preds) if preds else empty,
                                np.concatenate(truths) if truths else empty, seconds))  # fmt: skip
    pred = np.concatenate([p[0] for p in parts])
    truth = np.concatenate([p[1] for p in parts])
    return pred, truth, max(p[2] for p in parts)


def _train(net, series, windows, seq_len, pred_len, recipe: Recipe, ctx: EvalContext) -> dict:
    train, val = windows["train"], windows["validation"]

    def make_batch(idx: list[int], epoch: int):
        return _batch(series, [train[i] for i in idx], seq_len, pred_len, ctx.device,
                      recipe.marks)  # fmt: skip

    def loss_fn(model, batch):
        x, xm, ym, y = batch
        return torch.nn.functional.mse_loss(model(x, xm, ym).float(), y)

    def val_loss() -> float:  # TSLib: unweighted mean of the per-batch mean losses
        pred, truth, _ = _predict(net, series, val, seq_len, pred_len, ctx, recipe)
        sizes = [len(val[b : b + recipe.batch_size]) for b in range(0, len(val), recipe.batch_size)]
        per_batch = np.split(((pred - truth) ** 2).mean(axis=(1, 2)), np.cumsum(sizes)[:-1])
        return float(np.mean([b.mean() for b in per_batch]))

    fit_recipe = ts_train.FitRecipe(lr=recipe.lr, epochs=recipe.epochs, patience=recipe.patience,
                                    batch_size=recipe.batch_size, lradj=recipe.lradj)  # fmt: skip
    stats = ts_train.fit(net, n_train=len(train), make_batch=make_batch, loss_fn=loss_fn,
                         val_score=val_loss, recipe=fit_recipe, ctx=ctx)  # fmt: skip
    return stats
