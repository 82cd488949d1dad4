"""Retrieval metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from m2bench.metrics import mean_scores, retrieval_scores


def test_single_relevant_at_rank_two():
    qrels = {"q": {"d1": 1}}
    run = {"q": {"d2": 0.9, "d1": 0.8, "d3": 0.1}}
    s = retrieval_scores(qrels, run)["q"]
    assert s["ndcg_at_1"] == 0.0
    assert s["ndcg_at_10"] == pytest.approx(1 / math.log2(3))
    assert s["ndcg_at_100"] == pytest.approx(1 / math.log2(3))
    assert s["recall_at_100"] == 1.0


def test_two_relevant_and_cutoff():
    # relevant a, b; ranking a, x, b -> DCG = 1 + 1/log2(4); IDCG = 1 + 1/log2(3)
    qrels = {"q": {"a": 1, "b": 1}}
    run = {"q": {"a": 3.0, "x": 2.0, "b": 1.0}}
    s = retrieval_scores(qrels, run)["q"]
    assert s["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert s["ndcg_at_1"] == 1.0
    # a relevant document beyond the 100 retrieved: recall 1/2
    far = {"q": {**{f"x{i}": 100.0 - i for i in range(100)}, "a": -1.0}}
    s = retrieval_scores({"q": {"a": 1, "x0": 1}}, far)["q"]
    assert s["recall_at_100"] == 0.5


def test_query_without_results_counts_as_zero_and_mean_is_per_query():
    qrels = {"q1": {"d": 1}, "q2": {"d": 1}}
    run = {"q1": {"d": 1.0}}  # q2 retrieved nothing
    per_query = retrieval_scores(qrels, run)
    assert per_query["q2"]["ndcg_at_10"] == 0.0
    assert mean_scores(per_query)["ndcg_at_10"] == 0.5


def test_ties_follow_trec_eval_order():
    # equal scores: trec_eval orders by document id, descending ("b" before "a")
    s = retrieval_scores({"q": {"a": 1}}, {"q": {"a": 1.0, "b": 1.0}})["q"]
    assert s["ndcg_at_1"] == 0.0
    assert s["ndcg_at_10"] == pytest.approx(1 / math.log2(3))


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="unknown retrieval metrics"):
        retrieval_scores({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["map_at_7"])
