"""LoCoV1 data: the three sources (hub, local folder, bundled sample), validation, selection.

See the package docstring for the protocol. Every error names the file or row and the field, and
how to provide the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from m2bench import data as mdata
from m2bench.errors import DataError

QUERIES_REPO = "hazyresearch/LoCoV1-Queries"
DOCUMENTS_REPO = "hazyresearch/LoCoV1-Documents"
QUERY_FIELDS = {"qid": str, "query": str, "answer_pids": list, "dataset": str}
DOC_FIELDS = {"pid": str, "passage": str, "dataset": str}
HOW_TO_PROVIDE = (
    f"provide it (1) from the hub ({QUERIES_REPO}, {DOCUMENTS_REPO}) online or via the HF cache, "
    "(2) with --data-dir DIR holding queries.jsonl and documents.jsonl (or .parquet, or the two "
    "hub repos' folders), or (3) with --sample for the bundled QMSum sample"
)


def local_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Query and document files of a local LoCoV1 folder in any supported layout."""
    for ext in ("jsonl", "json", "parquet"):
        q, d = folder / f"queries.{ext}", folder / f"documents.{ext}"
        if q.is_file() and d.is_file():
            return [q], [d]
    found = []
    for repo in (QUERIES_REPO, DOCUMENTS_REPO):
        base = folder / repo.split("/")[1]
        files = sorted(base.glob("documents/*_test.jsonl")) or sorted(base.rglob("*.parquet"))
        found.append(files)
    if all(found):
        return found[0], found[1]
    raise DataError(
        f"LoCoV1 files not found in {folder}: expected queries.jsonl + documents.jsonl (or "
        ".parquet), or LoCoV1-Queries/documents/*_test.jsonl + "
        "LoCoV1-Documents/documents/*_test.jsonl; " + HOW_TO_PROVIDE
    )


def read_local(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of local JSON lines or parquet files, through ``datasets``."""
    import datasets

    kind = "parquet" if paths[0].suffix == ".parquet" else "json"
    try:
        ds = datasets.load_dataset(kind, data_files=[str(p) for p in paths], split="train")
    except Exception as exc:
        if kind == "json":
            _raise_bad_json_line(paths)
        raise DataError(f"cannot read {paths[0].parent}: {str(exc).splitlines()[0]}") from None
    return ds.to_list()


def _raise_bad_json_line(paths: list[Path]) -> None:
    rows = 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rows += 1
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {lineno}: expected a JSON object per line")
    if not rows:
        raise DataError(f"{paths[0]} has no rows; a LoCoV1 file holds one JSON object per line")
    raise DataError(f"cannot read {paths[0]}: rows have inconsistent fields or types")


def read_hub(revision: str) -> tuple[list[dict], list[dict], str]:
    """Queries, documents and the resolved revision(s) of the two hub datasets."""
    import datasets

    tables, revs = [], []
    for repo in (QUERIES_REPO, DOCUMENTS_REPO):
        try:
            ds = datasets.load_dataset(repo, split="test", revision=revision)
        except Exception as exc:
            reason = (
                str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            )
            raise DataError(
                f"LoCoV1 not available from the hub ({repo}: {reason}); " + HOW_TO_PROVIDE
            ) from None
        tables.append(ds.to_list())
        commit = mdata.hub_commit(repo, revision)
        revs.append(commit or f"{revision} (fingerprint {ds._fingerprint})")
    return tables[0], tables[1], ",".join(revs)


def validate(queries: list[dict], docs: list[dict], where: tuple[str, str]) -> None:
    """Check fields, types, unique ids, non-empty texts and that every answer pid exists."""
    for rows, fields, name in ((queries, QUERY_FIELDS, where[0]), (docs, DOC_FIELDS, where[1])):
        for i, row in enumerate(rows, 1):
            for key, typ in fields.items():
                value = row.get(key)
                if value is None:
                    raise DataError(f"{name} row {i}: field {key!r} is missing")
                if not isinstance(value, typ):
                    raise DataError(
                        f"{name} row {i}: field {key!r} must be {typ.__name__}, "
                        f"got {type(value).__name__}"
                    )
    pids: dict[str, str] = {}
    for i, d in enumerate(docs, 1):
        if d["pid"] in pids:
            raise DataError(f"{where[1]} row {i}: pid {d['pid']!r} appears twice")
        if not d["passage"].strip():
            raise DataError(f"{where[1]} row {i} (pid {d['pid']!r}): field 'passage' is empty")
        pids[d["pid"]] = d["dataset"]
    seen: set[str] = set()
    for i, q in enumerate(queries, 1):
        label = f"{where[0]} row {i} (qid {q['qid']!r})"
        if q["qid"] in seen:
            raise DataError(f"{label}: qid appears twice")
        seen.add(q["qid"])
        if not q["query"].strip():
            raise DataError(f"{label}: field 'query' is empty")
        if not q["answer_pids"]:
            raise DataError(f"{label}: field 'answer_pids' is empty")
        for pid in q["answer_pids"]:
            if pids.get(pid) != q["dataset"]:
                raise DataError(
                    f"{label}: field 'answer_pids' names pid {pid!r}, which is not a "
                    f"document of dataset {q['dataset']!r}"
                )


def select(
    queries: list[dict], docs: list[dict], subtask: str | None, limit: int | None
) -> tuple[list[dict], list[dict]]:
    """One subtask's rows, then the first ``limit`` queries and the documents of their subtasks."""
    if subtask is not None:
        have = sorted({q["dataset"] for q in queries})
        if subtask not in have:
            raise DataError(
                f"LoCoV1 subtask {subtask!r} not in the data; present: {', '.join(have)}"
            )
        queries = [q for q in queries if q["dataset"] == subtask]
    if limit is not None:
        queries = queries[:limit]
    keep = {q["dataset"] for q in queries}
    return queries, [d for d in docs if d["dataset"] in keep]
