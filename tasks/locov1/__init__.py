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

import logging
from pathlib import Path
from typing import Any

import torch

from m2bench import data as mdata
from m2bench import timing
from m2bench.encoding import encode
from m2bench.errors import DataError
from m2bench.metrics import mean_scores, retrieval_scores
from m2bench.registry import register_task
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks.locov1 import train
from tasks.locov1.data import (
    DOCUMENTS_REPO,
    HOW_TO_PROVIDE,
    QUERIES_REPO,
    local_files,
    read_hub,
    read_local,
    select,
    validate,
)

log = logging.getLogger(__name__)

SUBTASKS = (
    "summ_screen_fd", "gov_report", "qmsum", "qasper_title", "qasper_abstract", "multifieldqa",
    "2wikimqa", "passage_retrieval", "legal_case_reports", "courtlistener_HTML",
    "courtlistener_Plain_Text", "stackoverflow",
)  # fmt: skip
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

# --- retrieval indexes -----------------------------------------------------------------------


class _DenseIndex:
    """Exact cosine search over a subtask's document embeddings."""

    def __init__(self, model: Any, ctx: EvalContext) -> None:
        self.model, self.ctx = model, ctx
        self.truncated = 0

    def _encode(self, texts: list[str], progress: Any = None) -> Any:
        enc = encode(self.model, texts, batch_size=self.ctx.batch_size, device=self.ctx.device,
                     precision=self.ctx.precision, progress=progress)  # fmt: skip
        unit = torch.nn.functional.normalize(enc.embeddings, dim=-1).to(self.ctx.device)
        return enc, unit

    def add(self, texts: list[str], progress: Any = None) -> int:
        enc, self.docs = self._encode(texts, progress)
        self.truncated = enc.truncated
        return enc.tokens

    def search(self, texts: list[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = self._encode(texts)[1]
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
                queries = read_local([folder / "queries.jsonl"])
                docs = read_local([folder / "documents.jsonl"])
            source, rev, where = f"sample:{SPEC.source.sample}", f"sha256:{digest}", folder
        elif data_dir is not None:
            folder = Path(data_dir).expanduser()
            if not folder.is_dir():
                raise DataError(f"--data-dir {folder} is not a folder; " + HOW_TO_PROVIDE)
            qfiles, dfiles = local_files(folder)
            queries, docs = read_local(qfiles), read_local(dfiles)
            digest = mdata.files_digest(qfiles + dfiles)
            source, rev, where = mdata.dir_source(folder), f"sha256:{digest}", folder
        else:
            queries, docs, rev = read_hub(revision or SPEC.source.revision)
            source, where = f"hf:{SPEC.source.hf}", Path("hub")
        names = (f"{where}/queries", f"{where}/documents")
        validate(queries, docs, names)
        queries, docs = select(queries, docs, subtask, limit)
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
        if model.spec.kind != "lexical":  # first-call costs (CUDA context, FFT plans) untimed
            encode(model, [docs[0]["passage"]], batch_size=1, device=ctx.device,
                   precision=ctx.precision)  # fmt: skip
        # a lexical model runs on the CPU whatever the run's device: its memory is host memory
        mem_device = ctx.device if isinstance(model, torch.nn.Module) else torch.device("cpu")
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
            "perf/peak_mem_gb": timing.peak_memory_gb(mem_device),
        }
        return EvalOutput(metrics, perf, summary)

    # fine-tuning contract of `m2bench train` (module functions above)
    training_examples = staticmethod(train.training_examples)
    batches = staticmethod(train.batches)
    loss = staticmethod(train.loss)
