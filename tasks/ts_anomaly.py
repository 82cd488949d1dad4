"""Time-series anomaly detection (``ts-anomaly``) by reconstruction, Time-Series-Library style.

Benchmarks as TSLib (Wu et al., TimesNet, ICLR 2023) and JustDense (arXiv 2508.09153): SMD (Su et
al., OmniAnomaly, KDD 2019), MSL and SMAP (Hundman et al., KDD 2018), SWaT (iTrust, SUTD), PSM
(Abdulaal et al., KDD 2021); TSLib's file names (``shared/specs/timeseries_protocol.md`` §6) in
``--data-dir`` or ``--data-dir/<SET>/``. There is no hub copy: TSLib's anomaly data come from the
Google Drive link of its README, or from the original sources. ``--sample`` runs ``UCR135``, the
bundled UCR anomaly-archive series 135 (InternalBleeding16, univariate; ``tasks/data/ts_anomaly``,
its SOURCE.md): it is not one of the five standard sets.

Protocol (§6, §7.3, §9.2): StandardScaler fitted on the training file; windows of L = 100; the
model, built with seq_len = pred_len = 100, enc_in = C, mark_dim = 0, reconstructs its input
window (MSE loss); Adam lr 1e-4, batch 128, 10 epochs (SMAP, SWaT, PSM: 3), patience 3, type1
(training: :mod:`tasks.ts_train`). Energy = mean over channels of (x - x_hat)^2 per time step;
prediction = energy > threshold, threshold = the (100 - anomaly_ratio) percentile (ratio %: SMD
0.5, others 1; UCR135 0.5, TSLib's smallest, against a true 12-in-6,301 = 0.19%).

``--protocol``/``task.protocol``:

- ``tslib``: validation = the last 20% of the training series (also trained on); windows with
  stride ``step`` (SMD 100, else 1) for training, validation and test; test energies and labels
  concatenated window by window; threshold = ``numpy.percentile(concat(train energies, test
  energies), 100 - ratio)``; point adjustment on the concatenated arrays (TSLib's fixed version,
  which also rewrites index 0).
- ``clean`` (default, spec §8): the last 20% of the training series is cut off before training
  (validation only: early stopping and threshold); threshold = percentile of the validation
  energies; every test point scored once (non-overlapping windows, the tail covered by one window
  aligned to the end whose new points only are taken).

Both protocols log raw (``precision``, ``recall``, ``f1``, ``accuracy``) and point-adjusted
(``pa_*``) scores, with sklearn. The main metric is the raw ``f1``; the tag ``headline`` names the
protocol's published number (tslib: ``pa_f1``, clean: ``f1``). ``n_eval``: scored test points
(clean) or window points (tslib). ``limit`` (``--sample``: 8,192) keeps the first test points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2bench import data as mdata
from m2bench import timing
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError
from m2bench.models import count_params
from m2bench.registry import register_task
from m2bench.runtime import seed_everything
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks import ts_train

SAMPLE = "ts_anomaly"
UCR = "135_UCR_Anomaly_InternalBleeding16"


@dataclass(frozen=True)
class AnomalySet:
    """One benchmark: its files, layout, channel count and TSLib settings."""

    name: str
    files: tuple[str, ...]  # train, test[, test labels]
    layout: str  # npy | swat | psm | timeeval
    dims: int
    ratio: float  # anomaly_ratio, %
    step: int
    epochs: int
    origin: str


SETS = {s.name: s for s in (
    AnomalySet("SMD", ("SMD_train.npy", "SMD_test.npy", "SMD_test_label.npy"), "npy", 38, 0.5, 100,
               10, "OmniAnomaly, github.com/NetManAIOps/OmniAnomaly"),
    AnomalySet("MSL", ("MSL_train.npy", "MSL_test.npy", "MSL_test_label.npy"), "npy", 55, 1, 1, 10,
               "NASA telemanom, github.com/khundman/telemanom"),
    AnomalySet("SMAP", ("SMAP_train.npy", "SMAP_test.npy", "SMAP_test_label.npy"), "npy", 25, 1, 1,
               3, "NASA telemanom, github.com/khundman/telemanom"),
    AnomalySet("SWaT", ("swat_train2.csv", "swat2.csv"), "swat", 51, 1, 1, 3,
               "iTrust SUTD, on request"),
    AnomalySet("PSM", ("train.csv", "test.csv", "test_label.csv"), "psm", 25, 1, 1, 3,
               "eBay RANSynCoders, github.com/eBay/RANSynCoders"),
    AnomalySet("UCR135", (f"{UCR}_TRAIN.csv", f"{UCR}_TEST.csv"), "timeeval", 1, 0.5, 1, 10,
               "UCR anomaly archive via aeon 1.6.0, bundled"),
)}  # fmt: skip
STANDARD = ("SMD", "MSL", "SMAP", "SWaT", "PSM")
SAMPLE_SHA256 = (
    (f"{UCR}_TRAIN.csv", "a531b6f4f556b17c0321d144c3f6b4a7bdf5e8464b2218566181702e77962c2b"),
    (f"{UCR}_TEST.csv", "fe26577b94896943e8205d04d56bf2511fe05c008df535a1ec3826adff3597e2"),
)


@dataclass(frozen=True)
class Recipe:
    """TSLib's anomaly-detection settings (``task.<field>=``); 0 = the set's value."""

    protocol: str = "clean"
    anomaly_ratio: float = 0.0  # % of points flagged; 0: SMD 0.5, UCR135 0.5, others 1
    step: int = 0  # window stride (tslib; clean training too); 0: SMD 100, others 1
    epochs: int = 0  # 0: SMAP, SWaT, PSM 3, others 10
    seq_len: int = 100
    patience: int = 3
    lr: float = 1e-4
    batch_size: int = 128
    lradj: str = "type1"


def _recipe(options: dict[str, Any]) -> Recipe:
    recipe = ts_train.task_recipe(Recipe(), options, "ts-anomaly")
    if not 0 <= float(recipe.anomaly_ratio) < 100 or recipe.step < 0 or recipe.epochs < 0:
        raise ConfigError("task.anomaly_ratio must be in [0, 100), task.step and task.epochs >= 0")
    if recipe.seq_len < 1:
        raise ConfigError(f"task.seq_len must be positive, got {recipe.seq_len}")
    return recipe


SPEC = TaskSpec(
    name="ts-anomaly",
    version=1,
    kind="timeseries",
    metric="f1",
    higher_is_better=True,
    source=DataSource(
        license="per set (SMD MIT, MSL/SMAP NASA, SWaT iTrust terms, PSM CC BY 4.0); sample: UCR "
        "anomaly archive via aeon 1.6.0 (BSD-3-Clause), tasks/data/ts_anomaly/SOURCE.md",
        sample=SAMPLE,
        sample_sha256=SAMPLE_SHA256,
        citation="TSLib (Wu et al., TimesNet, ICLR 2023); Wu & Keogh, TKDE 2021 (UCR archive)",
    ),
    default_models=("patchtst", "patchtst_dense", "itransformer", "itransformer_dense", "dlinear"),
    model_kinds=("forecast",),
    sample_size=8192,
    trains=True,
    batches_by_recipe=True,
    subtasks=tuple(SETS),
    metrics=("f1", "precision", "recall", "accuracy", "pa_f1", "pa_precision", "pa_recall"),
    description="reconstruction anomaly detection: raw and point-adjusted P/R/F1",
)


@dataclass(frozen=True)
class Series:
    """A set's scaled train and test series (rows, channels) and the test labels (0/1)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray


def window_starts(n: int, length: int, step: int) -> list[int]:
    """Starts of the windows of ``length`` with stride ``step``: floor((n - length)/step) + 1."""
    return list(range(0, n - length + 1, step))


def once_starts(n: int, length: int) -> list[int]:
    """Non-overlapping windows, plus one aligned to the end when a partial tail remains."""
    out = list(range(0, n - length + 1, length))
    return out + [n - length] if out and out[-1] + length < n else out


def per_point(energies: np.ndarray, starts: list[int], n: int) -> np.ndarray:
    """Energy of each of ``n`` points from window energies (k, L): each point taken once."""
    out, filled = np.empty(n, dtype=np.float64), 0
    for s, e in zip(starts, energies, strict=True):
        out[filled : s + len(e)] = e[filled - s :]
        filled = s + len(e)
    if filled != n:
        raise ValueError(f"windows cover {filled} of {n} points")
    return out


def tslib_threshold(train_energy: np.ndarray, test_energy: np.ndarray, ratio: float) -> float:
    """TSLib's threshold: percentile 100 - ratio of the train and test energies together."""
    return float(np.percentile(np.concatenate([train_energy, test_energy]), 100 - ratio))


def point_adjust(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Point adjustment: a hit anywhere in a true anomaly segment flags the whole segment.

    Equal to TSLib's scan in ``utils/tools.py adjustment`` after its fix ``c4910bf`` (a segment
    starting at index 0 is rewritten too).
    """
    gt, pred = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    begins = np.flatnonzero(gt & ~np.concatenate([[False], gt[:-1]]))
    segment = np.cumsum(gt & ~np.concatenate([[False], gt[:-1]])) * gt  # 1.. inside, 0 outside
    hits = np.zeros(len(begins) + 1, dtype=bool)
    np.logical_or.at(hits, segment[pred & gt], True)
    hits[0] = False
    return (pred | hits[segment]).astype(np.int64)


def detection_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Raw and point-adjusted accuracy and binary precision, recall, F1 (positive = 1)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    out: dict[str, float] = {}
    gt = np.asarray(gt).astype(np.int64)
    for prefix, p in (("", np.asarray(pred).astype(np.int64)), ("pa_", point_adjust(gt, pred))):
        prec, rec, f1, _ = precision_recall_fscore_support(gt, p, average="binary",
                                                           zero_division=0)  # fmt: skip
        acc = float(accuracy_score(gt, p))
        out.update({f"{prefix}precision": float(prec), f"{prefix}recall": float(rec),
                    f"{prefix}f1": float(f1), f"{prefix}accuracy": acc})  # fmt: skip
    return out


@register_task(SPEC)
class TsAnomaly:
    """Anomaly-detection task plugin; the subtask names the set (``ts-anomaly:MSL``)."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """The scaled series of the set (the first ``limit`` test points are scored)."""
        _recipe(options)
        name = subtask or ("UCR135" if sample else None)
        if name not in SETS:
            raise DataError(f"name the set: --task ts-anomaly:MSL (one of {', '.join(SETS)}), "
                            f"or --sample for the bundled UCR135; got {name!r}")  # fmt: skip
        paths, source = _locate(SETS[name], data_dir, sample)
        series = read_set(SETS[name], paths)
        prov = {"data_source": source, "data_revision": "sha256:" + mdata.files_digest(paths),
                "dataset": name}  # fmt: skip
        return LoadedData({"series": [series], "limit": [limit]}, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train the reconstruction model, threshold its energies, score the test points."""
        if ctx.build_model is None:
            raise ConfigError("ts-anomaly trains its model: run it through `m2bench run`")
        recipe = _recipe(ctx.options)
        series, limit = data.tables["series"][0], data.tables["limit"][0]
        info, length = SETS[series.name], recipe.seq_len
        ratio = float(recipe.anomaly_ratio) or info.ratio
        step = recipe.step or info.step
        epochs = ts_train.max_epochs(recipe.epochs or info.epochs, ctx)
        cut = int(len(series.train) * 0.8)
        fit = series.train if recipe.protocol == "tslib" else series.train[:cut]
        val, test, labels = series.train[cut:], series.test[:limit], series.labels[:limit]
        for what, part in (("training", fit), ("validation", val), ("test", test)):
            if len(part) < length:
                raise DataError(f"{series.name}: the {what} part has {len(part)} points, fewer "
                                f"than one window of {length}")  # fmt: skip
        seed_everything(ctx.seeds[0])
        net = ctx.build_model(seq_len=length, pred_len=length, enc_in=test.shape[1], mark_dim=0)
        stats = _train(net, fit, val, length, step, epochs, recipe, ctx)
        test_e, gt, threshold, n_windows, seconds = _score(net, series, val, test, labels, step,
                                                           ratio, recipe, ctx)  # fmt: skip
        scores = detection_scores(gt, test_e > threshold)
        name, headline = series.name, "pa_f1" if recipe.protocol == "tslib" else "f1"
        metrics = {**scores, "threshold": threshold, f"{name}/f1": scores["f1"],
                   f"{name}/pa_f1": scores["pa_f1"], f"{name}/n_eval": float(len(test_e)),
                   "n_anomalies": float(gt.sum()), "params_m": count_params(net) / 1e6,
                   **stats["metrics"]}  # fmt: skip
        perf = {**stats["perf"], "perf/infer_samples_per_s": n_windows / max(seconds, 1e-9),
                "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device)}  # fmt: skip
        rule = ("percentile(train + test energies)" if recipe.protocol == "tslib"
                else "percentile(validation energies)")  # fmt: skip
        tags = {"protocol": recipe.protocol, "seq_len": str(length), "step": str(step),
                "anomaly_ratio": f"{ratio:g}", "headline": f"{headline}={scores[headline]:.4f}",
                "setting": f"{name} ratio={ratio:g} {recipe.protocol}", "threshold_rule": rule,
                "recipe": f"adam lr={recipe.lr:g} bs={recipe.batch_size} epochs<={epochs:g} "
                          f"patience={recipe.patience} lradj={recipe.lradj}"}  # fmt: skip
        return EvalOutput(metrics, perf, {name: scores["f1"]}, tags)


def _score(net, series: Series, val, test, labels, step: int, ratio: float, recipe: Recipe,
           ctx: EvalContext):  # fmt: skip
    """(test energies, their labels, threshold, test windows, seconds) under the protocol."""
    length = recipe.seq_len
    if recipe.protocol == "tslib":  # windows concatenated; threshold sees the test energies
        starts = window_starts(len(test), length, step)
        train_w, _ = energies(net, series.train, window_starts(len(series.train), length, step),
                              recipe, ctx)  # fmt: skip
        test_w, seconds = energies(net, test, starts, recipe, ctx)
        gt = np.concatenate([labels[s : s + length] for s in starts])
        threshold = tslib_threshold(train_w.ravel(), test_w.ravel(), ratio)
        return test_w.ravel(), gt, threshold, len(starts), seconds
    val_starts, starts = once_starts(len(val), length), once_starts(len(test), length)
    val_w, _ = energies(net, val, val_starts, recipe, ctx)
    test_w, seconds = energies(net, test, starts, recipe, ctx)
    threshold = float(np.percentile(per_point(val_w, val_starts, len(val)), 100 - ratio))
    return per_point(test_w, starts, len(test)), labels, threshold, len(starts), seconds


def _batch(values: np.ndarray, starts: list[int], length: int, device) -> torch.Tensor:
    return torch.from_numpy(np.stack([values[s : s + length] for s in starts])).to(device)


@torch.no_grad()
def energies(net, values: np.ndarray, starts: list[int], recipe: Recipe,
             ctx: EvalContext) -> tuple[np.ndarray, float]:  # fmt: skip
    """(window energies (len(starts), L), seconds): mean over channels of (x - x_hat)^2."""
    net.eval()
    out, seconds = [], 0.0
    for b in range(0, len(starts), recipe.batch_size):
        x = _batch(values, starts[b : b + recipe.batch_size], recipe.seq_len, ctx.device)
        with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
            rec = net(x)
        seconds += sw.seconds
        out.append(((x - rec.float()) ** 2).mean(dim=-1).cpu().numpy())
    return np.concatenate(out), seconds


def _train(net, fit, val, length, step, epochs, recipe: Recipe, ctx: EvalContext) -> dict:
    train_starts = window_starts(len(fit), length, step)
    val_starts = window_starts(len(val), length, step)

    def make_batch(idx: list[int], epoch: int):
        return (_batch(fit, [train_starts[i] for i in idx], length, ctx.device),)

    def loss_fn(model, batch):
        return torch.nn.functional.mse_loss(model(batch[0]).float(), batch[0])

    def val_loss() -> float:  # TSLib: unweighted mean of the per-batch losses
        e, _ = energies(net, val, val_starts, recipe, ctx)
        sizes = range(0, len(val_starts), recipe.batch_size)
        return float(np.mean([e[b : b + recipe.batch_size].mean() for b in sizes]))

    fit_recipe = ts_train.FitRecipe(lr=recipe.lr, epochs=epochs, patience=recipe.patience,
                                    batch_size=recipe.batch_size, lradj=recipe.lradj)  # fmt: skip
    return ts_train.fit(net, n_train=len(train_starts), make_batch=make_batch, loss_fn=loss_fn,
                        val_score=val_loss, recipe=fit_recipe, ctx=ctx)  # fmt: skip


# --- files ------------------------------------------------------------------------------------


def _locate(info: AnomalySet, data_dir: str | Path | None, sample: bool) -> tuple[list[Path], str]:
    """(file paths, data_source tag) of a set: bundled sample, or DIR / DIR/<SET>."""
    if sample or (info.name == "UCR135" and not data_dir):
        if info.name != "UCR135":
            files = ", ".join(info.files)
            raise DataError(f"{info.name} is not bundled (--sample runs UCR135, a UCR archive "
                            f"series); pass --data-dir DIR with {files}")  # fmt: skip
        folder = mdata.sample_dir(SAMPLE)
        mdata.verify_files(folder, SAMPLE_SHA256)
        return [folder / f for f in info.files], f"sample:{SAMPLE}/{UCR}"
    where = (f"get TSLib's anomaly-detection data (the Google Drive link in TSLib's README) or "
             f"the original ({info.origin}); there is no hub copy")  # fmt: skip
    if not data_dir:
        raise DataError(f"{info.name} needs --data-dir DIR with {', '.join(info.files)} (in DIR "
                        f"or DIR/{info.name}/); {where}")  # fmt: skip
    root, paths = Path(data_dir), []
    for fname in info.files:
        found = [p for p in (root / fname, root / info.name / fname) if p.is_file()]
        if not found:
            raise DataError(f"{info.name}: no {fname} in {root} (nor {root / info.name}); {where}")
        paths.append(found[0])
    return paths, mdata.dir_source(paths[0].parent)


def read_set(info: AnomalySet, paths: list[Path]) -> Series:
    """Read, validate and scale a set as TSLib's ``*SegLoader`` does.

    Raises:
        DataError: an unreadable file, a NaN, a non-numeric value, labels not 0/1, or shapes
            that disagree (channels, label length).
    """
    from sklearn.preprocessing import StandardScaler

    if info.layout == "npy":
        train, test, labels = (_npy(p) for p in paths)
    elif info.layout == "swat":  # the last column is the label, in both files
        train, test = (_csv(p) for p in paths)
        labels, train, test = test[:, -1], train[:, :-1], test[:, :-1]
    elif info.layout == "psm":  # first column = timestamp; TSLib turns NaNs into 0
        train, test = (np.nan_to_num(_csv(p, allow_nan=True)[:, 1:]) for p in paths[:2])
        labels = _csv(paths[2])[:, 1:]
    else:
        train, test, labels = _timeeval(*paths)
    labels = np.asarray(labels).reshape(len(labels), -1)
    for arr, path, what in ((train, paths[0], "train"), (test, paths[1], "test")):
        if arr.ndim != 2 or arr.shape[1] != info.dims:
            raise DataError(f"{path}: {what} data of shape {arr.shape}; {info.name} has "
                            f"(rows, {info.dims})")  # fmt: skip
    if labels.shape != (len(test), 1) or not np.isin(labels, (0, 1)).all():
        raise DataError(f"{paths[-1]}: labels must be one 0/1 value per test row ({len(test)}); "
                        f"got shape {labels.shape}")  # fmt: skip
    scaler = StandardScaler().fit(train)
    train, test = (scaler.transform(a).astype(np.float32) for a in (train, test))
    return Series(info.name, train, test, labels[:, 0].astype(np.int64))


def _finite(arr: np.ndarray, path: Path) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: a NaN or infinite value at row {row}")
    return arr


def _npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:100]
        raise DataError(f"{path} is not a readable .npy ({reason})") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{path}: dtype {arr.dtype} is not numeric")
    return _finite(arr.astype(np.float64), path)


def _csv(path: Path, allow_nan: bool = False) -> np.ndarray:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:100]
        raise DataError(f"{path} is not a readable CSV ({reason})") from None
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & frame.notna()
    if bad.any().any():
        col = bad.any().idxmax()
        raise DataError(f"{path}: column {col!r} row {int(bad[col].to_numpy().argmax()) + 2} is "
                        "not a number")  # fmt: skip
    values = numeric.to_numpy(dtype=np.float64)
    return values if allow_nan else _finite(values, path)


def _timeeval(train_path: Path, test_path: Path):
    """UCR/TimeEval CSVs (timestamp, value..., is_anomaly); TEST holds the whole series, whose
    first rows are TRAIN (the archive's anomaly-free prefix): the test part is the rest."""
    train, test = _csv(train_path), _csv(test_path)
    if train.shape[1] < 3 or test.shape[1] != train.shape[1]:
        raise DataError(f"{test_path}: expected timestamp, value(s), is_anomaly columns in both "
                        f"files; got {train.shape[1]} and {test.shape[1]}")  # fmt: skip
    if len(test) <= len(train) or not np.array_equal(test[: len(train)], train):
        raise DataError(f"{test_path}: its first {len(train)} rows must equal {train_path.name} "
                        "(UCR archive layout: TEST = the whole series)")  # fmt: skip
    rest = test[len(train) :]
    return train[:, 1:-1], rest[:, 1:-1], rest[:, -1]
