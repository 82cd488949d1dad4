"""LoCoV1: long-document retrieval, nDCG@10 over 12 subtasks.

Paper: Saad-Falcon et al., "Benchmarking and Building Long-Context Retrieval Models with LoCo and
M2-BERT", arXiv 2402.07440 (2024). Data: hub datasets ``hazyresearch/LoCoV1-Queries`` and
``hazyresearch/LoCoV1-Documents`` (split ``test``), queries ``{qid, query, answer_pids, dataset}``
and documents ``{pid, passage, dataset}``; ``dataset`` names the subtask.

Protocol (as the paper's evaluation code, through BEIR): per subtask, binary qrels from
``answer_pids``; exact search of each query over every document of its subtask (cosine for dense
encoders, the model's own score for lexical ones); nDCG@10 (headline), nDCG@1, nDCG@100 and
recall@100 from pytrec_eval, averaged over queries; the task score is the unweighted mean over
subtasks. Rankings keep the top 100 documents per query.

Deviations: the official code retrieves the top 1000 and skips hits whose id equals the query id
(LoCoV1 ids never collide, so that rule is omitted); m2bench keeps the top 100 (enough for every
metric reported). The hub revision is not pinned to a commit (the commit is logged when online).

Sample (``--sample``): the real QMSum test split in LoCoV1's format (35 transcripts, 281 queries;
MIT / CC BY 4.0, see ``tasks/data/locov1_qmsum/SOURCE.md``); one document per meeting, so its
scores are not comparable with the paper's QMSum column.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from m2bench import data as mdata
from m2bench import timing
from m2bench.encoding import encode, prepare
from m2bench.errors import DataError
from m2bench.losses import multiple_negatives_ranking_loss, orthogonal_projection_loss
from m2bench.metrics import mean_scores, retrieval_scores
from m2bench.registry import register_task
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec

log = logging.getLogger(__name__)

QUERIES_REPO = "hazyresearch/LoCoV1-Queries"
DOCUMENTS_REPO = "hazyresearch/LoCoV1-Documents"
SUBTASKS = (
    "summ_screen_fd", "gov_report", "qmsum", "qasper_title", "qasper_abstract", "multifieldqa",
    "2wikimqa", "passage_retrieval", "legal_case_reports", "courtlistener_HTML",
    "courtlistener_Plain_Text", "stackoverflow",
)  # fmt: skip
LOSSES = ("opl", "mnrl")
TOP_K = 100
LATENCY_QUERIES = 16  # single-query latency is the median over this many queries per subtask

SPEC = TaskSpec(
    name="locov1",
    version=1,
    kind="retrieval",
    metric="ndcg_at_10",
    higher_is_better=True,
    metrics=("ndcg_at_10", "ndcg_at_1", "ndcg_at_100", "recall_at_100"),
    source=DataSource(
        hf=f"{QUERIES_REPO},{DOCUMENTS_REPO}",
        revision="main",
        license="per subtask (see the LoCoV1 dataset cards); sample: MIT / CC BY 4.0",
        sample="locov1_qmsum",
        sample_sha256=(
            ("documents.jsonl", "62aea282a6216778a6b37817165b0e8d489d0e63abd8704a2bd8ccce071469d4"),
            ("queries.jsonl", "0aa285ec737c3115fead92a0ab58da73d17c1087849221dc6500cc4420e304f1"),
        ),
        citation="arXiv 2402.07440",
    ),
    default_models=("bm25", "minilm_l6", "m2_bert_80m_2k_retrieval"),
    model_kinds=("text_encoder", "lexical"),
    sample_size=281,
    subtasks=SUBTASKS,
    description="long-document retrieval, 12 subtasks, nDCG@10",
)

QUERY_FIELDS = {"qid": str, "query": str, "answer_pids": list, "dataset": str}
DOC_FIELDS = {"pid": str, "passage": str, "dataset": str}
HOW_TO_PROVIDE = (
    f"provide it (1) from the hub ({QUERIES_REPO}, {DOCUMENTS_REPO}) online or via the HF cache, "
    "(2) with --data-dir DIR holding queries.jsonl and documents.jsonl (or .parquet, or the two "
    "hub repos' folders), or (3) with --sample for the bundled QMSum sample"
)


# --- loading ---------------------------------------------------------------------------------


def _local_files(folder: Path) -> tuple[list[Path], list[Path]]:
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


def _read_local(paths: list[Path]) -> list[dict[str, Any]]:
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
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {lineno}: expected a JSON object per line")
    raise DataError(f"cannot read {paths[0]}: rows have inconsistent fields or types")


def _read_hub(revision: str) -> tuple[list[dict], list[dict], str]:
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
        revs.append(_hub_commit(repo, revision) or f"{revision} (fingerprint {ds._fingerprint})")
    return tables[0], tables[1], ",".join(revs)


def _hub_commit(repo: str, revision: str) -> str | None:
    if mdata.is_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo, revision=revision).sha
    except Exception:  # offline or rate-limited: the fingerprint stands in
        return None


def _validate(queries: list[dict], docs: list[dict], where: tuple[str, str]) -> None:
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


def _select(queries: list[dict], docs: list[dict], subtask: str | None, limit: int | None):
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


# --- retrieval indexes -----------------------------------------------------------------------


class _DenseIndex:
    """Exact cosine search over a subtask's document embeddings."""

    def __init__(self, model: Any, ctx: EvalContext) -> None:
        self.model, self.ctx = model, ctx
        self.truncated = 0

    def add(self, texts: list[str], progress: Any = None) -> int:
        enc = encode(
            self.model,
            texts,
            batch_size=self.ctx.batch_size,
            device=self.ctx.device,
            precision=self.ctx.precision,
            progress=progress,
        )
        self.truncated = enc.truncated
        self.docs = torch.nn.functional.normalize(enc.embeddings, dim=-1).to(self.ctx.device)
        return enc.tokens

    def search(self, texts: list[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = encode(
            self.model,
            texts,
            batch_size=self.ctx.batch_size,
            device=self.ctx.device,
            precision=self.ctx.precision,
        )
        q = torch.nn.functional.normalize(enc.embeddings, dim=-1).to(self.ctx.device)
        scores, idx = torch.topk(q @ self.docs.T, k=min(k, self.docs.shape[0]), dim=1)
        return scores.cpu(), idx.cpu()


class _LexicalIndex:
    """A lexical model's own index (e.g. BM25) behind the same two calls."""

    def __init__(self, model: Any, ctx: EvalContext) -> None:
        self.model = model
        self.truncated = 0

    def add(self, texts: list[str], progress: Any = None) -> int:
        tokens = self.model.index(texts)
        if progress is not None:
            progress.update(len(texts))
        return tokens

    def search(self, texts: list[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores, idx = self.model.search(texts, k=min(k, self.model.n_docs))
        return torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(idx)


# --- retrieval fine-tuning (m2bench train) ---------------------------------------------------


def training_examples(
    data: LoadedData, *, loss: str = "opl", negatives: int = 32, seed: int = 0
) -> list[dict[str, Any]]:
    """Training examples in the LoCo paper's format (arXiv 2402.07440, A.3; official code).

    Per query and relevant passage, ``negatives`` passages are drawn uniformly, without
    replacement, from the same subtask's other documents (``#docs - 2`` when the subtask has no
    more than ``negatives`` documents). OPL: each draw emits ``(q, d+, 1.0)`` and ``(q, d-, 0.0)``,
    so the positive pair appears once per negative. MNRL: each draw emits ``(q, d+, d-)``.
    """
    if loss not in LOSSES:
        raise DataError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    rng = random.Random(seed)
    docs = data.tables["documents"]
    by_pid = {d["pid"]: d["passage"] for d in docs}
    by_task: dict[str, list[str]] = {}
    for d in docs:
        by_task.setdefault(d["dataset"], []).append(d["pid"])
    out: list[dict[str, Any]] = []
    for q in data.tables["queries"]:
        pool = by_task[q["dataset"]]
        n = negatives if len(pool) > negatives else max(0, len(pool) - 2)
        candidates = [p for p in pool if p not in set(q["answer_pids"])]
        for pos in q["answer_pids"]:
            for neg in rng.sample(candidates, min(n, len(candidates))):
                if loss == "opl":
                    out.append({"query": q["query"], "passage": by_pid[pos], "label": 1.0})
                    out.append({"query": q["query"], "passage": by_pid[neg], "label": 0.0})
                else:
                    out.append(
                        {"query": q["query"], "passage": by_pid[pos], "negative": by_pid[neg]}
                    )
    return out


def batches(
    examples: list[dict[str, Any]],
    *,
    batch_size: int,
    model: Any,
    device: torch.device,
    epoch: int = 0,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Shuffled micro-batches of tokenized queries and passages (a new order each epoch)."""
    order = list(range(len(examples)))
    random.Random(seed + epoch).shuffle(order)
    for start in range(0, len(order), batch_size):
        rows = [examples[i] for i in order[start : start + batch_size]]
        batch = {
            "q": prepare(model, [r["query"] for r in rows], device),
            "d": prepare(model, [r["passage"] for r in rows], device),
            "n": len(rows),
        }
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows], device=device)
        else:
            batch["neg"] = prepare(model, [r["negative"] for r in rows], device)
        yield batch


def loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """OPL when the batch has labels, else MNRL over positives, in-batch and sampled negatives."""
    q, d = model.embed(batch["q"]), model.embed(batch["d"])
    if "labels" in batch:
        return orthogonal_projection_loss(q, d, batch["labels"])
    return multiple_negatives_ranking_loss(q, torch.cat([d, model.embed(batch["neg"])]))


# --- the task --------------------------------------------------------------------------------


@register_task(SPEC)
class LoCoV1:
    """LoCoV1 task plugin (evaluation only)."""

    def load(
        self,
        split: str = "test",
        *,
        limit: int | None = None,
        data_dir: str | Path | None = None,
        sample: bool = False,
        subtask: str | None = None,
        revision: str | None = None,
    ) -> LoadedData:
        """Queries and documents of ``split`` with provenance; see the module docstring."""
        if split != "test":
            raise DataError(f"LoCoV1 has only the 'test' split (asked for {split!r})")
        root = mdata.data_root()
        if data_dir is None and not sample and root is not None and (root / "locov1").is_dir():
            data_dir = root / "locov1"
        if sample:
            folder = mdata.sample_dir(SPEC.source.sample)
            digest = mdata.verify_files(folder, SPEC.source.sample_sha256)
            with mdata.offline():
                queries = _read_local([folder / "queries.jsonl"])
                docs = _read_local([folder / "documents.jsonl"])
            source, rev, where = f"sample:{SPEC.source.sample}", f"sha256:{digest}", folder
        elif data_dir is not None:
            folder = Path(data_dir).expanduser()
            if not folder.is_dir():
                raise DataError(f"--data-dir {folder} is not a folder; " + HOW_TO_PROVIDE)
            qfiles, dfiles = _local_files(folder)
            queries, docs = _read_local(qfiles), _read_local(dfiles)
            digest = mdata.files_digest(qfiles + dfiles)
            source, rev, where = f"dir:{folder.resolve()}", f"sha256:{digest}", folder
        else:
            queries, docs, rev = _read_hub(revision or SPEC.source.revision)
            source, where = f"hf:{SPEC.source.hf}", Path("hub")
        names = (f"{where}/queries", f"{where}/documents")
        _validate(queries, docs, names)
        queries, docs = _select(queries, docs, subtask, limit)
        if not queries:
            raise DataError(f"LoCoV1 data in {where} has no queries; " + HOW_TO_PROVIDE)
        prov = {
            "data_source": source,
            "data_revision": rev,
            "n_queries": str(len(queries)),
            "n_documents": str(len(docs)),
        }
        return LoadedData({"queries": queries, "documents": docs}, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Retrieve for every query of every subtask, score with pytrec_eval, write rankings."""
        from tqdm.auto import tqdm

        queries, docs = data.tables["queries"], data.tables["documents"]
        subtasks = sorted({q["dataset"] for q in queries})
        metrics: dict[str, float] = {}
        summary: dict[str, float] = {}
        totals = {"docs": 0, "tokens": 0, "index_s": 0.0, "queries": 0, "search_s": 0.0}
        latencies, truncated = [], 0
        lines: list[str] = []
        bar = tqdm(
            total=len(docs),
            desc=f"{model.spec.name}: encode documents",
            unit="doc",
            disable=not ctx.progress,
            leave=False,
        )
        for sub in subtasks:
            sub_docs = [d for d in docs if d["dataset"] == sub]
            sub_q = [q for q in queries if q["dataset"] == sub]
            index = (_LexicalIndex if model.spec.kind == "lexical" else _DenseIndex)(model, ctx)
            with timing.Stopwatch(ctx.device) as sw:
                totals["tokens"] += index.add([d["passage"] for d in sub_docs], progress=bar)
            totals["index_s"] += sw.seconds
            with timing.Stopwatch(ctx.device) as sw:
                scores, idx = index.search([q["query"] for q in sub_q], TOP_K)
            totals["search_s"] += sw.seconds
            totals["docs"] += len(sub_docs)
            totals["queries"] += len(sub_q)
            truncated += index.truncated
            n_lat = min(LATENCY_QUERIES, len(sub_q))
            latencies.append(
                timing.latency_ms(
                    lambda i, idx_=index, q_=sub_q: idx_.search([q_[i]["query"]], TOP_K),
                    n_lat,
                    ctx.device,
                )
            )
            run, qrels = {}, {}
            for qi, q in enumerate(sub_q):
                ranked = [
                    (sub_docs[int(j)]["pid"], float(s))
                    for s, j in zip(scores[qi], idx[qi], strict=True)
                ]
                run[q["qid"]] = dict(ranked)
                qrels[q["qid"]] = {pid: 1 for pid in q["answer_pids"]}
                lines += [
                    f"{q['qid']} Q0 {pid} {r} {s:.6f} {model.spec.name}"
                    for r, (pid, s) in enumerate(ranked, 1)
                ]
            sub_scores = mean_scores(retrieval_scores(qrels, run, SPEC.metrics))
            metrics.update({f"{sub}/{m}": v for m, v in sub_scores.items()})
            metrics[f"{sub}/n_eval"] = float(len(sub_q))
            metrics[f"{sub}/n_documents"] = float(len(sub_docs))
            summary[sub] = sub_scores[SPEC.metric]
        bar.close()
        for m in SPEC.metrics:
            metrics[m] = sum(metrics[f"{s}/{m}"] for s in subtasks) / len(subtasks)
        metrics["n_eval"] = float(totals["queries"])
        Path(ctx.out_dir, "rankings.trec").write_text("\n".join(lines) + "\n")
        rate = timing.Throughput.of(totals["docs"], totals["tokens"], totals["index_s"])
        perf = {
            "perf/docs_per_s": rate.items_per_s,
            "perf/tokens_per_s": rate.tokens_per_s,
            "perf/queries_per_s": totals["queries"] / max(totals["search_s"], 1e-9),
            "perf/query_latency_ms": sorted(latencies)[len(latencies) // 2],
            "perf/docs_truncated": float(truncated),
            "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device),
        }
        return EvalOutput(metrics, perf, summary)

    # fine-tuning contract of `m2bench train` (module functions above)
    training_examples = staticmethod(training_examples)
    batches = staticmethod(batches)
    loss = staticmethod(loss)
