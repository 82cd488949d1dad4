"""GLUE data: nine subtasks from the hub, a local GLUE folder or the bundled sample.

Sources, in the order ``load_glue`` tries them:

1. ``sample=True``: the real sample in ``tasks/data/glue_sample`` (QNLI and WNLI only, the two
   GLUE tasks whose licenses allow redistribution; see its ``SOURCE.md``), sha256-checked.
2. ``data_dir`` (``--data-dir``), else ``$M2BENCH_DATA/glue`` when that folder exists: a folder in
   the original GLUE layout, ``DIR/<Task>/train.tsv`` and ``dev.tsv`` (MNLI: ``dev_matched.tsv``
   and ``dev_mismatched.tsv``), read with the csv module, tab-separated, quoting off (GLUE text
   contains quote characters).
3. The hub dataset ``nyu-mll/glue`` through ``datasets`` (online, or offline from the HF cache).

Splits are ``train`` and ``dev``; MNLI has two dev sets, ``dev_matched`` and ``dev_mismatched``
(hub ``validation_matched``/``validation_mismatched``), and ``eval_splits`` names a subtask's dev
sets. Rows are ``{idx, text_a, text_b, label}`` in file order: ``idx`` is the row's position in
the split (the hub's ``idx``), ``text_b`` is ``None`` for CoLA and SST-2, ``label`` an int in the
hub's convention (``LABEL_NAMES``; string labels of the GLUE files are mapped to it, so both
sources give the same numbers) or, for STS-B, a float score in [0, 5]. Pair columns follow the M2
recipe: MNLI premise/hypothesis, QNLI question/sentence, QQP question1/question2, MRPC, RTE,
STS-B and WNLI sentence1/sentence2. Texts are kept unchanged (SST-2's trailing spaces included).

Every row is checked: a line with the wrong number of columns, a label outside the task's label
set, a missing text or bytes that are not UTF-8 is a ``DataError`` naming the file and line (hub:
split and row), and so is a file (or hub split) without data rows. Blank lines are skipped. With
``limit`` only the first ``limit`` rows are read and checked. ``scan`` says which subtasks a local
folder holds in full and why the others are left out.
"""

from __future__ import annotations

import csv
import difflib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2bench import data as mdata
from m2bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)
HUB_REPO = "nyu-mll/glue"
SAMPLE = "glue_sample"
SAMPLE_SUBTASKS = ("qnli", "wnli")
#: files of the bundled sample and their sha256, checked on every ``sample=True`` load
SAMPLE_SHA256 = (
    ("QNLI/train.tsv", "6db20310ff26bc69198ee149518f1eb8cf33c414cf55a2f0b3034d8743760731"),
    ("QNLI/dev.tsv", "ef32d57aeb3057eae6c4f5432b761e8130ffe80b3cd66c7400ad06aece55b050"),
    ("WNLI/train.tsv", "9a88e9d54b6861cc796a088e9acf4f5f65064a9ef65ae6fa7a688b28391e5c9a"),
    ("WNLI/dev.tsv", "cba00490596dd14be8cf53b4f53bb744abe3a7b89f81ab210528d80225338ed5"),
)
STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class Layout:
    """How one subtask is stored in the GLUE files and on the hub.

    Attributes:
        folder: GLUE folder name (``CoLA``, ``SST-2``, ...).
        hub_text: hub text columns (text_a[, text_b]).
        tsv_text: GLUE file text columns: header names, or column numbers when ``n_cols`` is set.
        tsv_label: GLUE file label column (header name or column number).
        labels: GLUE file label string -> hub integer label; empty for STS-B (float score).
        n_cols: column count of a file without a header (CoLA); ``None``: the file has a header.
    """

    folder: str
    hub_text: tuple[str, ...]
    tsv_text: tuple[str | int, ...]
    tsv_label: str | int
    labels: dict[str, int]
    n_cols: int | None = None


_BINARY = {"0": 0, "1": 1}
_ENTAIL = {"entailment": 0, "not_entailment": 1}
_PAIR = ("sentence1", "sentence2")
LAYOUTS = {
    "cola": Layout("CoLA", ("sentence",), (3,), 1, _BINARY, n_cols=4),
    "sst2": Layout("SST-2", ("sentence",), ("sentence",), "label", _BINARY),
    "mrpc": Layout("MRPC", _PAIR, ("#1 String", "#2 String"), "Quality", _BINARY),
    "qqp": Layout("QQP", ("question1", "question2"), ("question1", "question2"),
                  "is_duplicate", _BINARY),
    "stsb": Layout("STS-B", _PAIR, _PAIR, "score", {}),
    "mnli": Layout("MNLI", ("premise", "hypothesis"), _PAIR, "gold_label",
                   {"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": Layout("QNLI", ("question", "sentence"), ("question", "sentence"), "label", _ENTAIL),
    "rte": Layout("RTE", _PAIR, _PAIR, "label", _ENTAIL),
    "wnli": Layout("WNLI", _PAIR, _PAIR, "label", _BINARY),
}  # fmt: skip
SUBTASKS = tuple(LAYOUTS)
#: class names by integer label, as the hub's ClassLabel features; STS-B is a regression
LABEL_NAMES = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "stsb": (),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}
#: output size of the classification head (1 for the STS-B regression)
NUM_LABELS = {t: len(names) or 1 for t, names in LABEL_NAMES.items()}
LAYOUT_HINT = (
    "expected the original GLUE layout DIR/<Task>/train.tsv and dev.tsv (MNLI: dev_matched.tsv "
    "and dev_mismatched.tsv), <Task> one of " + ", ".join(lay.folder for lay in LAYOUTS.values())
)
_SPLITS = {"train": ("train.tsv", "train"), "dev": ("dev.tsv", "validation")}
_MNLI_SPLITS = {
    "train": ("train.tsv", "train"),
    "dev_matched": ("dev_matched.tsv", "validation_matched"),
    "dev_mismatched": ("dev_mismatched.tsv", "validation_mismatched"),
}


def splits(subtask: str) -> dict[str, tuple[str, str]]:
    """``{split: (GLUE file name, hub split)}`` of a subtask."""
    _layout(subtask)
    return dict(_MNLI_SPLITS if subtask == "mnli" else _SPLITS)


def eval_splits(subtask: str) -> tuple[str, ...]:
    """The dev sets a subtask is scored on: ``("dev",)``, MNLI both matched and mismatched."""
    return tuple(s for s in splits(subtask) if s != "train")


def available(data_dir: str | Path | None = None, sample: bool = False) -> tuple[str, ...]:
    """Subtasks a local source holds in full (every split file present).

    Args:
        data_dir: GLUE folder; default ``$M2BENCH_DATA/glue`` if it exists.
        sample: the bundled sample instead.

    Returns:
        The subtasks in ``SUBTASKS`` order; ``()`` when the data comes from the hub (all of them).
    """
    if sample:
        return SAMPLE_SUBTASKS
    folder = Path(data_dir).expanduser() if data_dir is not None else default_dir()
    if folder is None or not folder.is_dir():
        return ()
    return scan(folder)[0]


def scan(folder: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """The subtasks a GLUE folder holds in full, and why each other one is left out.

    Returns:
        ``(found, skipped)``: ``found`` in ``SUBTASKS`` order; ``skipped`` maps a subtask to
        ``no <Folder>/`` (its folder is absent) or ``<Folder>/ lacks <files>``.

    Raises:
        DataError: ``folder`` is not a folder.
    """
    if not folder.is_dir():
        raise DataError(f"--data-dir {folder} is not a folder; {LAYOUT_HINT}")
    found, skipped = [], {}
    for t in SUBTASKS:
        sub = folder / LAYOUTS[t].folder
        missing = [f for f, _ in splits(t).values() if not (sub / f).is_file()]
        if not sub.is_dir():
            skipped[t] = f"no {LAYOUTS[t].folder}/"
        elif missing:
            skipped[t] = f"{LAYOUTS[t].folder}/ lacks {', '.join(missing)}"
        else:
            found.append(t)
    return tuple(found), skipped


def default_dir() -> Path | None:
    """``$M2BENCH_DATA/glue`` when that folder exists, else ``None`` (the hub)."""
    root = mdata.data_root()
    return root / "glue" if root is not None and (root / "glue").is_dir() else None


def how_to_provide(subtask: str) -> str:
    """The three ways to get a subtask's data, for error messages."""
    return (
        f"provide it (1) {_hub_or_dir(subtask)}, or (3) with --sample "
        f"(bundled real sample of {', '.join(SAMPLE_SUBTASKS)} only)"
    )


def _hub_or_dir(subtask: str) -> str:
    files = ", ".join(f"DIR/{_layout(subtask).folder}/{f}" for f, _ in splits(subtask).values())
    return (
        f"from the hub ({HUB_REPO}, config {subtask}) online or via the HF cache, "
        f"(2) with --data-dir DIR in the original GLUE layout ({files})"
    )


def load_glue(
    subtask: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    sample: bool = False,
    limit: int | None = None,
    revision: str = "main",
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows of one GLUE subtask and split, with provenance.

    Args:
        subtask: one of ``SUBTASKS``.
        split: ``train`` or ``dev``; MNLI ``train``, ``dev_matched`` or ``dev_mismatched``.
        data_dir: folder in the GLUE layout; default ``$M2BENCH_DATA/glue`` if it exists.
        sample: read the bundled sample (QNLI, WNLI) instead, offline.
        limit: keep the first ``limit`` rows (not a random sample).
        revision: hub revision (branch, tag or commit) when reading from the hub.

    Returns:
        ``(rows, provenance)``: rows ``{idx, text_a, text_b, label}`` in file order; provenance
        ``{"data_source", "data_revision"}`` (local files: ``sha256:<files_digest>``; hub: the
        commit when online, else the revision and the dataset fingerprint).

    Raises:
        ConfigError: unknown subtask or split, or a negative limit.
        DataError: missing or malformed data; the message names the file and line and the fix.
    """
    lay = _layout(subtask)
    table = splits(subtask)
    if split not in table:
        raise ConfigError(f"GLUE {subtask} has no split {split!r}; splits: {', '.join(table)}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    file_name, hub_split = table[split]
    if data_dir is None and not sample:
        data_dir = default_dir()
    if sample:
        if subtask not in SAMPLE_SUBTASKS:
            raise DataError(
                f"the bundled GLUE sample has no {subtask}, only {', '.join(SAMPLE_SUBTASKS)} "
                "(the other tasks' licenses do not allow redistribution); drop --sample and get "
                f"{subtask} (1) {_hub_or_dir(subtask)}"
            )
        rel = f"{lay.folder}/{file_name}"
        folder = mdata.sample_dir(SAMPLE)
        digest = mdata.verify_files(folder, tuple(x for x in SAMPLE_SHA256 if x[0] == rel))
        rows = read_tsv(folder / rel, subtask, limit=limit)
        return rows, {"data_source": f"sample:{SAMPLE}/{rel}", "data_revision": f"sha256:{digest}"}
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"--data-dir {folder} is not a folder; " + how_to_provide(subtask))
        path = folder / lay.folder / file_name
        if not path.is_file():
            raise DataError(
                f"GLUE {subtask} {split}: {path} not found (GLUE layout expected); "
                + how_to_provide(subtask)
            )
        rows = read_tsv(path, subtask, limit=limit)
        digest = mdata.files_digest([path])
        return rows, {"data_source": mdata.dir_source(path), "data_revision": f"sha256:{digest}"}
    return read_hub(subtask, hub_split, limit=limit, revision=revision)


def read_tsv(path: Path, subtask: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of one GLUE ``.tsv`` file of ``subtask``, checked line by line."""
    lay = _layout(subtask)
    rows: list[dict[str, Any]] = []
    # utf-8-sig: the GLUE MRPC files start with a byte-order mark
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            n_cols, text_at, label_at = _columns(path, lay, reader)
            for fields in reader:
                if limit is not None and len(rows) >= limit:
                    break
                if not fields:
                    continue
                where = f"{path} line {reader.line_num}"
                if len(fields) != n_cols:
                    raise DataError(
                        f"{where}: expected {n_cols} tab-separated columns, found {len(fields)}; "
                        f"use the unchanged GLUE {lay.folder} file"
                    )
                texts = [fields[i] for i in text_at]
                label = _parse_label(fields[label_at], lay, where)
                rows.append(_row(len(rows), texts, label, where, lay.tsv_text))
        except csv.Error as exc:
            raise DataError(
                f"{path} line {reader.line_num}: not a valid tsv line ({exc})"
            ) from None
        except UnicodeDecodeError:  # raised a read-ahead chunk later: find the line itself
            raise DataError(
                f"{path} line {_first_non_utf8_line(path)}: not UTF-8 text; "
                f"use the unchanged GLUE {lay.folder} file"
            ) from None
    if not rows and limit != 0:  # every job would fail after training (no batch, no score)
        raise DataError(f"{path} has no data rows; use the unchanged GLUE {lay.folder} file")
    return rows


def _first_non_utf8_line(path: Path) -> int:
    """Number (from 1) of the first line of ``path`` that is not valid UTF-8."""
    with open(path, "rb") as f:  # UTF-8 multi-byte sequences never hold the byte \n
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def read_hub(
    subtask: str, hub_split: str, *, limit: int | None = None, revision: str = "main"
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows of one subtask and hub split of ``nyu-mll/glue``, with provenance."""
    import datasets

    lay = _layout(subtask)
    try:
        ds = datasets.load_dataset(HUB_REPO, subtask, split=hub_split, revision=revision)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"GLUE {subtask} not available from the hub ({HUB_REPO} {subtask} {hub_split}: "
            f"{reason}); " + how_to_provide(subtask)
        ) from None
    missing = [c for c in ("idx", *lay.hub_text, "label") if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{HUB_REPO} {subtask} {hub_split} lacks columns {missing} (has {ds.column_names}); "
            "pass a revision of the dataset with the GLUE columns"
        )
    rev = _hub_commit(revision) or f"{revision} (fingerprint {ds._fingerprint})"
    if len(ds) == 0 and limit != 0:
        raise DataError(f"{HUB_REPO} {subtask} {hub_split} has no rows; pass another revision")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    allowed = set(lay.labels.values())
    rows = []
    for i, r in enumerate(ds.to_list()):
        where = f"{HUB_REPO} {subtask} {hub_split} row {i + 1}"
        label = r["label"]
        if lay.labels and label not in allowed:
            raise DataError(f"{where}: label {label!r} not in {sorted(allowed)}")
        if not lay.labels:
            label = _parse_label(str(label), lay, where)
        texts = [r[c] for c in lay.hub_text]
        rows.append(_row(int(r["idx"]), texts, label, where, lay.hub_text))
    return rows, {"data_source": f"hf:{HUB_REPO}/{subtask}:{hub_split}", "data_revision": rev}


def _layout(subtask: str) -> Layout:
    if subtask not in LAYOUTS:
        close = difflib.get_close_matches(subtask, SUBTASKS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"unknown GLUE subtask {subtask!r}; {hint}subtasks: {', '.join(SUBTASKS)}"
        )
    return LAYOUTS[subtask]


def _columns(path: Path, lay: Layout, reader: Any) -> tuple[int, list[int], int]:
    """Column count, text column numbers and label column number; reads the header if any."""
    if lay.n_cols is not None:
        return lay.n_cols, [int(c) for c in lay.tsv_text], int(lay.tsv_label)
    header = next(reader, None)
    if not header:
        raise DataError(f"{path} is empty; use the unchanged GLUE {lay.folder} file")
    needed = [*lay.tsv_text, lay.tsv_label]
    absent = [c for c in needed if c not in header]
    if absent:
        raise DataError(
            f"{path} line 1: header lacks column(s) {', '.join(map(str, absent))} (found "
            f"{', '.join(header)[:120]}); use the unchanged GLUE {lay.folder} file with its header"
        )
    return len(header), [header.index(c) for c in lay.tsv_text], header.index(lay.tsv_label)


def _parse_label(raw: str, lay: Layout, where: str) -> int | float:
    if lay.labels:
        if raw not in lay.labels:
            raise DataError(f"{where}: label {raw!r} not in {sorted(lay.labels)}")
        return lay.labels[raw]
    lo, hi = STSB_RANGE
    try:
        score = float(raw)
    except ValueError:
        raise DataError(f"{where}: score {raw!r} is not a number") from None
    if not (math.isfinite(score) and lo <= score <= hi):
        raise DataError(f"{where}: score {raw!r} outside [{lo:g}, {hi:g}]")
    return score


def _row(
    idx: int, texts: list[Any], label: int | float, where: str, columns: tuple[str | int, ...]
) -> dict[str, Any]:
    for col, text in zip(columns, texts, strict=True):
        name = f"column {col + 1}" if isinstance(col, int) else repr(col)
        if not isinstance(text, str):
            raise DataError(f"{where}: text {name} is missing")
        if not text.strip():  # a few real QQP/MNLI rows are empty: kept (scored), but reported
            log.warning("%s: text %s is empty; the row is kept", where, name)
    return {
        "idx": idx,
        "text_a": texts[0],
        "text_b": texts[1] if len(texts) > 1 else None,
        "label": label,
    }


def _hub_commit(revision: str) -> str | None:
    if mdata.is_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(HUB_REPO, revision=revision).sha
    except Exception:  # offline or rate-limited: the fingerprint stands in
        return None
