"""Retrieval fine-tuning: losses by hand, the LoCo negative sampling, the loop, `m2bench train`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench import loop, tracking
from m2bench.checkpoints import load_pretrained
from m2bench.errors import ModelFailure
from m2bench.losses import multiple_negatives_ranking_loss, orthogonal_projection_loss
from m2bench.registry import get_task

REPO = Path(__file__).resolve().parent.parent
LOCO = get_task("locov1")


def test_opl_by_hand():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    d = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    expected = (0.0 + 0.0 + (1 - 1 / math.sqrt(2)) ** 2) / 3
    assert orthogonal_projection_loss(q, d, y).item() == pytest.approx(expected)


def test_mnrl_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # two positives, one extra negative
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.e / (math.e + 1 + math.exp(c)))
    row1 = -math.log(math.e / (1 + math.e + math.exp(c)))
    got = multiple_negatives_ranking_loss(q, d, scale=1.0).item()
    assert got == pytest.approx((row0 + row1) / 2)


@pytest.fixture(scope="module")
def sample():
    return LOCO.load("test", sample=True)


def test_training_examples_follow_the_loco_recipe(sample):
    ex = LOCO.training_examples(sample, loss="opl", negatives=32, seed=1)
    assert len(ex) == 281 * 32 * 2  # 35 documents > 32: 32 draws, each a positive and a negative
    by_passage = {d["passage"]: d["pid"] for d in sample.tables["documents"]}
    first_q = sample.tables["queries"][0]
    rows = [e for e in ex if e["query"] == first_q["query"]]
    negs = [by_passage[e["passage"]] for e in rows if e["label"] == 0.0]
    assert len(negs) == len(set(negs)) == 32  # without replacement
    assert first_q["answer_pids"][0] not in negs
    assert all(
        by_passage[e["passage"]] == first_q["answer_pids"][0] for e in rows if e["label"] == 1.0
    )
    mnrl = LOCO.training_examples(sample, loss="mnrl", negatives=4, seed=1)
    assert len(mnrl) == 281 * 4 and set(mnrl[0]) == {"query", "passage", "negative"}


def test_small_subtasks_use_docs_minus_two(sample):
    docs = sample.tables["documents"][:4]
    queries = [q for q in sample.tables["queries"] if q["answer_pids"][0] == docs[0]["pid"]][:1]
    data = type(sample)({"queries": queries, "documents": docs}, sample.provenance)
    assert len(LOCO.training_examples(data, loss="mnrl", negatives=32)) == 2


def test_schedule_and_nan_guard():
    cfg = loop.TrainConfig(grad_accum=4, epochs=2.5, max_steps=None)
    assert loop.total_steps(cfg, 10) == math.ceil(2.5 * 10 / 4)
    assert loop.total_steps(loop.TrainConfig(max_steps=3), 1000) == 3
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ModelFailure, match="training loss is nan"):
        loop.train(
            model,
            lambda e: [0, 1],
            lambda m, b: m.weight.sum() * float("nan"),
            2,
            loop.TrainConfig(grad_accum=1),
            device=torch.device("cpu"),
            progress=False,
        )


def test_opl_loss_falls_on_real_pairs(sample):
    from m2bench.registry import create_model

    torch.manual_seed(0)
    model = create_model("m2_bert_tiny_retrieval")
    ex = LOCO.training_examples(sample, loss="opl", negatives=4, seed=0)
    res = loop.train(
        model,
        lambda e: LOCO.batches(ex, batch_size=16, model=model, device=torch.device("cpu"), epoch=e),
        LOCO.loss, len(ex) // 16 + 1,
        loop.TrainConfig(lr=3e-3, grad_accum=1, max_steps=40, warmup_frac=0.0),
        device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    assert res.steps == 40
    assert sum(res.losses[-10:]) / 10 < 0.8 * sum(res.losses[:5]) / 5


@pytest.mark.slow
def test_m2bench_train_improves_held_out_retrieval(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    subprocess.run([sys.executable, str(REPO / "scripts/make_holdout_split.py"),
                    str(REPO / "tasks/data/locov1_qmsum"), "split"], check=True,
                   capture_output=True)  # fmt: skip
    common = ["--model", "m2_bert_tiny_retrieval", "--init", "random", "--no-progress"]
    res = CliRunner().invoke(main, ["run", "--task", "locov1", "--data-dir", "split/eval",
                                    *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["train", "--task", "locov1", "--train-data", "split/train",
                                    "--eval-data", "split/eval", "--loss", "mnrl", "--negatives",
                                    "2", "--batch-size", "16", "--epochs", "2", "train.lr=3e-3",
                                    "train.grad_accum=1", *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    runs = tracking.search_runs().sort_values("start_time")
    untrained, trained = runs[runs["tags.stage"] == "eval"]["metrics.ndcg_at_10"]
    assert trained > untrained + 0.1, (untrained, trained)
    train_run = runs[runs["tags.stage"] == "train"].iloc[0]
    history = tracking._client(tracking.tracking_uri()).get_metric_history(
        train_run["run_id"], "train/loss"
    )
    assert len(history) == train_run["metrics.train/steps"] == 40
    assert history[-1].value < 0.6 * history[0].value
    # the saved checkpoint is in the official layout and loads through load_pretrained
    ckpt = tmp_path / "runs/locov1/m2_bert_tiny_retrieval/checkpoint"
    assert json.loads((ckpt / "config.json").read_text())["hidden_size"] == 32
    model = load_pretrained(ckpt, model_name="m2_bert_tiny_retrieval")
    assert model.config.d_model == 32
    CliRunner().invoke(main, ["leaderboard", "--out", "lb.csv"])
    lb = pd.read_csv("lb.csv")
    assert len(lb) == 2 and set(lb["init"]) == {"random", "pretrained"}  # no training row
    assert lb.iloc[0]["weights_source"] == str(ckpt.resolve())
