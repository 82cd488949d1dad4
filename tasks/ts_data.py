"""Time-series data exactly as the Time-Series-Library (TSLib) reads it: files, column order,
chronological borders, a scaler fitted on the training rows only, and stride-1 windows.

Protocol facts (``shared/specs/timeseries_protocol.md`` §2, TSLib ``data_provider/data_loader.py``):
ETT hourly files split 12/4/4 months (8,640 / 2,880 / 2,880 rows; rows after 14,400 unused), ETT
15-minute files the same x 4; other ("custom") files 70% / 10% / 20% of their rows. Validation and
test start ``seq_len`` rows early so that their first window's input overlaps the previous split.
Columns: ``date`` first, then the others in file order, the target ``OT`` last; ``features=M``
uses every non-date column. The z-scale is scikit-learn's ``StandardScaler`` (population std)
fitted on the training rows. Window i: input rows [i, i+L), target rows [i+L, i+L+H);
count = rows - L - H + 1.

Data come from ``--data-dir`` (TSLib's file names, directly in DIR or in TSLib's sub-folders such
as ``DIR/ETT-small/ETTh1.csv``), from the hub dataset ``thuml/Time-Series-Library`` (the files
TSLib itself downloads), or from the bundled real files in ``tasks/data/ts`` (ETTh1, ETTh2,
Exchange, ILI; unmodified, see its SOURCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2bench import data as mdata
from m2bench.errors import DataError

HUB = "thuml/Time-Series-Library"
SAMPLE = "ts"
TARGET = "OT"


@dataclass(frozen=True)
class Dataset:
    """A TSLib dataset: its file (relative to TSLib's data root), split rule and lengths."""

    name: str
    path: str  # TSLib's relative path, e.g. ETT-small/ETTh1.csv
    split: str  # ett_hour | ett_minute | custom
    seq_len: int = 96
    label_len: int = 48
    horizons: tuple[int, ...] = (96, 192, 336, 720)


DATASETS = {d.name: d for d in (
    Dataset("ETTh1", "ETT-small/ETTh1.csv", "ett_hour"),
    Dataset("ETTh2", "ETT-small/ETTh2.csv", "ett_hour"),
    Dataset("ETTm1", "ETT-small/ETTm1.csv", "ett_minute"),
    Dataset("ETTm2", "ETT-small/ETTm2.csv", "ett_minute"),
    Dataset("Weather", "weather/weather.csv", "custom"),
    Dataset("Electricity", "electricity/electricity.csv", "custom"),
    Dataset("Traffic", "traffic/traffic.csv", "custom"),
    Dataset("Exchange", "exchange_rate/exchange_rate.csv", "custom"),
    Dataset("ILI", "illness/national_illness.csv", "custom", 36, 18, (24, 36, 48, 60)),
)}  # fmt: skip
BUNDLED = ("ETTh1", "ETTh2", "Exchange", "ILI")


@dataclass(frozen=True)
class Series:
    """A scaled multivariate series with its split borders and scaler statistics."""

    name: str
    columns: list[str]  # channel names, target last
    values: np.ndarray  # (rows, channels), z-scaled with the training statistics
    mean: np.ndarray
    scale: np.ndarray
    borders: dict[str, tuple[int, int]]  # split -> [start, end) rows, for seq_len of the build
    source: str
    revision: str
    marks: np.ndarray | None = None  # (rows, 4) TSLib timeF features (freq h) of each row

    def windows(self, split: str, seq_len: int, pred_len: int) -> int:
        """Number of stride-1 windows of ``split``."""
        start, end = self.borders[split]
        return max(0, end - start - seq_len - pred_len + 1)

    def starts(self, split: str, seq_len: int, pred_len: int = 0) -> list[int]:
        """First rows of the stride-1 windows of ``split`` (in order, each window once)."""
        start, _ = self.borders[split]
        return [start + i for i in range(self.windows(split, seq_len, pred_len))]

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Back to the original units (the scaler's inverse, per channel)."""
        return z * self.scale + self.mean


def time_features(dates) -> np.ndarray:
    """TSLib's ``timeF`` features for ``freq h`` (every TSLib script's setting), one row per date.

    [hour/23 - 0.5, weekday/6 - 0.5, (day-1)/30 - 0.5, (dayofyear-1)/365 - 0.5] (spec §2,
    TSLib ``utils/timefeatures.py``); weekday 0 = Monday.
    """
    import pandas as pd

    idx = pd.DatetimeIndex(dates)
    cols = [idx.hour / 23.0, idx.dayofweek / 6.0, (idx.day - 1) / 30.0, (idx.dayofyear - 1) / 365.0]
    return (np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1) - 0.5).astype(
        np.float32
    )


def borders(split_rule: str, rows: int, seq_len: int) -> dict[str, tuple[int, int]]:
    """TSLib's train / validation / test row ranges for a file of ``rows`` rows."""
    if split_rule in ("ett_hour", "ett_minute"):
        month = 30 * 24 * (4 if split_rule == "ett_minute" else 1)
        tr, va, te = 12 * month, 16 * month, 20 * month
        if rows < te:
            raise DataError(f"an ETT file needs {te} rows, this one has {rows}")
        return {"train": (0, tr), "validation": (tr - seq_len, va), "test": (va - seq_len, te)}
    n_tr, n_te = int(rows * 0.7), int(rows * 0.2)
    n_va = rows - n_tr - n_te
    return {"train": (0, n_tr), "validation": (n_tr - seq_len, n_tr + n_va),
            "test": (rows - n_te - seq_len, rows)}  # fmt: skip


def locate(name: str, data_dir: str | Path | None, sample: bool, revision: str = "main"):
    """(path of the CSV, data source, revision) for dataset ``name``.

    Raises:
        DataError: unknown dataset, or the file is not where it was asked for.
    """
    if name not in DATASETS:
        raise DataError(f"unknown time-series dataset {name!r}; one of {', '.join(DATASETS)}")
    ds = DATASETS[name]
    fname = Path(ds.path).name
    where = (f"get it from TSLib's data (the hub dataset {HUB}, file {ds.path}, or the "
             "Autoformer/TSLib Google Drive) and put it in --data-dir")  # fmt: skip
    if sample:
        if name not in BUNDLED:
            raise DataError(f"{name} is not bundled (bundled: {', '.join(BUNDLED)}); {where}")
        path = mdata.sample_dir(SAMPLE) / fname
        return path, f"sample:{SAMPLE}/{fname}", "sha256:" + mdata.sha256(path)
    if data_dir:
        root = Path(data_dir)
        for path in (root / fname, root / ds.path):
            if path.is_file():
                return path, mdata.dir_source(path), "sha256:" + mdata.sha256(path)
        raise DataError(f"{name}: no {fname} in {root} (nor {root / ds.path}); {where}")
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(HUB, ds.path, repo_type="dataset", revision=revision))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else repr(exc)
        raise DataError(
            f"{name} not available from the hub ({reason}); pass --data-dir DIR with {fname}, "
            f"or --sample for {', '.join(BUNDLED)}"
        ) from None
    commit = mdata.hub_commit(HUB, revision) or revision
    return path, f"hub:{HUB}/{ds.path}", commit


def read_series(name: str, path: Path, seq_len: int, source: str, revision: str) -> Series:
    """Read, validate, reorder and scale one CSV as TSLib does.

    Raises:
        DataError: no ``date`` first column, no ``OT`` column, a non-numeric, missing or
            infinite value, a date that does not parse, too few rows for the split.
    """
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable CSV ({str(exc).splitlines()[0][:120]})"
        ) from None
    cols = list(frame.columns)
    if not cols or cols[0] != "date":
        raise DataError(f"{path}: the first column must be 'date' (found {cols[:1]}); "
                        "TSLib files are date,<channels...>,OT")  # fmt: skip
    if TARGET not in cols:
        raise DataError(f"{path}: no target column {TARGET!r} (columns: {', '.join(cols[:8])})")
    channels = [c for c in cols[1:] if c != TARGET] + [TARGET]
    numeric = frame[channels].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & frame[channels].notna()
    if bad.any().any():
        col = bad.any().idxmax()
        row = int(bad[col].to_numpy().argmax())
        raise DataError(f"{path}: column {col!r} row {row + 2} is not a number "
                        f"({frame[col].iloc[row]!r})")  # fmt: skip
    if numeric.isna().any().any():
        col = numeric.isna().any().idxmax()
        row = int(numeric[col].isna().to_numpy().argmax())
        raise DataError(f"{path}: column {col!r} row {row + 2} is empty or NaN "
                        f"({frame[col].iloc[row]!r}); TSLib files have no gaps")  # fmt: skip
    values = numeric.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise DataError(f"{path}: column {channels[c]!r} row {r + 2} is not finite "
                        f"({frame[channels[c]].iloc[r]!r})")  # fmt: skip
    try:
        dates = pd.to_datetime(frame["date"])
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else repr(exc)
        raise DataError(f"{path}: the date column does not parse ({first})") from None
    try:
        cut = borders(DATASETS[name].split, len(values), seq_len)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    scaler = StandardScaler().fit(values[slice(*cut["train"])])
    return Series(name, channels, scaler.transform(values).astype(np.float32),
                  scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32), cut,
                  source, revision, time_features(dates))  # fmt: skip
