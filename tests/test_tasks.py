"""Task plugins on real data: loading, validation errors, exactly-once evaluation, metric range."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from m2bench.data import sample_dir
from m2bench.errors import DataError
from m2bench.registry import get_task, list_tasks
from m2bench.specs import EvalContext

LOCO = get_task("locov1")
SAMPLE = sample_dir("locov1_qmsum")


@pytest.fixture(scope="module")
def sample():
    return LOCO.load("test", sample=True)


class _Oracle:
    """Lexical-interface test model that ranks given documents first (or scores all equal)."""

    spec = SimpleNamespace(name="oracle", kind="lexical")

    def __init__(self, relevant_texts: set[str] | None):
        self.relevant = relevant_texts

    def index(self, texts):
        self.texts, self.n_docs = texts, len(texts)
        return len(texts)

    def search(self, queries, k):
        if self.relevant is None:  # constant scores: order decided by doc id ties
            scores = np.zeros((len(queries), self.n_docs), dtype=np.float32)
        else:
            hit = np.array([t in self.relevant for t in self.texts], dtype=np.float32)
            scores = np.tile(hit, (len(queries), 1))
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, idx, 1), idx


def _ctx(tmp_path):
    return EvalContext(
        device=torch.device("cpu"), precision="fp32", batch_size=8, out_dir=tmp_path, progress=False
    )


def test_every_task_spec_is_valid():
    for name in list_tasks():
        spec = get_task(name).spec
        assert spec.name == name and spec.version >= 1 and spec.sample_size > 0
        assert spec.source.license and spec.default_models


def test_sample_loads_real_rows_with_provenance(sample):
    q, d = sample.tables["queries"], sample.tables["documents"]
    assert len(q) == LOCO.spec.sample_size == 281 and len(d) == 35
    assert q[0]["qid"] == "qmsum_test_Query_0_0"
    assert sample.provenance["data_source"] == "sample:locov1_qmsum"
    assert sample.provenance["data_revision"].startswith("sha256:")


def test_limit_takes_the_first_rows_and_their_documents():
    data = LOCO.load("test", sample=True, limit=5)
    qids = [q["qid"] for q in data.tables["queries"]]
    full = [json.loads(line)["qid"] for line in open(SAMPLE / "queries.jsonl")][:5]
    assert qids == full
    assert len(data.tables["documents"]) == 35  # every document of the subtask stays searchable


def test_unknown_subtask_lists_present_ones():
    with pytest.raises(DataError, match="present: qmsum_local"):
        LOCO.load("test", sample=True, subtask="gov_report")


def test_perfect_ranking_scores_one_and_each_query_is_evaluated_once(sample, tmp_path):
    # a perfect ranker for each query needs per-query relevance: restrict to one meeting's queries
    pid = sample.tables["queries"][0]["answer_pids"][0]
    queries = [q for q in sample.tables["queries"] if q["answer_pids"] == [pid]]
    docs = sample.tables["documents"]
    relevant = {d["passage"] for d in docs if d["pid"] == pid}
    data = type(sample)({"queries": queries, "documents": docs}, sample.provenance)
    out = LOCO.evaluate(_Oracle(relevant), data, _ctx(tmp_path))
    assert out.metrics["ndcg_at_10"] == pytest.approx(1.0)
    assert out.metrics["qmsum_local/n_eval"] == len(queries)
    lines = (tmp_path / "rankings.trec").read_text().splitlines()
    qids = [line.split()[0] for line in lines]
    assert sorted(set(qids)) == sorted(q["qid"] for q in queries)
    assert all(qids.count(q["qid"]) == len(docs) for q in queries)  # top-100 capped at 35 docs
    first = lines[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "oracle"


def test_constant_ranking_is_near_chance(sample, tmp_path):
    out = LOCO.evaluate(_Oracle(None), sample, _ctx(tmp_path))
    # one relevant document among 35: chance nDCG@10 is about 0.11; perfect is 1
    assert 0.0 <= out.metrics["ndcg_at_10"] < 0.3
    assert out.metrics["recall_at_100"] == 1.0  # 35 documents < 100: everything is retrieved
    assert out.metrics["n_eval"] == 281


# --- malformed and missing data -----------------------------------------------------------------


def _write_dir(tmp_path: Path, queries: list[dict], docs: list[dict]) -> Path:
    folder = tmp_path / "loco"
    folder.mkdir()
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return folder


GOOD_Q = {"qid": "q1", "query": "budget meeting", "answer_pids": ["p1"], "dataset": "s"}
GOOD_D = {"pid": "p1", "passage": "the budget was discussed", "dataset": "s"}


def test_data_dir_with_good_rows_loads(tmp_path):
    data = LOCO.load("test", data_dir=_write_dir(tmp_path, [GOOD_Q], [GOOD_D]))
    assert data.provenance["data_source"].startswith("dir:")
    assert len(data.tables["queries"]) == 1


@pytest.mark.parametrize(
    "queries,docs,match",
    [
        ([{k: v for k, v in GOOD_Q.items() if k != "answer_pids"}], [GOOD_D],
         r"queries row 1: field 'answer_pids' is missing"),
        ([{**GOOD_Q, "answer_pids": ["p9"]}], [GOOD_D],
         r"row 1 \(qid 'q1'\): field 'answer_pids' names pid 'p9'"),
        ([GOOD_Q], [{**GOOD_D, "passage": "  "}],
         r"documents row 1 \(pid 'p1'\): field 'passage' is empty"),
        ([GOOD_Q], [GOOD_D, GOOD_D], r"documents row 2: pid 'p1' appears twice"),
        ([{**GOOD_Q, "answer_pids": "p1"}], [GOOD_D], r"'answer_pids' must be list"),
    ],
)  # fmt: skip
def test_malformed_rows_name_row_and_field(tmp_path, queries, docs, match):
    with pytest.raises(DataError, match=match):
        LOCO.load("test", data_dir=_write_dir(tmp_path, queries, docs))


def test_bad_json_line_names_file_and_line(tmp_path):
    folder = _write_dir(tmp_path, [GOOD_Q], [GOOD_D])
    with open(folder / "queries.jsonl", "a") as f:
        f.write('{"qid": "q2", oops}\n')
    with pytest.raises(DataError, match=r"queries.jsonl line 2: not valid JSON"):
        LOCO.load("test", data_dir=folder)


def test_an_empty_file_is_named_as_empty(tmp_path):
    folder = _write_dir(tmp_path, [GOOD_Q], [GOOD_D])
    (folder / "queries.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"queries.jsonl has no rows"):
        LOCO.load("test", data_dir=folder)


def test_missing_files_name_expected_files_and_three_ways(tmp_path):
    with pytest.raises(DataError) as err:
        LOCO.load("test", data_dir=tmp_path)
    msg = str(err.value)
    assert "queries.jsonl" in msg and "documents.jsonl" in msg
    assert "(1) from the hub" in msg and "(2) with --data-dir" in msg and "(3) with --sample" in msg


def test_hub_offline_without_cache_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("M2BENCH_DATA", raising=False)
    with pytest.raises(DataError, match=r"not available from the hub .*--sample"):
        LOCO.load("test")


def test_hub_repo_layout_is_read(tmp_path):
    """--data-dir holding the two hub repos as downloaded (documents/<subtask>_test.jsonl)."""
    for repo, rows in (("LoCoV1-Queries", [GOOD_Q]), ("LoCoV1-Documents", [GOOD_D])):
        sub = tmp_path / repo / "documents"
        sub.mkdir(parents=True)
        (sub / "s_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = LOCO.load("test", data_dir=tmp_path)
    assert [q["qid"] for q in data.tables["queries"]] == ["q1"]


def test_parquet_files_are_read(tmp_path):
    import pandas as pd

    pd.DataFrame([GOOD_Q]).to_parquet(tmp_path / "queries.parquet")
    pd.DataFrame([GOOD_D]).to_parquet(tmp_path / "documents.parquet")
    data = LOCO.load("test", data_dir=tmp_path)
    assert data.tables["documents"][0]["pid"] == "p1"


def test_tampered_sample_is_refused(tmp_path, monkeypatch):
    import m2bench.data as mdata

    copy = tmp_path / "locov1_qmsum"
    shutil.copytree(SAMPLE, copy)
    with open(copy / "queries.jsonl", "a") as f:
        f.write("\n")
    monkeypatch.setattr(mdata, "SAMPLE_ROOT", tmp_path)
    with pytest.raises(DataError, match="sha256"):
        LOCO.load("test", sample=True)
