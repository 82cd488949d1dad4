"""MLflow runs -> one row per (task, version, setting, budget, subtask, limit, data, hardware,
model, overrides, weights) -> CSV.

The latest FINISHED run of each group is kept; sample runs are left out unless asked for. Rows
are ranked only within (task, task version, setting, training budget, data source, hardware):
numbers from different protocol versions, settings (e.g. forecast horizons), training bounds
(``--max-steps``/``--epochs`` against the task's recipe), data or GPUs are never ranked against
each other. The file is written atomically and is
byte-identical when regenerated from the same runs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pandas as pd

from m2bench import tracking
from m2bench.errors import M2BenchError
from m2bench.registry import get_task

log = logging.getLogger(__name__)
# ``setting``: a run tag for what else makes two runs incomparable (a forecast horizon, an lm-eval
# task); empty for tasks that have none
# ``subtask`` and ``eval_limit``: a run of one subtask or of the first N examples scores other
# data than a full run, so it is ranked apart from it; ``model_overrides``: the run's
# ``model.<field>=`` settings, a variant of the model with its own row
GROUP = ["task", "task_version", "setting", "budget", "subtask", "eval_limit", "data_source",
         "data_revision", "hardware"]  # fmt: skip
KEY = [*GROUP, "model", "model_overrides", "init", "weights_source"]
TAG_COLUMNS = [
    "task",
    "task_version",
    "setting",
    "budget",
    "subtask",
    "eval_limit",
    "model",
    "model_overrides",
    "family",
    "kind",
    "data_source",
    "data_revision",
    "hardware",
    "precision",
    "init",
    "weights_source",
    "torch",
    "triton",
    "cuda",
    "git_sha",
    "git_dirty",
    "sample",
    "stage",
]
THROUGHPUT = ["perf/docs_per_s", "perf/tokens_per_s", "perf/samples_per_s"]


def collect(task: str | None = None, *, include_sample: bool = False) -> pd.DataFrame:
    """The leaderboard table from the tracking store (empty frame when there are no runs)."""
    runs = tracking.search_runs()
    if runs.empty:
        return pd.DataFrame()
    runs = runs[runs["status"] == "FINISHED"].copy()
    for col in TAG_COLUMNS:
        runs[col] = runs.get(f"tags.{col}", pd.Series(index=runs.index, dtype=object)).fillna("")
    if task is not None:
        runs = runs[runs["task"] == task]
    runs = runs[~runs["stage"].isin(["train", "bench"])]  # no evaluation in these
    if not include_sample:
        runs = runs[runs["sample"] != "true"]
    if runs.empty:
        return pd.DataFrame()
    runs = runs.sort_values(["start_time", "run_id"]).drop_duplicates(KEY, keep="last")
    frames = [_task_rows(name, group) for name, group in runs.groupby("task", sort=True)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _task_rows(task: str, runs: pd.DataFrame) -> pd.DataFrame:
    try:
        spec = get_task(task).spec
    except M2BenchError:  # runs of a task this checkout does not have: rank nothing
        log.warning("runs of unknown task %r are left out of the leaderboard", task)
        return pd.DataFrame()
    metric_cols = sorted(  # per-step training curves (train/...) are no leaderboard columns
        c
        for c in runs.columns
        if c.startswith("metrics.") and not c.startswith("metrics.train/") and runs[c].notna().any()
    )
    table = runs[TAG_COLUMNS + ["run_id"]].copy()
    for col in metric_cols:
        table[col[len("metrics.") :]] = runs[col].to_numpy()
    table.insert(3, "main_metric", spec.metric)
    table.insert(4, "score", table.get(spec.metric))
    # a task whose score direction varies by subtask (lm-eval) states it in each run's tags
    stated = runs.get("tags.higher_is_better", pd.Series(index=runs.index, dtype=object))
    higher = stated.map({"true": True, "false": False}).fillna(spec.higher_is_better)
    table["_key"] = table["score"].where(~higher.astype(bool).to_numpy(), -table["score"])
    table = table.sort_values([*GROUP, "_key", "model"], na_position="last").drop(columns="_key")
    table.insert(0, "rank", table.groupby(GROUP, sort=False).cumcount() + 1)
    return table.reset_index(drop=True)


FRONT = ["rank", "task", "task_version", "model", "family", "main_metric", "score", "params_m"]


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=FRONT + [c for c in TAG_COLUMNS if c not in FRONT] + ["run_id"])
    front = FRONT
    quality = sorted(
        c
        for c in df.columns
        if c not in front
        and "/" not in c
        and c not in TAG_COLUMNS + ["run_id", "params_nonembed_m"]
    )
    perf = sorted(c for c in df.columns if c.startswith("perf/"))
    subtasks = sorted(c for c in df.columns if "/" in c and not c.startswith("perf/"))
    tail = [c for c in TAG_COLUMNS if c not in front] + ["params_nonembed_m", "run_id"]
    cols = [c for c in front + quality + perf + subtasks + tail if c in df.columns]
    return df[cols]


def write(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV atomically (a crash never leaves a half-written leaderboard)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".leaderboard-", suffix=".csv", dir=path.parent)
    except OSError as exc:
        raise M2BenchError(
            f"cannot write {path} ({exc.strerror}); pass --out with a writable path"
        ) from None
    with os.fdopen(fd, "w") as f:
        _ordered(df).to_csv(f, index=False, float_format="%.6g")
    os.replace(tmp, path)
    return path


def plot(df: pd.DataFrame, path: str | Path) -> list[Path]:
    """Quality vs throughput, one PNG per task (``<stem>_<task>.png``); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, rows in df.groupby("task", sort=True):
        xcol = next((c for c in THROUGHPUT if c in rows and rows[c].notna().any()), None)
        if xcol is None:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # one series per ranking group (setting, budget, data, hardware, ...): points of
        # different groups are not comparable, so they never share a colour
        for key, grp in rows.groupby([*GROUP[2:], "sample"], sort=True, dropna=False):
            shown = dict(zip([*GROUP[2:], "sample"], key, strict=True))
            label = " | ".join(
                str(v) if k != "sample" else "sample"
                for k, v in shown.items()
                if v not in ("", "all", "false") and k != "data_revision" and pd.notna(v)
            )
            ax.scatter(grp[xcol], grp["score"], label=label or "all", s=40)
            for _, r in grp.iterrows():
                ax.annotate(
                    r["model"],
                    (r[xcol], r["score"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"{xcol.removeprefix('perf/')} (log scale)")
        ax.set_ylabel(str(rows["main_metric"].iloc[0]))
        ax.set_title(f"{task}: quality vs throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        out = Path(path).with_name(f"{Path(path).stem}_{task}.png")
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        plt.close(fig)
        written.append(out)
    return written
