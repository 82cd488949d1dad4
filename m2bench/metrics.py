"""Metric functions. Pure: inputs in, numbers out; no model or task knowledge.

Retrieval metrics are computed with pytrec_eval (the trec_eval implementation that BEIR and MTEB
use), so nDCG ties and cut-offs follow trec_eval exactly: documents with equal scores are ordered by
document id, descending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: m2bench metric name -> trec_eval measure
TREC_MEASURES = {
    "ndcg_at_1": "ndcg_cut_1",
    "ndcg_at_10": "ndcg_cut_10",
    "ndcg_at_100": "ndcg_cut_100",
    "recall_at_100": "recall_100",
}


def retrieval_scores(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = tuple(TREC_MEASURES),
) -> dict[str, dict[str, float]]:
    """Per-query retrieval metrics.

    Args:
        qrels: ``{qid: {doc_id: relevance}}`` (binary or graded).
        run: ``{qid: {doc_id: score}}``, the retrieved documents of each query (any order).
        metrics: names from ``TREC_MEASURES``.

    Returns:
        ``{qid: {metric: value}}`` for every qid of ``qrels``; a query without retrieved
        documents scores 0 (trec_eval would silently leave it out of the mean).
    """
    import pytrec_eval

    unknown = [m for m in metrics if m not in TREC_MEASURES]
    if unknown:
        raise ValueError(f"unknown retrieval metrics {unknown}; known: {list(TREC_MEASURES)}")
    measures = {
        TREC_MEASURES[m].rsplit("_", 1)[0] + "." + TREC_MEASURES[m].rsplit("_", 1)[1]
        for m in metrics
    }
    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(d) for q, d in qrels.items()}, measures)
    per_query = evaluator.evaluate({q: {d: float(s) for d, s in r.items()} for q, r in run.items()})
    return {
        qid: {m: float(per_query.get(qid, {}).get(TREC_MEASURES[m], 0.0)) for m in metrics}
        for qid in qrels
    }


def mean_scores(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over queries (every query weighs the same)."""
    if not per_query:
        return {}
    names = next(iter(per_query.values())).keys()
    n = len(per_query)
    return {m: sum(q[m] for q in per_query.values()) / n for m in names}
