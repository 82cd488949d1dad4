"""Metric functions. Pure: inputs in, numbers out; no model or task knowledge.

Retrieval metrics are computed with pytrec_eval (the trec_eval implementation that BEIR and MTEB
use), so nDCG ties and cut-offs follow trec_eval exactly: documents with equal scores are ordered by
document id, descending.

GLUE metrics are computed with scikit-learn (accuracy, F1, Matthews correlation) and scipy
(Pearson, Spearman); ``glue_task_score`` and ``glue_average`` follow the official M2 GLUE code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


# --- GLUE ------------------------------------------------------------------------------------

#: metric values that make up each GLUE task score, as in the official M2 code (the metrics each
#: fine-tuning job reports); MNLI's two dev sets are prefixed ``matched_``/``mismatched_``
GLUE_SCORE_METRICS = {
    "cola": ("matthews_corr",),
    "sst2": ("accuracy",),
    "mrpc": ("f1",),
    "qqp": ("accuracy", "f1"),
    "stsb": ("spearman",),
    "mnli": ("matched_accuracy", "mismatched_accuracy"),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}
#: the tasks of the GLUE average (WNLI excluded, as in the M2 code)
GLUE_AVERAGE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")


def glue_metrics(
    subtask: str, labels: Sequence[float], predictions: Sequence[float]
) -> dict[str, float]:
    """Metrics of one GLUE dev set, as fractions (not x100).

    CoLA ``matthews_corr``; MRPC and QQP ``f1`` (positive class 1: equivalent / duplicate) and
    ``accuracy``; STS-B ``pearson`` and ``spearman``; SST-2, MNLI (each dev set), QNLI, RTE and
    WNLI ``accuracy``. A constant label or prediction vector has correlation 0 (scipy would give
    NaN; 0 is also what scikit-learn's Matthews correlation gives then), and F1 with no positive
    prediction or label is 0.

    Args:
        subtask: GLUE subtask name (``cola``, ``sst2``, ...).
        labels: gold labels (class ids; STS-B scores).
        predictions: predicted class ids (STS-B: predicted scores), one per label.

    Raises:
        ValueError: unknown subtask, empty input, lengths differ, or non-finite STS-B predictions.
    """
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if subtask not in GLUE_SCORE_METRICS:
        raise ValueError(f"unknown GLUE subtask {subtask!r}; known: {list(GLUE_SCORE_METRICS)}")
    if len(labels) != len(predictions) or len(labels) == 0:
        raise ValueError(
            f"{subtask}: need one prediction per label and at least one row "
            f"({len(labels)} labels, {len(predictions)} predictions)"
        )
    y, p = np.asarray(labels), np.asarray(predictions)
    if subtask == "stsb":
        y, p = y.astype(float), p.astype(float)
        if not (np.isfinite(y).all() and np.isfinite(p).all()):
            raise ValueError("stsb: labels and predictions must be finite numbers")
        return {
            "pearson": _correlation("pearson", y, p),
            "spearman": _correlation("spearman", y, p),
        }
    if subtask == "cola":
        return {"matthews_corr": float(matthews_corrcoef(y, p))}
    out = {"accuracy": float(accuracy_score(y, p))}
    if subtask in ("mrpc", "qqp"):
        out = {"f1": float(f1_score(y, p, pos_label=1, zero_division=0.0)), **out}
    return out


def _correlation(kind: str, y: Any, p: Any) -> float:
    from scipy import stats

    if len(y) < 2 or y.min() == y.max() or p.min() == p.max():
        return 0.0
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    return float(fn(y, p)[0])


def glue_task_score(subtask: str, metrics: Mapping[str, float]) -> float:
    """The M2 code's score of one GLUE task (one seed): mean of its metric values, x100.

    The values averaged are those the official job reports (``GLUE_SCORE_METRICS``): CoLA
    Matthews correlation; SST-2, QNLI, RTE, WNLI accuracy; MRPC F1 only; QQP mean(accuracy, F1);
    STS-B Spearman only; MNLI mean(matched accuracy, mismatched accuracy), given as
    ``matched_accuracy`` and ``mismatched_accuracy``. Other keys of ``metrics`` are ignored. The
    mean over seeds is taken by the caller (equal to the M2 code's mean over all values, since
    every seed reports the same metrics).

    Args:
        subtask: GLUE subtask name.
        metrics: metric name -> value as a fraction, from ``glue_metrics``.

    Raises:
        ValueError: unknown subtask or a needed metric is missing.
    """
    if subtask not in GLUE_SCORE_METRICS:
        raise ValueError(f"unknown GLUE subtask {subtask!r}; known: {list(GLUE_SCORE_METRICS)}")
    keys = GLUE_SCORE_METRICS[subtask]
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise ValueError(f"{subtask} task score needs metrics {list(keys)}; missing {missing}")
    return 100.0 * sum(float(metrics[k]) for k in keys) / len(keys)


def glue_average(task_scores: Mapping[str, float], *, partial: bool = False) -> float:
    """The GLUE average of the M2 code: unweighted mean of the 8 task scores, WNLI excluded.

    Args:
        task_scores: subtask -> task score (``glue_task_score``, x100, mean over seeds); a
            ``wnli`` entry is ignored.
        partial: allow a mean over a subset of the 8 tasks (not comparable with published
            GLUE averages); by default every one of them is required.

    Raises:
        ValueError: an unknown task, no task, or (without ``partial``) a missing task.
    """
    scores = {t: float(v) for t, v in task_scores.items() if t != "wnli"}
    unknown = sorted(set(scores) - set(GLUE_AVERAGE_TASKS))
    if unknown:
        raise ValueError(f"unknown GLUE tasks {unknown}; known: {list(GLUE_AVERAGE_TASKS)}")
    missing = [t for t in GLUE_AVERAGE_TASKS if t not in scores]
    if not scores or (missing and not partial):
        raise ValueError(
            f"the GLUE average needs the scores of {', '.join(GLUE_AVERAGE_TASKS)}; missing "
            f"{', '.join(missing)} (partial=True averages the tasks given)"
        )
    return sum(scores.values()) / len(scores)


def topk_accuracy(
    labels: Sequence[int], scores: Any, ks: Sequence[int] = (1, 5), num_classes: int | None = None
) -> dict[str, float]:
    """Top-k accuracy in percent (as timm reports it), with scikit-learn.

    Args:
        labels: true class of each example.
        scores: (N, C) class scores (logits or probabilities).
        ks: the k of each ``top<k>`` metric.
        num_classes: C, so that classes absent from ``labels`` still count as wrong answers.

    Returns:
        ``{"top1": ..., "top5": ...}``.
    """
    import numpy as np
    from sklearn.metrics import top_k_accuracy_score

    scores = np.asarray(scores, dtype=np.float64)
    classes = np.arange(num_classes if num_classes is not None else scores.shape[1])
    if scores.shape[1] == 2:  # scikit-learn takes two classes as one column, P(class 1)
        scores = 1.0 / (1.0 + np.exp(scores[:, 0] - scores[:, 1]))
    return {
        f"top{k}": 100.0 * float(top_k_accuracy_score(labels, scores, k=k, labels=classes))
        for k in ks
    }


def point_errors(truth: Any, pred: Any) -> dict[str, float]:
    """MSE and MAE over every entry (forecasting, imputation), with scikit-learn."""
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    y, p = np.asarray(truth, dtype=np.float64).ravel(), np.asarray(pred, dtype=np.float64).ravel()
    return {"mse": float(mean_squared_error(y, p)), "mae": float(mean_absolute_error(y, p))}
