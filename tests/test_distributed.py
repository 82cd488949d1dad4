"""Data-parallel runs: shard arithmetic, and 2 gloo processes under torchrun against 1 process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2bench import distributed
from m2bench.distributed import State

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("n", "world"), [(10, 2), (7, 3), (2, 4), (0, 2), (2785, 8)])
def test_shards_cover_every_item_exactly_once(n, world):
    spans = [distributed.bounds(n, State(r, world)) for r in range(world)]
    covered = [i for lo, hi in spans for i in range(lo, hi)]
    assert covered == list(range(n))  # in order, no gap, no duplicate
    assert max(hi - lo for lo, hi in spans) - min(hi - lo for lo, hi in spans) <= 1


def test_batch_slices_and_weights_recover_the_global_mean(monkeypatch):
    x, y = torch.randn(7, 3), torch.randn(7)
    losses = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "state", lambda r=rank: State(r, 2))
        (xs, ys, tag), weight = distributed.split_batch((x, y, "keep"))
        assert tag == "keep" and len(xs) == len(ys) == (4 if rank == 0 else 3)
        losses.append(((xs.sum(1) - ys) ** 2).mean() * weight)
    # DDP averages over ranks: the mean of the weighted slice losses is the whole batch's loss
    torch.testing.assert_close(sum(losses) / 2, ((x.sum(1) - y) ** 2).mean())


def test_single_process_is_a_no_op():
    assert not distributed.state().active
    batch = {"ids": torch.ones(3, 2)}
    assert distributed.split_batch(batch) == (batch, 1.0)
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and distributed.gather(5) == [5]


def _run(tmp: Path, nproc: int, parallel: str = "ddp") -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    args = ["run", "--task", "ts-forecast:ETTh1", "--sample", "--model", "dlinear", "--max-steps",
            "6", "--device", "cpu", "--out", str(tmp / "runs"), "--no-progress",
            "--parallel", parallel]  # fmt: skip
    if nproc == 1:
        cmd = [sys.executable, "-m", "m2bench", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", "29533", "-m", "m2bench", *args]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads((tmp / "runs/ts-forecast/dlinear/metrics.json").read_text())


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(tmp_path, parallel):
    """Same data order, global batches split over 2 ranks, gradients averaged: the same model."""
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2, parallel)
    assert two["ETTh1/n_eval"] == one["ETTh1/n_eval"] == 256  # every window scored once
    for key in ("mse", "mae", "orig_mse", "train_final_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert two["train/steps"] == one["train/steps"] == 6


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_checkpoints_round_trip_under_torchrun(tmp_path, parallel):
    """Rank 0 writes the gathered full state; each rank restores it into a fresh (sharded) model."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", "29541", str(ROOT / "tests/helpers/ckpt_roundtrip.py"), parallel,
           str(tmp_path / "ckpt")]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.count("OK ") == 2 and (tmp_path / "ckpt/last.pt").is_file()


def test_pile_evaluation_sharded_over_two_ranks_scores_every_token_once():
    script = str(ROOT / "tests/helpers/eval_shards.py")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    one = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29542", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    line = r"OK (\d) (-?[\d.]+) (\d+)"  # the ranks share stdout: their lines may interleave
    ((_, nats1, count1),) = re.findall(line, one.stdout)
    ranks = {rank: (nats, count) for rank, nats, count in re.findall(line, two.stdout)}
    assert int(count1) == 1000 and sorted(ranks) == ["0", "1"]  # every token scored once
    for nats, count in ranks.values():  # every rank holds the totals over both shards
        assert int(count) == 1000 and float(nats) == pytest.approx(float(nats1), rel=1e-6)


def test_ddp_trains_models_with_parameters_no_step_uses():
    """A trainable parameter outside the graph (a Hugging Face pooler under CLS pooling) used to
    fail DDP's second step ("Expected to have finished reduction"; seen with GLUE + minilm_l6
    under torchrun); wrap() now runs DDP with static_graph, and the ranks stay in step."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    env.pop("M2BENCH_DDP_FIND_UNUSED", None)
    script = str(ROOT / "tests/helpers/ddp_unused.py")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29543", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    ranks = dict(re.findall(r"OK (\d) (-?[\d.]+)", two.stdout))  # the ranks' lines may interleave
    assert sorted(ranks) == ["0", "1"] and ranks["0"] == ranks["1"]  # averaged gradients


TRAIN = ["train", "--task", "locov1", "--model", "bm25", "--train-data", "x.jsonl"]


@pytest.mark.parametrize("command", [TRAIN, ["bench", "--model", "m2_bert_tiny"]])
def test_commands_that_are_not_data_parallel_refuse_torchrun(monkeypatch, command):
    from click.testing import CliRunner

    from cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(main, command)
    assert res.exit_code == 2 and "only `m2bench run` is data-parallel" in res.output
