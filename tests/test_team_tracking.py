"""Concurrent runs: none lost on the team server (PostgreSQL + MLflow), none silently on SQLite.

Each run is a real ``m2bench run`` subprocess (ts-forecast on the bundled ETTh1 sample, two
training steps). The eight runs differ in model and horizon, so each is its own leaderboard row.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench.errors import StoreError

REPO = Path(__file__).resolve().parent.parent
MODELS = ("dlinear", "itransformer_tiny", "itransformer_dense_tiny", "patchtst_dense_tiny")
JOBS = [(m, h, seed) for seed, (m, h) in enumerate((m, h) for m in MODELS for h in ("96", "192"))]
COMPARED = ["rank", "model", "setting", "main_metric", "score", "mse", "mae"]
TIMEOUT_S = 240  # per batch of concurrent runs, on a busy 2-core machine


def _args(model: str, horizon: str, seed: int) -> list[str]:
    fixed = "run --task ts-forecast:ETTh1 --sample --max-steps 2 --no-progress".split()
    return [*fixed, "--model", model, "--pred-len", horizon, "--seed", str(seed)]


def _run_concurrently(jobs: list, cwd: Path, uri: str | None) -> list[tuple[int, str]]:
    """Start every job as an ``m2bench run`` subprocess at once; (exit status, output) of each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    procs = []
    try:
        for job in jobs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(REPO / "cli.py"), *_args(*job)],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
        return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
    finally:
        for p in procs:  # a timeout or error must not leave runs behind
            if p.poll() is None:
                p.kill()
                p.wait()


def _leaderboard(out: Path) -> pd.DataFrame:
    res = CliRunner().invoke(main, ["leaderboard", "--include-sample", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lb = pd.read_csv(out)
    return lb[COMPARED].sort_values(["setting", "model"]).reset_index(drop=True)


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("m2bench/ts-forecast")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def team() -> Iterator:
    """PostgreSQL and an MLflow server on free loopback ports, in a fresh folder; stopped after."""
    from m2bench import team as team_mod

    try:
        team_mod.pg_bin("initdb")
        team_mod.pg_bin("pg_ctl")
    except StoreError as exc:
        pytest.skip(f"PostgreSQL binaries are not installed: {exc}")
    # not under pytest's tmp folder: that is private to root, and the postgres user must enter
    root = Path(tempfile.mkdtemp(prefix="m2bench-team-"))
    root.chmod(0o755)
    try:
        with team_mod.start_team(root, port=team_mod.free_port(), workers=2) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_concurrent_runs_on_team_server_lose_nothing_and_rank_like_sequential_ones(
    team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    outcomes = _run_concurrently(JOBS, tmp_path, team.url)
    for (code, out), job in zip(outcomes, JOBS, strict=True):
        assert code == 0, f"{job}: {out[-2000:]}"
    runs = _runs(team.url)
    assert len(runs) == len(JOBS)
    assert {r.info.status for r in runs} == {"FINISHED"}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    concurrent = _leaderboard(tmp_path / "concurrent.csv")

    # the same runs one after another, in this process, on a fresh embedded store
    seq = tmp_path / "sequential"
    seq.mkdir()
    monkeypatch.chdir(seq)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1)
    try:
        for job in JOBS:
            res = CliRunner().invoke(main, _args(*job), catch_exceptions=False)
            assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(threads)
    sequential = _leaderboard(seq / "sequential.csv")
    pd.testing.assert_frame_equal(concurrent, sequential)
    assert len(concurrent) == len(JOBS)

    # every run kept all it logged: the same params, metrics and tags as its sequential twin
    def keys(run) -> tuple:
        d = run.data
        return (set(d.params), set(d.metrics), set(d.tags) - {"mlflow.log-model.history"})

    twins = {(r.data.tags["model"], r.data.tags["setting"]): r for r in _runs(_sqlite(seq))}
    assert len(twins) == len(JOBS)
    for run in runs:
        twin = twins[(run.data.tags["model"], run.data.tags["setting"])]
        diff = [a ^ b for a, b in zip(keys(run), keys(twin), strict=True)]
        assert not any(diff), (run.data.tags["model"], diff)
        assert run.data.params["seed"] == twin.data.params["seed"]
        assert {"mse", "mae", "params_m", "perf/infer_samples_per_s"} <= set(run.data.metrics)


def _sqlite(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def test_concurrent_runs_on_sqlite_succeed_or_fail_naming_the_lock(tmp_path: Path):
    jobs = JOBS[:4]
    outcomes = _run_concurrently(jobs, tmp_path, None)
    finished = {r.info.run_id for r in _runs(_sqlite(tmp_path)) if r.info.status == "FINISHED"}
    ok = [out for code, out in outcomes if code == 0]
    assert len(finished) == len(ok)  # no run reported done and lost, none recorded and unreported
    for out in ok:
        assert set(re.findall(r"\b[0-9a-f]{32}\b", out)) & finished, out[-2000:]
    for code, out in outcomes:
        if code != 0:
            errors = [line for line in out.splitlines() if "locked" in line]
            assert errors and "m2bench server" in errors[-1], out[-2000:]


def test_lock_retries_then_one_line_error_naming_store_and_fix(monkeypatch: pytest.MonkeyPatch):
    import sqlite3

    from m2bench import tracking

    monkeypatch.setattr(tracking, "LOCK_BACKOFF_S", 0.0)
    calls = []

    def flaky(fails: int):
        calls.append(1)
        if len(calls) <= fails:
            raise RuntimeError("store error") from sqlite3.OperationalError("database is locked")
        return "ok"

    assert tracking._retry_locked("sqlite:///x.db", flaky, 2) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(StoreError) as err:
        tracking._retry_locked("sqlite:///x.db", flaky, 99)
    assert len(calls) == tracking.LOCK_RETRIES + 1
    msg = str(err.value)
    assert "\n" not in msg and "sqlite:///x.db" in msg and "m2bench server" in msg
    calls.clear()
    with pytest.raises(ValueError):  # anything but a lock fails at once, unchanged
        tracking._retry_locked("sqlite:///x.db", lambda: calls.append(1) or int("x"))
    assert len(calls) == 1


def test_server_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import socket

    from m2bench import team as team_mod

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(main, ["server", "--data-dir", str(tmp_path), "--port", str(port)])
    assert res.exit_code == 2
    assert res.output.strip().endswith(
        f"port {port} on 127.0.0.1 is in use; pass another --port for the MLflow server"
    )
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StoreError, match="not writable"):
        team_mod.start_postgres(blocked / "data")
    monkeypatch.setattr(team_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(team_mod.glob, "glob", lambda pattern: [])
    with pytest.raises(StoreError, match="initdb was not found; install PostgreSQL"):
        team_mod.start_postgres(tmp_path / "pg")
