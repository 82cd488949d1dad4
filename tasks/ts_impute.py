"""Time-series imputation (``ts-impute``) under the Time-Series-Library protocol.

Benchmarks: ETTh1, ETTh2, ETTm1, ETTm2 (Zhou et al., Informer, AAAI 2021), Weather, Electricity,
as in TSLib (Wu et al., TimesNet, ICLR 2023) and JustDense (Park et al. 2025, arXiv 2508.09153).
Protocol: ``shared/specs/timeseries_protocol.md`` §3, §7.1, §8, §9.2; data, borders and scaler:
``tasks/ts_data.py`` (the bundled real ETTh1 for ``--sample``; ETT is CC BY-ND 4.0, unmodified).

Windows of L = 96 rows, stride 1 (ETTh1: 8,545 / 2,881 / 2,881). Every entry of a window is
masked where u <= r, u ~ U(0, 1) per (window, step, channel), r = ``task.mask_rate`` (0.125,
0.25, 0.375, 0.5; default 0.25); masked inputs are set to 0 and the model, built with
seq_len = pred_len = 96, enc_in = C, mark_dim = 4, receives (masked x, x_mark, x_mark, mask) with
mask 1 = observed. Loss: MSE over the masked entries only. Test: MSE and MAE over the masked
entries of the concatenated test windows, on the z-scale (``mse``, ``mae``) and in original
units (``orig_mse``, ``orig_mae``). Recipe (§9.2, ETTh1): Adam lr 1e-3, batch 16, at most 10
epochs, patience 3, ``lradj type1``; training: :mod:`tasks.ts_train`.

``--protocol``/``task.protocol``:

- ``tslib``: a fresh mask from the global torch RNG for every batch of every pass (training,
  validation, test), as TSLib; the test mask then depends on everything drawn before it.
- ``clean`` (default): training masks fresh for every batch but reproducible (a generator seeded
  from (seed, epoch)); validation and test masks fixed: window w of split s gets the mask drawn
  from ``numpy.random.default_rng([task.mask_seed, s, w's first row])`` (default seed 20210), so
  every model and run is scored on the same masked points, whatever the batch size or ``limit``.

Every test window is scored once (``--sample``/``limit``: the first N). Deviation from TSLib:
the validation batches are not shuffled, and y_mark = x_mark (TSLib passes None; the models'
contract asks for the output steps' marks, which for a reconstruction are the input's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench import timing
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError
from m2bench.metrics import point_errors
from m2bench.models import count_params
from m2bench.registry import register_task
from m2bench.runtime import seed_everything
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks import ts_data, ts_train

DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "Electricity")
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}  # part of the fixed-mask seed


@dataclass(frozen=True)
class Recipe:
    """TSLib's imputation settings (``task.<field>=``), ETTh1 script of spec §9.2."""

    protocol: str = "clean"
    mask_rate: float = 0.25  # r: an entry is masked where u <= r
    mask_seed: int = 20210  # clean: the fixed validation and test masks
    seq_len: int = 96
    epochs: int = 10
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    lradj: str = "type1"
    marks: bool = True  # TSLib's timeF time features (freq h) as x_mark (= y_mark)
    revision: str = "main"


def _recipe(options: dict[str, Any]) -> Recipe:
    recipe = ts_train.task_recipe(Recipe(), options, "ts-impute")
    if not 0 < float(recipe.mask_rate) < 1:
        raise ConfigError(f"task.mask_rate must be in (0, 1), got {recipe.mask_rate!r}")
    if recipe.seq_len < 1:
        raise ConfigError(f"task.seq_len must be positive, got {recipe.seq_len}")
    return recipe


SPEC = TaskSpec(
    name="ts-impute",
    version=1,
    kind="timeseries",
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
    subtasks=DATASETS,
    metrics=("mse", "mae", "orig_mse", "orig_mae"),
    description="imputation of randomly masked entries, TSLib protocol: MSE/MAE on masked entries",
)


def draw_mask(u: torch.Tensor, rate: float) -> torch.Tensor:
    """TSLib's mask from uniform draws ``u``: 0 (masked) where u <= rate, 1 (observed) elsewhere."""
    return (u > rate).to(torch.float32)


def fixed_masks(starts: list[int], split: str, shape: tuple[int, int], rate: float,
                seed: int) -> torch.Tensor:  # fmt: skip
    """The clean protocol's masks (len(starts), L, C) of the windows starting at ``starts``.

    Each window's draws come from its own generator, seeded from (seed, split, first row), so a
    window's mask does not depend on the batch it is in, on ``limit`` or on any other RNG use.
    """
    u = np.stack([np.random.default_rng([seed, SPLIT_IDS[split], s]).random(shape) for s in starts])
    return draw_mask(torch.from_numpy(u), rate)


def masked_errors(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MSE and MAE over the masked entries (mask == 0) only (spec §7.1)."""
    hidden = np.asarray(mask) == 0
    return point_errors(np.asarray(truth)[hidden], np.asarray(pred)[hidden])


@register_task(SPEC)
class TsImpute:
    """Imputation task plugin; the subtask names the dataset (``ts-impute:ETTh1``)."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """The scaled series of the dataset (the first ``limit`` test windows are scored)."""
        recipe = _recipe(options)
        name = subtask or ("ETTh1" if sample else None)
        if name is None or name not in DATASETS:
            raise DataError(f"name the dataset: --task ts-impute:ETTh1 (one of "
                            f"{', '.join(DATASETS)}), or --sample; got {name!r}")  # fmt: skip
        path, source, revision = ts_data.locate(name, data_dir, sample, recipe.revision)
        series = ts_data.read_series(name, path, recipe.seq_len, source, revision)
        prov = {"data_source": source, "data_revision": revision, "dataset": name}
        return LoadedData({"series": [series], "limit": [limit]}, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train with TSLib's recipe and early stopping, then score every test window once."""
        if ctx.build_model is None:
            raise ConfigError("ts-impute trains its model: run it through `m2bench run`")
        recipe = _recipe(ctx.options)
        series, limit = data.tables["series"][0], data.tables["limit"][0]
        seq_len, n_ch = recipe.seq_len, len(series.columns)
        seed_everything(ctx.seeds[0])
        mark_dim = series.marks.shape[1] if recipe.marks and series.marks is not None else 0
        net = ctx.build_model(seq_len=seq_len, pred_len=seq_len, enc_in=n_ch, mark_dim=mark_dim)
        windows = {s: series.starts(s, seq_len) for s in SPLIT_IDS}
        if min(len(w) for w in windows.values()) == 0:
            raise DataError(f"{series.name}: a split has no window of {seq_len} rows "
                            f"({ {k: len(v) for k, v in windows.items()} })")  # fmt: skip
        stats = _train(net, series, windows, recipe, ctx)
        test = windows["test"][:limit]
        truth, pred, hidden, seconds = [], [], [], 0.0
        for x, mask, out, sec in reconstruct(net, series, test, _eval_masks(recipe, "test"),
                                             recipe, ctx):  # fmt: skip
            keep = mask == 0
            truth.append(x[keep])
            pred.append(out[keep])
            hidden.append(np.nonzero(keep)[2])  # channel of each masked entry (original units)
            seconds += sec
        y, p, ch = np.concatenate(truth), np.concatenate(pred), np.concatenate(hidden)
        z = point_errors(y, p)
        orig = point_errors(y * series.scale[ch] + series.mean[ch], p * series.scale[ch] +
                            series.mean[ch])  # fmt: skip
        name, rate = series.name, float(recipe.mask_rate)
        metrics = {
            **z, "orig_mse": orig["mse"], "orig_mae": orig["mae"], f"{name}/mse": z["mse"],
            f"{name}/mae": z["mae"], f"{name}/n_eval": float(len(test)),
            "n_masked": float(len(y)), "params_m": count_params(net) / 1e6, **stats["metrics"],
        }  # fmt: skip
        perf = {**stats["perf"], "perf/infer_samples_per_s": len(test) / max(seconds, 1e-9),
                "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device)}  # fmt: skip
        masks = "global torch RNG, every batch of every pass"
        if recipe.protocol == "clean":
            masks = f"fixed, seed {recipe.mask_seed} (validation, test); training per (seed, epoch)"
        tags = {"protocol": recipe.protocol, "seq_len": str(seq_len), "mask_rate": f"{rate:g}",
                "setting": f"{name} mask={rate:g} {recipe.protocol}", "masks": masks,
                "recipe": f"adam lr={recipe.lr:g} bs={recipe.batch_size} "
                          f"epochs<={ts_train.max_epochs(recipe.epochs, ctx):g} "
                          f"patience={recipe.patience} lradj={recipe.lradj}",
                "time_marks": f"timeF h ({mark_dim})" if mark_dim else "none"}  # fmt: skip
        return EvalOutput(metrics, perf, {name: z["mse"]}, tags)


MaskFn = Callable[[list[int], tuple[int, int, int]], torch.Tensor]


def _eval_masks(recipe: Recipe, split: str) -> MaskFn:
    """Validation/test masks: fixed per window (clean) or from the global RNG (tslib)."""
    rate = float(recipe.mask_rate)
    if recipe.protocol == "tslib":
        return lambda batch, shape: draw_mask(torch.rand(shape), rate)
    return lambda batch, shape: fixed_masks(batch, split, shape[1:], rate, recipe.mask_seed)


def _batch(series: ts_data.Series, batch: list[int], seq_len: int, device, marks: bool):
    """(x, x_mark) of the windows starting at ``batch``; x_mark None when off."""
    x = torch.from_numpy(np.stack([series.values[s : s + seq_len] for s in batch])).to(device)
    if not marks or series.marks is None:
        return x, None
    m = np.stack([series.marks[s : s + seq_len] for s in batch])
    return x, torch.from_numpy(m).to(device)


def _impute(net, x: torch.Tensor, xm, mask: torch.Tensor) -> torch.Tensor:
    return net(x.masked_fill(mask == 0, 0.0), xm, xm, mask)


@torch.no_grad()
def reconstruct(net, series: ts_data.Series, windows: list[int], masks: MaskFn, recipe: Recipe,
                ctx: EvalContext) -> Iterator[tuple[np.ndarray, ...]]:  # fmt: skip
    """(x, mask, output, seconds) per batch, every window of ``windows`` once, in order."""
    net.eval()
    for b in range(0, len(windows), recipe.batch_size):
        batch = windows[b : b + recipe.batch_size]
        x, xm = _batch(series, batch, recipe.seq_len, ctx.device, recipe.marks)
        mask = masks(batch, tuple(x.shape)).to(ctx.device)
        with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
            out = _impute(net, x, xm, mask)
        yield x.cpu().numpy(), mask.cpu().numpy(), out.float().cpu().numpy(), sw.seconds


def _train(net, series, windows, recipe: Recipe, ctx: EvalContext) -> dict:
    train, seed, rate = windows["train"], ctx.seeds[0], float(recipe.mask_rate)
    generators: dict[int, torch.Generator] = {}

    def make_batch(idx: list[int], epoch: int):
        x, xm = _batch(series, [train[i] for i in idx], recipe.seq_len, ctx.device, recipe.marks)
        if recipe.protocol == "tslib":
            u = torch.rand(tuple(x.shape))
        else:  # fresh per batch, the same stream for the same (seed, epoch)
            if epoch not in generators:
                state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
                generators[epoch] = torch.Generator().manual_seed(state)
            u = torch.rand(tuple(x.shape), generator=generators[epoch])
        return x, xm, draw_mask(u, rate).to(ctx.device)

    def loss_fn(model, batch):
        x, xm, mask = batch
        out = _impute(model, x, xm, mask).float()
        return torch.nn.functional.mse_loss(out[mask == 0], x[mask == 0])

    def val_loss() -> float:  # TSLib: unweighted mean of the per-batch masked losses
        masks = _eval_masks(recipe, "validation")
        batches = reconstruct(net, series, windows["validation"], masks, recipe, ctx)
        per_batch = [((o - x)[m == 0] ** 2).mean() for x, m, o, _ in batches]
        return float(np.mean(per_batch))

    fit_recipe = ts_train.FitRecipe(lr=recipe.lr, epochs=recipe.epochs, patience=recipe.patience,
                                    batch_size=recipe.batch_size, lradj=recipe.lradj)  # fmt: skip
    return ts_train.fit(net, n_train=len(train), make_batch=make_batch, loss_fn=loss_fn,
                        val_score=val_loss, recipe=fit_recipe, ctx=ctx)  # fmt: skip
