"""GLUE metrics, task score and average against hand-computed values."""

from __future__ import annotations

import math

import pytest

from m2bench.metrics import glue_average, glue_metrics, glue_task_score


def _pairs(tp: int, tn: int, fp: int, fn: int) -> tuple[list[int], list[int]]:
    """Labels and predictions with the given binary confusion matrix (positive class 1)."""
    labels = [1] * tp + [0] * tn + [0] * fp + [1] * fn
    preds = [1] * tp + [0] * tn + [1] * fp + [0] * fn
    return labels, preds


def test_cola_matthews_by_hand() -> None:
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 1) / sqrt(4*4*3*3) = 5/12
    labels, preds = _pairs(tp=3, tn=2, fp=1, fn=1)
    assert glue_metrics("cola", labels, preds) == {"matthews_corr": pytest.approx(5 / 12)}


def test_matthews_of_constant_predictions_is_zero() -> None:
    assert glue_metrics("cola", [0, 1, 1, 0], [1, 1, 1, 1])["matthews_corr"] == 0.0


@pytest.mark.parametrize("subtask", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_tasks(subtask: str) -> None:
    labels = [0, 1, 1, 0, 1, 0, 1]
    preds = [0, 1, 0, 0, 1, 1, 1]  # 5 of 7 right
    assert glue_metrics(subtask, labels, preds) == {"accuracy": pytest.approx(5 / 7)}


def test_mnli_three_classes() -> None:
    assert glue_metrics("mnli", [0, 1, 2, 2], [0, 2, 2, 1]) == {"accuracy": 0.5}


@pytest.mark.parametrize("subtask", ["mrpc", "qqp"])
def test_f1_and_accuracy_by_hand(subtask: str) -> None:
    # precision 2/3, recall 2/4 -> F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7; accuracy (2+1)/6
    labels, preds = _pairs(tp=2, tn=1, fp=1, fn=2)
    out = glue_metrics(subtask, labels, preds)
    assert out == {"f1": pytest.approx(4 / 7), "accuracy": pytest.approx(0.5)}


def test_f1_without_positives_is_zero() -> None:
    assert glue_metrics("mrpc", [0, 0, 1], [0, 0, 0])["f1"] == 0.0


def test_stsb_pearson_and_spearman_by_hand() -> None:
    # x = 1,2,3; y = 1,2,4: deviations (-1,0,1), (-4/3,-1/3,5/3) -> r = 3 / (sqrt(2) sqrt(42)/3)
    out = glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert out["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert out["spearman"] == pytest.approx(1.0)
    # ranks (1,2,3) vs (3,1,2): 1 - 6 * (4+1+1) / (3 * 8) = -0.5
    assert glue_metrics("stsb", [1.0, 2.0, 3.0], [3.0, 1.0, 2.0])["spearman"] == pytest.approx(-0.5)


def test_stsb_constant_predictions_correlate_zero() -> None:
    assert glue_metrics("stsb", [1.0, 2.5, 4.0], [2.0, 2.0, 2.0]) == {
        "pearson": 0.0,
        "spearman": 0.0,
    }


def test_stsb_rejects_nan_predictions() -> None:
    with pytest.raises(ValueError, match="finite"):
        glue_metrics("stsb", [1.0, 2.0], [float("nan"), 1.0])


@pytest.mark.parametrize(
    ("subtask", "labels", "preds", "match"),
    [
        ("cola", [0, 1], [0], "one prediction per label"),
        ("rte", [], [], "at least one row"),
        ("glu", [0], [0], "unknown GLUE subtask"),
    ],
)
def test_glue_metrics_bad_input(subtask: str, labels: list, preds: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        glue_metrics(subtask, labels, preds)


@pytest.mark.parametrize(
    ("subtask", "metrics", "score"),
    [
        ("cola", {"matthews_corr": 0.5}, 50.0),
        ("sst2", {"accuracy": 0.9}, 90.0),
        ("mrpc", {"f1": 0.9, "accuracy": 0.8}, 90.0),  # F1 only
        ("qqp", {"accuracy": 0.9, "f1": 0.8}, 85.0),  # mean(acc, F1)
        ("stsb", {"pearson": 0.9, "spearman": 0.88}, 88.0),  # Spearman only
        ("mnli", {"matched_accuracy": 0.84, "mismatched_accuracy": 0.85}, 84.5),
        ("qnli", {"accuracy": 0.91}, 91.0),
        ("rte", {"accuracy": 0.7}, 70.0),
        ("wnli", {"accuracy": 0.5634}, 56.34),
    ],
)
def test_glue_task_score(subtask: str, metrics: dict, score: float) -> None:
    assert glue_task_score(subtask, metrics) == pytest.approx(score)


def test_task_score_from_metrics() -> None:
    labels, preds = _pairs(tp=2, tn=1, fp=1, fn=2)
    assert glue_task_score("qqp", glue_metrics("qqp", labels, preds)) == pytest.approx(
        100 * (4 / 7 + 0.5) / 2
    )


def test_task_score_missing_metric() -> None:
    with pytest.raises(ValueError, match="mismatched_accuracy"):
        glue_task_score("mnli", {"matched_accuracy": 0.8})


SCORES = {"cola": 50, "sst2": 90, "mrpc": 88, "qqp": 86, "stsb": 87, "mnli": 80, "qnli": 89,
          "rte": 70}  # fmt: skip  # sum 640


def test_glue_average_excludes_wnli() -> None:
    assert glue_average(SCORES) == pytest.approx(80.0)
    assert glue_average({**SCORES, "wnli": 56.3}) == pytest.approx(80.0)


def test_glue_average_needs_all_eight_unless_partial() -> None:
    some = {"cola": 50.0, "rte": 70.0, "wnli": 10.0}
    with pytest.raises(ValueError, match="missing sst2, mrpc, qqp, stsb, mnli, qnli"):
        glue_average(some)
    assert glue_average(some, partial=True) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="needs the scores"):
        glue_average({"wnli": 50.0}, partial=True)
    with pytest.raises(ValueError, match="unknown GLUE tasks"):
        glue_average({**SCORES, "mnli_m": 80.0})
