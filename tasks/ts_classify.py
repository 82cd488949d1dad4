"""Multivariate time-series classification (``ts-classify``) on the 10 UEA sets used by TSLib.

Sets: EthanolConcentration, FaceDetection, Handwriting, Heartbeat, JapaneseVowels, PEMS-SF,
SelfRegulationSCP1, SelfRegulationSCP2, SpokenArabicDigits, UWaveGestureLibrary from the UEA
multivariate archive (Bagnall et al. 2018, arXiv:1811.00075; https://timeseriesclassification.com),
read from ``<Name>_TRAIN.ts`` / ``<Name>_TEST.ts`` (sktime ``.ts`` format) in ``--data-dir`` or
``--data-dir/<Name>/``. ``--sample``: JapaneseVowels, bundled unmodified (``tasks/data/ts_uea``).
Protocol: ``shared/specs/timeseries_protocol.md`` §5, §7.3, §8; the study it serves: JustDense
(arXiv 2508.09153) on TSLib (Wu et al., TimesNet, ICLR 2023).

Loading as TSLib: labels -> codes of the sorted class names; when some sample's dimensions differ
in length, every series longer than 256 is subsampled by 2 and each sample is cut (or NaN-padded)
to its first dimension's length; NaN -> linear interpolation within the sample and dimension,
constant beyond the ends (an all-missing dimension becomes 0); zero padding at the end to
seq_len = max(train, test) length. EthanolConcentration also gets TSLib's instance norm (centre
over time, divide by the std across channels at each step, + 1e-5), per sample before padding.
The model is ``Classifier(backbone(seq_len=L, pred_len=L, enc_in=C, mark_dim=0), n_classes)``.

Training as TSLib: RAdam lr 1e-3, batch 16, cross-entropy, grad-norm clip 4.0, constant lr, at
most 100 epochs, early stopping on -accuracy with patience 10, best weights restored; metric:
accuracy (every test sample scored once). ``--protocol``: ``tslib`` validates on the TEST split
(the reported accuracy is the best test epoch's) and z-scores TRAIN and TEST each with their own
statistics (pandas std, ddof 1, + machine eps, over all real rows of the split); ``clean``
(default) early-stops on a stratified 80/20 split of TRAIN (``task.split_seed``) and z-scores
TRAIN, its validation part and TEST with the statistics of the whole TRAIN file.

Deviations: TSLib passes the padding mask as ``x_mark`` and some of its models multiply their
features by it; m2bench's ``features(x)`` contract takes no mask, so padded steps are zeros the
model sees. Validation batches are not shuffled.
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

DATASETS = (
    "EthanolConcentration", "FaceDetection", "Handwriting", "Heartbeat", "JapaneseVowels",
    "PEMS-SF", "SelfRegulationSCP1", "SelfRegulationSCP2", "SpokenArabicDigits",
    "UWaveGestureLibrary",
)  # fmt: skip
SAMPLE = "ts_uea"
SAMPLE_SHA256 = (
    ("JapaneseVowels_TRAIN.ts", "68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd"),
    ("JapaneseVowels_TEST.ts", "b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462"),
)
WHERE = ("get it from the UEA multivariate archive (https://timeseriesclassification.com) or "
         "TSLib's data (Time-Series-Library README, all_datasets) and pass --data-dir")  # fmt: skip
SUBSAMPLE_LIMIT, SUBSAMPLE_FACTOR = 256, 2


@dataclass(frozen=True)
class Recipe:
    """TSLib's classification settings (``task.<field>=``), spec §5 and §9.2."""

    protocol: str = "clean"
    epochs: int = 100
    patience: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    max_grad_norm: float = 4.0
    val_fraction: float = 0.2  # clean: share of TRAIN held out (stratified) for early stopping
    split_seed: int = 2021  # clean: fixed seed of that split, independent of the run seed


def _recipe(options: dict[str, Any]) -> Recipe:
    recipe = ts_train.task_recipe(Recipe(), options, "ts-classify")
    if not 0 < recipe.val_fraction < 1:
        raise ConfigError(f"task.val_fraction must be in (0, 1), got {recipe.val_fraction}")
    return recipe


SPEC = TaskSpec(
    name="ts-classify",
    version=1,
    kind="timeseries",
    metric="accuracy",
    higher_is_better=True,
    source=DataSource(
        hf="",
        revision="local",
        license="per set as stated by its source (JapaneseVowels: UCI, CC BY 4.0)",
        sample=SAMPLE,
        sample_sha256=SAMPLE_SHA256,
        citation="UEA archive (Bagnall et al. 2018); TSLib (Wu et al. 2023); arXiv 2508.09153",
    ),
    default_models=("patchtst", "patchtst_dense", "itransformer", "itransformer_dense", "dlinear"),
    model_kinds=("forecast",),
    sample_size=512,
    trains=True,
    batches_by_recipe=True,
    subtasks=DATASETS,
    metrics=("accuracy",),
    description="UEA multivariate classification, TSLib protocol or leak-free: accuracy",
)


@dataclass
class Split:
    """One ``.ts`` file: per-sample arrays (T_i, C) (NaN = missing) and the class labels."""

    samples: list[np.ndarray]
    labels: list[str]


def parse_ts(path: Path) -> Split:
    """Read an sktime ``.ts`` file: ``@`` header tags, then ``@data`` with one sample per line,
    dimensions separated by ``:``, values by ``,``, the class label last, ``?`` = missing.

    Raises:
        DataError: unsupported header (time stamps, no class label) or a malformed data line.
    """
    samples, labels, header, dims = [], [], {}, None
    in_data = False
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataError(f"{path.name} line {no}: expected a @tag before @data")
                tag, _, value = line[1:].partition(" ")
                header[tag.lower()] = value.strip()
                in_data = tag.lower() == "data"
                continue
            parts = line.split(":")
            label, parts = parts[-1].strip(), parts[:-1]
            if not label or not parts:
                raise DataError(f"{path.name} line {no}: no class label after the last ':'")
            if dims is None:
                dims = int(header.get("dimensions", len(parts)))
            if len(parts) != dims:
                raise DataError(f"{path.name} line {no}: {len(parts)} dimensions, expected {dims}")
            series = [_values(path, no, d, p) for d, p in enumerate(parts)]
            samples.append(_stack(series))
            labels.append(label)
    if header.get("timestamps", "false").lower() == "true":
        raise DataError(f"{path.name}: time-stamped .ts files are not supported")
    if header.get("classlabel", "true").split()[0].lower() != "true":
        raise DataError(f"{path.name}: no class labels (@classLabel false)")
    if not samples:
        raise DataError(f"{path.name}: no samples after @data")
    return Split(samples, labels)


def _values(path: Path, no: int, dim: int, text: str) -> np.ndarray:
    out = []
    for i, tok in enumerate(text.split(",")):
        tok = tok.strip()
        try:
            out.append(np.nan if tok == "?" else float(tok))
        except ValueError:
            raise DataError(f"{path.name} line {no}: dimension {dim + 1} value {i + 1} is not "
                            f"a number ({tok[:20]!r})") from None  # fmt: skip
    return np.asarray(out, dtype=np.float64)


def _stack(series: list[np.ndarray]) -> np.ndarray:
    """(T, C) with T = the first dimension's length; differing dimensions are resolved later."""
    return np.asarray(series, dtype=object) if len({len(s) for s in series}) > 1 else (
        np.stack(series, axis=1))  # fmt: skip


def prepare(split: Split, subsample: bool) -> list[np.ndarray]:
    """TSLib's per-sample preparation: subsample long series when asked, equalise dimensions to
    the first one's length, interpolate NaNs linearly (constant beyond the ends)."""
    out = []
    for s in split.samples:
        dims = list(s) if s.dtype == object else [s[:, c] for c in range(s.shape[1])]
        if subsample:
            dims = [d[::SUBSAMPLE_FACTOR] if len(d) > SUBSAMPLE_LIMIT else d for d in dims]
        t = len(dims[0])
        dims = [np.concatenate([d[:t], np.full(max(0, t - len(d)), np.nan)]) for d in dims]
        out.append(np.stack([_interpolate(d) for d in dims], axis=1))
    return out


def _interpolate(y: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(y)
    if ok.all():
        return y
    if not ok.any():
        return np.zeros_like(y)
    idx = np.arange(len(y))
    return np.interp(idx, idx[ok], y[ok])


def zscore_stats(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std + eps) per channel over all real rows, as TSLib's Normalizer (pandas std)."""
    rows = np.concatenate(samples, axis=0)
    return rows.mean(0), rows.std(0, ddof=1) + np.finfo(float).eps


def instance_norm(x: np.ndarray) -> np.ndarray:
    """TSLib's EthanolConcentration norm of one (T, C) sample."""
    x = x - x.mean(0, keepdims=True)
    return x / np.sqrt(x.var(1, keepdims=True) + 1e-5)


def locate(name: str, data_dir: str | Path | None, sample: bool) -> tuple[Path, Path, str]:
    """(TRAIN path, TEST path, data source) of set ``name``.

    Raises:
        DataError: unknown set, or a file is not where it was asked for.
    """
    if name not in DATASETS:
        raise DataError(f"unknown UEA set {name!r}; one of {', '.join(DATASETS)}")
    if sample:
        if name != "JapaneseVowels":
            raise DataError(f"{name} is not bundled (bundled: JapaneseVowels); {WHERE}")
        folder = mdata.sample_dir(SAMPLE)
        mdata.verify_files(folder, SAMPLE_SHA256)
        return folder / f"{name}_TRAIN.ts", folder / f"{name}_TEST.ts", f"sample:{SAMPLE}"
    if not data_dir:
        raise DataError(f"{name}: pass --data-dir DIR with {name}_TRAIN.ts and _TEST.ts; {WHERE}")
    root = Path(data_dir)
    paths = []
    for part in ("TRAIN", "TEST"):
        fname = f"{name}_{part}.ts"
        found = [p for p in (root / fname, root / name / fname) if p.is_file()]
        if not found:
            raise DataError(f"{name}: no {fname} in {root} (nor {root / name}); {WHERE}")
        paths.append(found[0])
    return paths[0], paths[1], mdata.dir_source(paths[0].parent)


@register_task(SPEC)
class TsClassify:
    """UEA classification task plugin; the subtask names the set (``ts-classify:Heartbeat``)."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """Both splits of the set, parsed and prepared (the first ``limit`` test samples are
        scored)."""
        _recipe(options)
        name = subtask or ("JapaneseVowels" if sample else None)
        if name is None:
            raise DataError(f"name the set: --task ts-classify:JapaneseVowels (one of "
                            f"{', '.join(DATASETS)}), or --sample")  # fmt: skip
        train_path, test_path, source = locate(name, data_dir, sample)
        train, test = parse_ts(train_path), parse_ts(test_path)
        ragged = any(s.dtype == object for s in train.samples + test.samples)
        classes = sorted(set(train.labels) | set(test.labels))
        if unseen := sorted(set(test.labels) - set(train.labels)):
            raise DataError(f"{name}: TEST has classes absent from TRAIN: {unseen[:5]}")
        code = {c: i for i, c in enumerate(classes)}
        tables = {
            part: {"x": prepare(s, ragged), "y": np.array([code[c] for c in s.labels])}
            for part, s in (("train", train), ("test", test))
        }
        revision = "sha256:" + mdata.files_digest([train_path, test_path])
        prov = {"data_source": source, "data_revision": revision, "dataset": name}
        return LoadedData({"splits": [tables], "meta": [{"name": name, "classes": classes,
                                                          "limit": limit}]}, prov)  # fmt: skip

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Train with TSLib's classification recipe, then score every test sample once."""
        if ctx.build_model is None:
            raise ConfigError("ts-classify trains its model: run it through `m2bench run`")
        recipe = _recipe(ctx.options)
        meta, splits = data.tables["meta"][0], data.tables["splits"][0]
        name, n_classes = meta["name"], len(meta["classes"])
        parts = normalised(splits, recipe, name)
        seq_len = max(len(s) for p in ("train", "test") for s in splits[p]["x"])
        x = {k: _pad(v[0], seq_len) for k, v in parts.items()}
        y = {k: v[1] for k, v in parts.items()}
        test_n = len(y["test"]) if meta["limit"] is None else min(meta["limit"], len(y["test"]))
        x["test"], y["test"] = x["test"][:test_n], y["test"][:test_n]
        seed_everything(ctx.seeds[0])
        backbone = ctx.build_model(seq_len=seq_len, pred_len=seq_len, enc_in=x["train"].shape[2],
                                   mark_dim=0)  # fmt: skip
        from baselines.ts_common import Classifier

        net = Classifier(backbone, n_classes)  # head sized by a probe on the backbone's device
        stats = _train(net, x, y, recipe, ctx)
        pred, seconds = predict(net, x["test"], recipe.batch_size, ctx)
        acc = accuracy(y["test"], pred)
        metrics = {"accuracy": acc, f"{name}/accuracy": acc, f"{name}/n_eval": float(len(pred)),
                   f"{name}/n_classes": float(n_classes), "params_m": count_params(net) / 1e6,
                   **stats["metrics"]}  # fmt: skip
        perf = {**stats["perf"], "perf/infer_samples_per_s": len(pred) / max(seconds, 1e-9),
                "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device)}  # fmt: skip
        val = "TEST (tslib)" if recipe.protocol == "tslib" else f"{recipe.val_fraction:g} of TRAIN"
        tags = {"protocol": recipe.protocol, "seq_len": str(seq_len),
                "setting": f"{name} {recipe.protocol}", "validation": val,
                "recipe": f"radam lr={recipe.lr:g} bs={recipe.batch_size} "
                          f"epochs<={ts_train.max_epochs(recipe.epochs, ctx):g} "
                          f"patience={recipe.patience} "
                          f"clip={recipe.max_grad_norm:g} lradj=constant"}  # fmt: skip
        rows = (f"{i},{a},{b}" for i, (a, b) in enumerate(zip(y["test"], pred, strict=True)))
        text = "\n".join(["index,label,prediction", *rows]) + "\n"
        Path(ctx.out_dir, f"{name}_predictions.csv").write_text(text)
        return EvalOutput(metrics, perf, {name: acc}, tags)


def stratified_split(labels: np.ndarray, fraction: float, seed: int):
    """(fit indices, validation indices): a stratified split of TRAIN with a fixed seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        fit, val = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as exc:  # e.g. a class with a single TRAIN sample
        raise DataError(f"stratified {fraction:g} validation split impossible: {exc}") from None
    return np.sort(fit), np.sort(val)


def normalised(splits: dict, recipe: Recipe, name: str) -> dict[str, tuple[list, np.ndarray]]:
    """``{"train"|"validation"|"test": (samples, labels)}`` z-scored per the protocol."""
    train_x, train_y = splits["train"]["x"], splits["train"]["y"]
    test_x, test_y = splits["test"]["x"], splits["test"]["y"]
    mean, std = zscore_stats(train_x)
    if recipe.protocol == "tslib":  # TSLib: TEST z-scored with its own statistics; val = TEST
        t_mean, t_std = zscore_stats(test_x)
        test = [(s - t_mean) / t_std for s in test_x]
        parts = {"train": ([(s - mean) / std for s in train_x], train_y), "test": (test, test_y)}
        parts["validation"] = parts["test"]
    else:
        fit, val = stratified_split(train_y, recipe.val_fraction, recipe.split_seed)
        z = [(s - mean) / std for s in train_x]
        parts = {"train": ([z[i] for i in fit], train_y[fit]),
                 "validation": ([z[i] for i in val], train_y[val]),
                 "test": ([(s - mean) / std for s in test_x], test_y)}  # fmt: skip
    if name == "EthanolConcentration":
        parts = {k: ([instance_norm(s) for s in xs], ys) for k, (xs, ys) in parts.items()}
    return parts


def _pad(samples: list[np.ndarray], seq_len: int) -> np.ndarray:
    out = np.zeros((len(samples), seq_len, samples[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(samples):
        out[i, : min(len(s), seq_len)] = s[:seq_len]
    return out


def accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Share of samples whose predicted class equals the label (each sample counted once)."""
    from sklearn.metrics import accuracy_score

    if len(labels) != len(pred):
        raise ValueError(f"{len(pred)} predictions for {len(labels)} samples")
    return float(accuracy_score(labels, pred))


@torch.no_grad()
def predict(net, x: np.ndarray, batch_size: int, ctx: EvalContext) -> tuple[np.ndarray, float]:
    """Argmax class of every sample of ``x`` (N, L, C), in order, and the forward seconds."""
    net.eval()
    preds, seconds = [], 0.0
    for b in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[b : b + batch_size]).to(ctx.device)
        with timing.Stopwatch(ctx.device) as sw, autocast(ctx.device, ctx.precision):
            logits = net(xb)
        seconds += sw.seconds
        preds.append(logits.float().argmax(-1).cpu().numpy())
    return np.concatenate(preds), seconds


def _train(net, x: dict, y: dict, recipe: Recipe, ctx: EvalContext) -> dict:
    xs = {k: torch.from_numpy(v) for k, v in x.items()}
    ys = {k: torch.from_numpy(v.astype(np.int64)) for k, v in y.items()}

    def make_batch(idx: list[int], epoch: int):
        return xs["train"][idx].to(ctx.device), ys["train"][idx].to(ctx.device)

    def loss_fn(model, batch):
        return torch.nn.functional.cross_entropy(model(batch[0]).float(), batch[1])

    def val_score() -> float:
        pred, _ = predict(net, x["validation"], recipe.batch_size, ctx)
        return -accuracy(y["validation"], pred)

    fit_recipe = ts_train.FitRecipe(
        lr=recipe.lr, epochs=recipe.epochs, patience=recipe.patience,
        batch_size=recipe.batch_size, lradj="constant", optimizer="radam",
        max_grad_norm=recipe.max_grad_norm,
    )  # fmt: skip
    return ts_train.fit(net, n_train=len(ys["train"]), make_batch=make_batch, loss_fn=loss_fn,
                        val_score=val_score, recipe=fit_recipe, ctx=ctx,
                        val_name="val_neg_accuracy")  # fmt: skip
