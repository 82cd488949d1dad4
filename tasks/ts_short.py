"""Short-term forecasting (``ts-short``): the M4 competition under TSLib's protocol.

M4 (Makridakis, Spiliotis, Assimakopoulos 2020, Int. J. Forecasting 36(1)): 100,000 series in six
groups, subtasks Yearly, Quarterly, Monthly, Weekly, Daily, Hourly, read from TSLib's ``m4`` folder
(``M4-info.csv``, ``training.npz``, ``test.npz``, ``submission-Naive2.csv`` in ``--data-dir`` or
``--data-dir/m4``) or from the competition's raw ``<Group>-train.csv`` / ``<Group>-test.csv``
(GitHub Mcompetitions/M4-methods, folder Dataset). TSLib's ``.npz`` files are pickled numpy object
arrays and are read with ``allow_pickle``: use trusted files only. ``--task ts-short`` without a
subtask runs every group found (all six from TSLib's folder) and logs the summary rows.
Protocol: ``shared/specs/timeseries_protocol.md`` §4, §7.2, §8; study: JustDense (arXiv
2508.09153) on TSLib (Wu et al., TimesNet, ICLR 2023).

``--sample`` has no M4 data: it runs the stand-in ``M1-Yearly``, the 181 yearly series of the M1
competition (Makridakis et al. 1982) from the Monash repository (``tasks/data/ts_short``), with
the last 6 points of each series as its test horizon (H 6, m 1, as M4 Yearly).

Per group: one model built with seq_len 2H, pred_len H, enc_in 1, mark_dim 0; H = 6/8/18/13/14/48,
m = 1/4/12/1/1/24, history_size 1.5/1.5/1.5/10/10/10. Training as TSLib: one sample per series
per epoch with a uniform cut point in [max(1, n - floor(history_size*H)), n-1] (drawn from a
generator seeded with (seed, epoch)), input = the <= 2H values before the cut (left-zero-padded),
target = the values from cut-H to cut+H (right-zero-padded, masked), SMAPE loss over its last H
steps; Adam lr 1e-3, batch 16, at most 10 epochs, patience 3, lradj type1, no scaling.
``--protocol``: ``tslib`` early-stops on the SMAPE of the test horizon (the last 2H training
values as input); ``clean`` (default) holds the last H points of each training series out as
validation and trains on the rest (the final forecast still reads the full training series).

Metrics (§7.2): sMAPE, MAPE (zero denominators -> 1), MASE (in-sample seasonal-naive scale, no
zero guard), OWA against Naive2 per group, plus the rows Others (count-weighted Weekly, Daily,
Hourly) and Average when a run covers several groups. Naive2 comes from
``submission-Naive2.csv`` when present, else from :func:`naive2`. Deviation: values are logged
unrounded (TSLib prints them rounded to 3 decimals).
"""

from __future__ import annotations

import dataclasses
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

#: group -> (horizon H, seasonality m, history_size), TSLib's M4Meta
GROUPS = {
    "Yearly": (6, 1, 1.5), "Quarterly": (8, 4, 1.5), "Monthly": (18, 12, 1.5),
    "Weekly": (13, 1, 10.0), "Daily": (14, 1, 10.0), "Hourly": (48, 24, 10.0),
}  # fmt: skip
STAND_IN = {"M1-Yearly": (6, 1, 1.5)}  # the bundled sample; never reported as M4
OTHERS = ("Weekly", "Daily", "Hourly")
SAMPLE = "ts_short"
M1_FILE = "m1_yearly_dataset.tsf"
SAMPLE_SHA256 = ((M1_FILE, "12866731b810af595e4d4c74e87597a7846eb3b4667ef884a67a7e9126bf5412"),)
M4_FILES = ("M4-info.csv", "training.npz", "test.npz")
WHERE = ("get TSLib's m4 folder (Time-Series-Library README, all_datasets) or the raw "
         "<Group>-train.csv/-test.csv of github.com/Mcompetitions/M4-methods (Dataset/) and pass "
         "--data-dir")  # fmt: skip
EVAL_CHUNK = 500  # series per forward pass in validation and test, as TSLib


@dataclass(frozen=True)
class Recipe:
    """TSLib's M4 settings (``task.<field>=``), spec §4 and §9.2."""

    protocol: str = "clean"
    epochs: int = 10
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    lradj: str = "type1"


def _recipe(options: dict[str, Any]) -> Recipe:
    return ts_train.task_recipe(Recipe(), options, "ts-short")


SPEC = TaskSpec(
    name="ts-short",
    version=1,
    kind="timeseries",
    metric="smape",
    higher_is_better=False,
    source=DataSource(
        hf="",
        revision="local",
        license="M4: as stated by the M4 competition; sample M1 via Monash: CC BY 4.0",
        sample=SAMPLE,
        sample_sha256=SAMPLE_SHA256,
        citation="M4 (Makridakis et al. 2020); TSLib (Wu et al. 2023); arXiv 2508.09153",
    ),
    default_models=("patchtst", "patchtst_dense", "itransformer", "itransformer_dense", "dlinear"),
    model_kinds=("forecast",),
    sample_size=256,
    trains=True,
    batches_by_recipe=True,
    subtasks=(*GROUPS, *STAND_IN),
    metrics=("smape", "mase", "owa", "mape"),
    description="M4 short-term forecasting, TSLib protocol or leak-free: sMAPE, MASE, OWA",
)


@dataclass
class Group:
    """One group's series: training values, the test horizon (N, H) and Naive2 (N, H) or None."""

    name: str
    horizon: int
    season: int
    history: float
    train: list[np.ndarray]
    test: np.ndarray
    naive2: np.ndarray | None = None


# --- data --------------------------------------------------------------------------------------


def parse_tsf(path: Path) -> tuple[dict[str, str], list[str], list[np.ndarray]]:
    """Read a Monash ``.tsf`` file: (header tags, series names, values; ``?`` -> NaN).

    Raises:
        DataError: a malformed line (wrong field count, a value that is not a number).
    """
    header, attrs, names, series, in_data = {}, [], [], [], False
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            tag, _, value = line[1:].partition(" ")
            if not line.startswith("@"):
                raise DataError(f"{path.name} line {no}: expected a @tag before @data")
            if tag.lower() == "attribute":
                attrs.append(value.split()[0])
            else:
                header[tag.lower()] = value.strip()
            in_data = tag.lower() == "data"
            continue
        fields = line.split(":")
        if len(fields) != len(attrs) + 1:
            raise DataError(f"{path.name} line {no}: {len(fields)} ':'-fields, expected "
                            f"{len(attrs) + 1} ({', '.join(attrs)}, values)")  # fmt: skip
        try:
            values = [np.nan if v == "?" else float(v) for v in fields[-1].split(",")]
        except ValueError:
            raise DataError(f"{path.name} line {no}: a value is not a number") from None
        names.append(fields[0])
        series.append(np.asarray(values, dtype=np.float64))
    if not series:
        raise DataError(f"{path.name}: no series after @data")
    return header, names, series


def _m1_group(path: Path) -> Group:
    h, m, hist = STAND_IN["M1-Yearly"]
    _, names, series = parse_tsf(path)
    for name, s in zip(names, series, strict=True):
        if np.isnan(s).any() or len(s) < h + 2:
            raise DataError(f"{path.name}: series {name} has missing values or < {h + 2} points")
    return Group(
        "M1-Yearly", h, m, hist, [s[:-h] for s in series], np.stack([s[-h:] for s in series])
    )


def _find(root: Path, *names: str) -> Path | None:
    for folder in (root, root / "m4", root / "Dataset", root / "Train", root / "Test",
                   root / "Dataset" / "Train", root / "Dataset" / "Test"):  # fmt: skip
        for n in names:
            if (folder / n).is_file():
                return folder / n
    return None


def _load_array(path: Path) -> np.ndarray:
    """TSLib's ``training.npz``/``test.npz``: a pickled object array (or a one-array npz)."""
    arr = np.load(path, allow_pickle=True)
    return arr[arr.files[0]] if isinstance(arr, np.lib.npyio.NpzFile) else arr


def _m4_groups(root: Path, names: list[str] | None) -> tuple[list[Group], list[Path]]:
    """Groups (None: every group found) from TSLib's m4 folder, else from the raw CSVs."""
    import pandas as pd

    found = {f: _find(root, f) for f in M4_FILES}
    naive_path = _find(root, "submission-Naive2.csv")
    naive = pd.read_csv(naive_path, index_col=0) if naive_path else None
    used = [p for p in (*found.values(), naive_path) if p]
    missing = next((f for f in M4_FILES if not found[f]), None)
    raw: dict[str, tuple] = {}
    if missing is None:
        info = pd.read_csv(found["M4-info.csv"])
        train, test = _load_array(found["training.npz"]), _load_array(found["test.npz"])
        sp = info["SP"].to_numpy()
        names = names or [g for g in GROUPS if (sp == g).any()]
    else:
        names = names or [g for g in GROUPS if _find(root, f"{g}-train.csv")] or ["Yearly"]
        for g in names:
            paths = [_find(root, f"{g}-{part}.csv") for part in ("train", "test")]
            if not all(paths):
                raise DataError(f"M4 {g}: no {missing} in {root} (nor {root / 'm4'}) and no "
                                f"{g}-train.csv/{g}-test.csv; {WHERE}")  # fmt: skip
            used += paths
            raw[g] = tuple(pd.read_csv(p, index_col=0) for p in paths)
    groups = []
    for g in names:
        h, m, hist = GROUPS[g]
        if g in raw:
            ids = list(raw[g][0].index)
            tr = [r[~np.isnan(r)] for r in raw[g][0].to_numpy(np.float64)]
            te = list(raw[g][1].loc[ids].to_numpy(np.float64))
        else:
            sel = sp == g
            ids, tr, te = list(info["M4id"][sel]), list(train[sel]), list(test[sel])
        if not ids:
            raise DataError(f"M4 {g}: no series of this group in {found['M4-info.csv']}")
        test_arr = np.stack([np.asarray(t, dtype=np.float64)[:h] for t in te])
        if test_arr.shape[1] != h or np.isnan(test_arr).any():
            raise DataError(f"M4 {g}: a test series has fewer than H = {h} values")
        if naive is not None and (lost := [i for i in ids if i not in naive.index]):
            raise DataError(f"M4 {g}: {naive_path.name} has no row for {lost[0]}")
        nv = None if naive is None else naive.loc[ids].to_numpy(np.float64)[:, :h]
        groups.append(Group(g, h, m, hist, [np.asarray(t, np.float64) for t in tr], test_arr, nv))
    return groups, used


def locate_groups(subtask: str | None, data_dir, sample: bool) -> tuple[list[Group], str, str]:
    """(groups, data source, revision) for ``subtask`` (None: every group available).

    Raises:
        DataError: unknown group, M4 asked of the sample, or a missing file (named).
    """
    if subtask and subtask not in SPEC.subtasks:
        raise DataError(f"unknown ts-short group {subtask!r}; one of {', '.join(SPEC.subtasks)}")
    if sample:
        if subtask not in (None, "M1-Yearly"):
            raise DataError(f"M4 {subtask} is not bundled (the sample is the stand-in "
                            f"M1-Yearly); {WHERE}")  # fmt: skip
        folder = mdata.sample_dir(SAMPLE)
        digest = mdata.verify_files(folder, SAMPLE_SHA256)
        return [_m1_group(folder / M1_FILE)], f"sample:{SAMPLE}/{M1_FILE}", "sha256:" + digest
    if not data_dir:
        raise DataError(f"pass --data-dir DIR with M4's files ({', '.join(M4_FILES)}); {WHERE}")
    root = Path(data_dir)
    if subtask == "M1-Yearly":
        path = _find(root, M1_FILE)
        if path is None:
            raise DataError(f"M1-Yearly: no {M1_FILE} in {root}; use --sample for the bundled one")
        return [_m1_group(path)], mdata.dir_source(path), "sha256:" + mdata.sha256(path)
    groups, used = _m4_groups(root, [subtask] if subtask else None)
    return groups, mdata.dir_source(root), "sha256:" + mdata.files_digest(used)


# --- Naive2 and metrics --------------------------------------------------------------------------


def _acf(y: np.ndarray, k: int) -> float:
    d = y - y.mean()
    return float((d[k:] * d[:-k]).sum() / (d * d).sum())


def is_seasonal(y: np.ndarray, m: int) -> bool:
    """90% test at lag m: |r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n); needs n >= 3m."""
    if m <= 1 or len(y) < 3 * m:
        return False
    s = sum(_acf(y, k) ** 2 for k in range(1, m))
    return abs(_acf(y, m)) > 1.645 * np.sqrt((1 + 2 * s) / len(y))


def seasonal_indices(y: np.ndarray, m: int) -> np.ndarray:
    """Classical multiplicative decomposition: y / centred moving average (2 x m for even m),
    averaged per position i mod m, normalised to mean 1."""
    w = np.full(m + 1, 1.0 / m) if m % 2 == 0 else np.full(m, 1.0 / m)
    if m % 2 == 0:
        w[0] = w[-1] = 0.5 / m
    half = len(w) // 2
    trend = np.convolve(y, w, mode="valid")  # trend[j] centred at y[j + half]
    ratio = y[half : half + len(trend)] / trend
    pos = np.arange(half, half + len(trend)) % m
    idx = np.array([ratio[pos == i].mean() for i in range(m)])
    return idx / idx.mean()


def naive2(y: np.ndarray, horizon: int, m: int) -> np.ndarray:
    """M4's Naive2: the last value of the seasonally adjusted series, re-seasonalised.

    Seasonal adjustment (classical multiplicative, :func:`seasonal_indices`) only when
    :func:`is_seasonal`; otherwise (and always for m = 1) Naive2 = Naive1 = the last value.
    """
    if not is_seasonal(y, m):
        return np.full(horizon, y[-1], dtype=np.float64)
    si = seasonal_indices(y, m)
    n = len(y)
    level = y[-1] / si[(n - 1) % m]
    return level * si[(n + np.arange(horizon)) % m]


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return num / np.where(den == 0, 1.0, den)


def group_errors(forecast: np.ndarray, target: np.ndarray, insample: list[np.ndarray],
                 m: int) -> dict[str, float]:  # fmt: skip
    """sMAPE, MAPE (both in %, zero denominators -> 1) and MASE of one group, spec §7.2."""
    f, a = np.asarray(forecast, np.float64), np.asarray(target, np.float64)
    smape = float(np.mean(_safe(200 * np.abs(f - a), np.abs(a) + np.abs(f))))
    mape = float(np.mean(_safe(100 * np.abs(f - a), np.abs(a))))
    scale = np.array([np.mean(np.abs(y[m:] - y[:-m])) for y in insample])
    with np.errstate(divide="ignore", invalid="ignore"):  # no zero guard, as the reference
        mase = float(np.mean(np.mean(np.abs(f - a), axis=1) / scale))
    return {"smape": smape, "mape": mape, "mase": mase}


def summarise(rows: dict[str, dict[str, float]], counts: dict[str, int]) -> dict[str, dict]:
    """Add Others and Average (count-weighted means of sMAPE, MAPE, MASE and of Naive2's) and
    the OWA of every row from its ratios."""
    out = dict(rows)

    def weighted(names: list[str]) -> dict[str, float]:
        n = sum(counts[g] for g in names)
        keys = ("smape", "mape", "mase", "naive2_smape", "naive2_mase")
        return {k: sum(rows[g][k] * counts[g] for g in names) / n for k in keys}

    if len(rows) > 1:
        if others := [g for g in OTHERS if g in rows]:
            out["Others"] = weighted(others)
        out["Average"] = weighted(list(rows))
    for r in out.values():
        r["owa"] = 0.5 * (r["mase"] / r["naive2_mase"] + r["smape"] / r["naive2_smape"])
    return out


def smape_loss(forecast: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TSLib's training loss 200 * mean(|F-A| / (|F|+|A|) * mask); 0/0 -> 0; the denominator is
    detached."""
    den = forecast.detach().abs() + target.abs()
    zero = den == 0
    ratio = (forecast - target).abs() / torch.where(zero, torch.ones_like(den), den)
    return 200 * torch.mean(torch.where(zero, torch.zeros_like(ratio), ratio) * mask)


# --- windows and training ------------------------------------------------------------------------


def last_window(series: list[np.ndarray], length: int) -> np.ndarray:
    """(N, length, 1) of each series' last ``length`` values, left-zero-padded."""
    out = np.zeros((len(series), length, 1), dtype=np.float32)
    for i, s in enumerate(series):
        tail = s[-length:]
        out[i, length - len(tail) :, 0] = tail
    return out


def training_sample(s: np.ndarray, cut: int, horizon: int):
    """TSLib's Dataset_M4 item at ``cut``: (input (2H,), its mask, target (2H,), its mask)."""
    x, xm, y, ym = (np.zeros(2 * horizon, np.float32) for _ in range(4))
    inp = s[max(0, cut - 2 * horizon) : cut]
    x[len(x) - len(inp) :], xm[len(x) - len(inp) :] = inp, 1.0
    out = s[max(0, cut - horizon) : min(len(s), cut + horizon)]
    y[: len(out)], ym[: len(out)] = out, 1.0
    return x, xm, y, ym


def cut_points(lengths: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform cut per series in [max(1, n - limit), n - 1]."""
    low = np.maximum(1, lengths - limit)
    return rng.integers(low, lengths)  # high exclusive: cut <= n - 1


@torch.no_grad()
def forecast(net, x: np.ndarray, ctx: EvalContext) -> tuple[np.ndarray, float]:
    """(N, H) forecasts of every input window of ``x`` (N, 2H, 1), in order, and the seconds."""
    net.eval()
    preds, seconds = [], 0.0
    for b in range(0, len(x), EVAL_CHUNK):
        xb = torch.from_numpy(x[b : b + EVAL_CHUNK]).to(ctx.device)
        with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
            out = net(xb)
        seconds += sw.seconds
        preds.append(out.float()[:, :, 0].cpu().numpy())
    return np.concatenate(preds).astype(np.float64), seconds


def _train(net, group: Group, recipe: Recipe, ctx: EvalContext) -> dict:
    h = group.horizon
    if recipe.protocol == "clean":  # the last H training points of each series validate
        series = [s[:-h] for s in group.train]
        val_x, val_y = last_window(series, 2 * h), np.stack([s[-h:] for s in group.train])
    else:  # TSLib: early stopping on the test horizon
        series, val_x, val_y = group.train, last_window(group.train, 2 * h), group.test
    if min(len(s) for s in series) < 2:
        raise DataError(f"{group.name}: a training series has < 2 points left to sample from")
    lengths = np.array([len(s) for s in series])
    limit = int(group.history * h)
    cuts: dict[int, np.ndarray] = {}

    def make_batch(idx: list[int], epoch: int):
        if epoch not in cuts:
            cuts[epoch] = cut_points(lengths, limit, np.random.default_rng((ctx.seeds[0], epoch)))
        items = [training_sample(series[i], int(cuts[epoch][i]), h) for i in idx]
        x, _, y, ym = (
            torch.from_numpy(np.stack(p)).to(ctx.device) for p in zip(*items, strict=True)
        )
        return x[:, :, None], y[:, -h:], ym[:, -h:]

    def loss_fn(model, batch):
        x, y, ym = batch
        return smape_loss(model(x)[:, :, 0].float(), y, ym)

    def val_loss() -> float:
        pred, _ = forecast(net, val_x, ctx)
        return float(smape_loss(torch.from_numpy(pred), torch.from_numpy(val_y),
                                torch.ones(val_y.shape, dtype=torch.float64)))  # fmt: skip

    fit_recipe = ts_train.FitRecipe(lr=recipe.lr, epochs=recipe.epochs, patience=recipe.patience,
                                    batch_size=recipe.batch_size, lradj=recipe.lradj)  # fmt: skip
    return ts_train.fit(net, n_train=len(series), make_batch=make_batch, loss_fn=loss_fn,
                        val_score=val_loss, recipe=fit_recipe, ctx=ctx)  # fmt: skip


@register_task(SPEC)
class TsShort:
    """M4 task plugin; the subtask names the group (``ts-short:Monthly``), none = all found."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """The groups' series (the first ``limit`` series of each group are scored)."""
        _recipe(options)
        groups, source, revision = locate_groups(subtask, data_dir, sample)
        prov = {"data_source": source, "data_revision": revision,
                "dataset": ",".join(g.name for g in groups)}  # fmt: skip
        return LoadedData({"groups": groups, "limit": [limit]}, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train one model per group, forecast every (scored) series once, compute §7.2."""
        if ctx.build_model is None:
            raise ConfigError("ts-short trains its model: run it through `m2bench run`")
        recipe = _recipe(ctx.options)
        groups, limit = data.tables["groups"], data.tables["limit"][0]
        rows, counts, metrics, rates, params = {}, {}, {}, [], 0
        seconds, scored, naive_src = 0.0, 0, set()
        for g in groups:
            gctx = ctx if len(groups) == 1 else _prefixed(ctx, g.name)
            seed_everything(ctx.seeds[0])
            net = ctx.build_model(seq_len=2 * g.horizon, pred_len=g.horizon, enc_in=1, mark_dim=0)
            stats = _train(net, g, recipe, gctx)
            n = len(g.train) if limit is None else min(limit, len(g.train))
            pred, sec = forecast(net, last_window(g.train[:n], 2 * g.horizon), ctx)
            seconds, scored = seconds + sec, scored + n
            nv = g.naive2[:n] if g.naive2 is not None else np.stack(
                [naive2(y, g.horizon, g.season) for y in g.train[:n]])  # fmt: skip
            naive_src.add("submission-Naive2.csv" if g.naive2 is not None else "computed")
            own = group_errors(pred, g.test[:n], g.train[:n], g.season)
            ref = group_errors(nv, g.test[:n], g.train[:n], g.season)
            rows[g.name] = {**own, "naive2_smape": ref["smape"], "naive2_mase": ref["mase"]}
            counts[g.name] = n
            metrics[f"{g.name}/n_eval"] = float(n)
            metrics.update({f"{g.name}/{k}": v for k, v in stats["metrics"].items()})
            if len(groups) == 1:
                metrics.update(stats["metrics"])
            rates.append(stats["perf"]["perf/train_samples_per_s"])
            params += count_params(net)
        table = summarise(rows, counts)
        for row, vals in table.items():
            metrics.update({f"{row}/{k}": v for k, v in vals.items()})
        main = table["Average" if len(groups) > 1 else groups[0].name]
        metrics.update({k: main[k] for k in ("smape", "mape", "mase", "owa")})
        metrics["params_m"] = params / 1e6
        perf = {"perf/train_samples_per_s": float(np.mean(rates)),
                "perf/infer_samples_per_s": scored / max(seconds, 1e-9),
                "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device)}  # fmt: skip
        names = ",".join(g.name for g in groups)
        tags = {"protocol": recipe.protocol, "setting": f"{names} {recipe.protocol}",
                "naive2": ",".join(sorted(naive_src)),
                "recipe": f"adam lr={recipe.lr:g} bs={recipe.batch_size} "
                          f"epochs<={ts_train.max_epochs(recipe.epochs, ctx):g} "
                          f"patience={recipe.patience} "
                          f"lradj={recipe.lradj} loss=smape"}  # fmt: skip
        return EvalOutput(metrics, perf, {r: v["smape"] for r, v in table.items()}, tags)


def _prefixed(ctx: EvalContext, group: str) -> EvalContext:
    """``ctx`` whose per-step metrics carry the group's name (one model per group)."""
    if ctx.log_metrics is None:
        return ctx
    log = ctx.log_metrics
    return dataclasses.replace(
        ctx, log_metrics=lambda m, step: log({f"{group}/{k}": v for k, v in m.items()}, step)
    )
