"""The CLI end to end through click's CliRunner, into a throwaway MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench import tracking


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _runs() -> pd.DataFrame:
    tracking._client.cache_clear()
    return tracking.search_runs()


def test_help_on_every_command():
    for cmd in ([], ["run"], ["list"], ["leaderboard"], ["ui"]):
        res = _invoke(*cmd, "--help")
        assert res.exit_code == 0 and "Usage:" in res.output


def test_list_tasks_and_models():
    res = _invoke("list", "tasks")
    assert res.exit_code == 0 and "locov1" in res.output and "ndcg_at_10" in res.output
    res = _invoke("list", "models")
    assert "bm25" in res.output and "minilm_l6" in res.output and "22.71" in res.output


def test_run_bm25_sample_end_to_end_then_leaderboard(store: Path):
    res = _invoke("run", "--task", "locov1", "--sample", "--model", "bm25", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "bm25" in res.output and "FINISHED" in res.output and "ndcg_at_10 (avg)" in res.output

    runs = _runs()
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["status"] == "FINISHED" and r["tags.mlflow.runName"] == "bm25"
    assert r["metrics.qmsum_local/n_eval"] == 281
    assert 0.5 < r["metrics.ndcg_at_10"] <= 1.0
    assert r["metrics.ndcg_at_10"] == r["metrics.qmsum_local/ndcg_at_10"]  # one subtask
    for key in (
        "perf/docs_per_s",
        "perf/tokens_per_s",
        "perf/query_latency_ms",
        "perf/peak_mem_gb",
        "ndcg_at_1",
        "ndcg_at_100",
        "recall_at_100",
    ):
        assert r[f"metrics.{key}"] > 0, key
    for tag in (
        "task_version",
        "data_source",
        "data_revision",
        "git_sha",
        "torch",
        "triton",
        "hardware",
        "precision",
        "bm25_k1",
    ):
        assert r[f"tags.{tag}"], tag
    assert r["tags.sample"] == "true" and r["params.model.k1"] == "1.5"
    assert runs["experiment_id"].nunique() == 1

    out = store / "runs" / "locov1" / "bm25"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ndcg_at_10"] == pytest.approx(r["metrics.ndcg_at_10"])
    ranking = (out / "rankings.trec").read_text().splitlines()
    assert len(ranking) == 281 * 35
    client = tracking._client(tracking.tracking_uri())
    names = {a.path for a in client.list_artifacts(r["run_id"])}
    assert {"config.yaml", "env.txt", "metrics.json", "rankings.trec"} <= names

    # sample runs stay out of the leaderboard unless asked for
    res = _invoke("leaderboard", "--out", "lb.csv")
    assert res.exit_code == 0 and "add --include-sample" in res.output
    assert pd.read_csv(store / "lb.csv").empty
    res = _invoke("leaderboard", "--include-sample", "--out", "lb.csv", "--plot")
    assert res.exit_code == 0, res.output
    first = (store / "lb.csv").read_bytes()
    lb = pd.read_csv(store / "lb.csv")
    assert list(lb["model"]) == ["bm25"] and lb.loc[0, "run_id"] == r["run_id"]
    assert lb.loc[0, "main_metric"] == "ndcg_at_10" and lb.loc[0, "rank"] == 1
    assert (store / "lb_locov1.png").stat().st_size > 1000
    _invoke("leaderboard", "--include-sample", "--out", "lb.csv")
    assert (store / "lb.csv").read_bytes() == first  # regenerating gives the same file


def test_leaderboard_keeps_latest_finished_run_per_model_and_ranks(store: Path):
    """The latest of equal runs wins; a model.<field>= variant is its own row; a --limit run
    is ranked apart and replaces nothing (it scores other data)."""

    def bm25(*args: str) -> None:
        res = _invoke("run", "--task", "locov1", "--sample", "--model", "bm25", "--no-progress",
                      *args)  # fmt: skip
        assert res.exit_code == 0, res.output

    for k1 in ("0.2", "0.2", "1.5"):
        bm25("--limit", "40", f"model.k1={k1}")
    res = _invoke(
        "run", "--task", "locov1", "--sample", "--model", "minilm_l6", "--limit", "40",
        "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    bm25("--limit", "20")
    runs = _runs().sort_values("start_time")
    latest = runs[runs["tags.model_overrides"] == "k1=0.2"].iloc[-1]["run_id"]
    _invoke("leaderboard", "--include-sample", "--out", "lb.csv")
    lb = pd.read_csv(store / "lb.csv", keep_default_na=False)
    top = lb[lb["eval_limit"] == 40]
    assert sorted(zip(top["model"], top["model_overrides"], strict=True)) == [
        ("bm25", "k1=0.2"), ("bm25", "k1=1.5"), ("minilm_l6", "")]  # fmt: skip
    assert top.set_index("model_overrides").loc["k1=0.2", "run_id"] == latest
    assert list(top["rank"]) == [1, 2, 3] and top["score"].is_monotonic_decreasing
    short = lb[lb["eval_limit"] == 20]
    assert list(short["model"]) == ["bm25"] and list(short["rank"]) == [1]


@pytest.mark.slow
def test_minilm_matches_the_independent_sanity_figure(store: Path):
    """all-MiniLM-L6-v2 at 256 tokens scored nDCG@10 = 0.393 on this sample elsewhere."""
    res = _invoke("run", "--task", "locov1", "--sample", "--model", "minilm_l6", "--no-progress")
    assert res.exit_code == 0, res.output
    metrics = json.loads((store / "runs/locov1/minilm_l6/metrics.json").read_text())
    assert metrics["ndcg_at_10"] == pytest.approx(0.393, abs=0.001)
    assert metrics["params_m"] == pytest.approx(22.71, rel=0.02)
    assert _runs().iloc[0]["tags.weights_source"]


# --- bad input: one line, non-zero exit, nothing recorded ---------------------------------------


@pytest.mark.parametrize(
    "args,match",
    [
        (["--task", "locov2"], "unknown task 'locov2'; did you mean 'locov1'"),
        (["--task", "locov1", "--model", "bm26"], "unknown model 'bm26'; did you mean 'bm25'"),
        (["--task", "locov1:gov_report", "--model", "bm25"], "subtask 'gov_report' not in"),
        (["--task", "locov1", "--model", "bm25", "batchsize=3"], "unknown config key 'batchsize'"),
        (["--task", "locov1", "--model", "bm25", "model.k9=1"], "has no setting 'k9'"),
        (["--task", "locov1", "--model", "bm25", "task.revison=x"],
         "unknown locov1 option task.revison; did you mean 'revision'"),
        (["--task", "locov1", "--model", "bm25", "--seeds", "1,2"], "'locov1' does not train"),
        (["--task", "locov1", "--model", "bm25", "batch_size=abc"], "batch_size must be a number"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_records_nothing(store: Path, args, match):
    res = CliRunner().invoke(main, ["run", *args, "--sample", "--no-progress"])
    assert res.exit_code == 2
    assert match in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1
    assert _runs().empty


def test_missing_data_dir_names_files_and_ways(store: Path):
    res = CliRunner().invoke(
        main, ["run", "--task", "locov1", "--model", "bm25", "--data-dir", str(store)]
    )
    assert res.exit_code == 2
    assert "queries.jsonl" in res.output and "--sample" in res.output
    assert _runs().empty


def test_unwritable_out_is_detected_before_compute(store: Path):
    (store / "afile").write_text("")
    res = CliRunner().invoke(
        main,
        [
            "run",
            "--task",
            "locov1",
            "--sample",
            "--model",
            "bm25",
            "--out",
            str(store / "afile" / "sub"),
        ],
    )
    assert res.exit_code == 2 and "--out folder" in res.output
    assert _runs().empty


def test_unwritable_store_is_detected_before_compute(store: Path, monkeypatch):
    (store / "afile").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'afile' / 'mlflow.db'}")
    tracking._client.cache_clear()
    res = CliRunner().invoke(main, ["run", "--task", "locov1", "--sample", "--model", "bm25"])
    assert res.exit_code == 2 and "tracking store" in res.output
    assert not (store / "runs" / "locov1" / "bm25").exists()


def test_failing_models_become_failed_runs_and_the_sweep_goes_on(store: Path, temp_model):
    class NaNEncoder(torch.nn.Module):
        max_length = 8

        def tokenize(self, texts):
            return {
                "input_ids": torch.ones(len(texts), 4, dtype=torch.long),
                "attention_mask": torch.ones(len(texts), 4, dtype=torch.long),
            }

        def embed(self, batch):
            return torch.full((batch["input_ids"].shape[0], 3), float("nan"))

    class OOMEncoder(NaNEncoder):
        def embed(self, batch):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    temp_model("test_nan", "text_encoder", NaNEncoder)
    temp_model("test_oom", "text_encoder", OOMEncoder)
    res = CliRunner().invoke(
        main,
        [
            "run",
            "--task",
            "locov1",
            "--sample",
            "--limit",
            "10",
            "--no-progress",
            "--model",
            "test_nan",
            "--model",
            "test_oom",
            "--model",
            "bm25",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "non-finite embeddings" in res.output and "out of memory" in res.output
    runs = _runs().set_index("tags.model")
    assert runs.loc["test_nan", "status"] == "FAILED"
    assert "non-finite" in runs.loc["test_nan", "tags.error"]
    assert runs.loc["test_oom", "tags.error"].startswith("out of memory")
    assert runs.loc["bm25", "status"] == "FINISHED"
    _invoke("leaderboard", "--include-sample", "--out", "lb.csv")
    assert list(pd.read_csv(store / "lb.csv")["model"]) == ["bm25"]


def test_unavailable_weights_are_skipped_not_run_random(store: Path):
    base = ["run", "--task", "locov1", "--sample", "--limit", "5", "--no-progress"]
    # --checkpoint applies to every model of the sweep; bm25 has no weights: refused up front
    res = CliRunner().invoke(
        main, [*base, "--model", "minilm_l6", "--model", "bm25", "--checkpoint", "org/minilm"]
    )
    assert res.exit_code == 2 and "'bm25' loads no weights" in res.output
    # a path (not a hub id) that does not exist is a typo, not unavailable weights: refused
    res = CliRunner().invoke(main, [*base, "--model", "minilm_l6", "--checkpoint", "/no/x"])
    assert res.exit_code == 2 and "--checkpoint /no/x does not exist" in res.output
    res = CliRunner().invoke(main, [*base, "--model", "minilm_l6", "--init", "random"])
    assert res.exit_code == 2 and "exists only pretrained" in res.output
    res = CliRunner().invoke(
        main,
        [
            *base,
            "--model",
            "minilm_l6",
            "--model",
            "bm25",
            "--model",
            "m2_bert_80m_2k_retrieval",
            "--model",
            "m2_bert_tiny_retrieval",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln.strip()}
    assert "FINISHED" in lines["minilm_l6"] and "FINISHED" in lines["bm25"]
    assert "SKIPPED" in lines["m2_bert_80m_2k_retrieval"]
    assert "hazyresearch/M2-BERT-2k-Retrieval-Encoder-V1" in res.output
    assert "SKIPPED" in lines["m2_bert_tiny_retrieval"] and "--init random" in res.output
    assert sorted(_runs()["tags.model"]) == ["bm25", "minilm_l6"]  # nothing logged for skips


def test_m2_encoder_random_init_and_checkpoint_dir(store: Path):
    from m2bench.checkpoints import save_pretrained
    from m2bench.registry import create_model

    base = [
        "run",
        "--task",
        "locov1",
        "--sample",
        "--limit",
        "20",
        "--no-progress",
        "--model",
        "m2_bert_tiny_retrieval",
    ]
    res = CliRunner().invoke(main, [*base, "--init", "random", "--seed", "3"])
    assert res.exit_code == 0, res.output
    torch.manual_seed(0)
    save_pretrained(create_model("m2_bert_tiny_retrieval"), store / "ckpt")
    res = CliRunner().invoke(main, [*base, "--checkpoint", str(store / "ckpt")])
    assert res.exit_code == 0, res.output
    runs = _runs().sort_values("start_time")
    assert list(runs["status"]) == ["FINISHED", "FINISHED"]
    assert list(runs["tags.init"]) == ["random", "pretrained"]
    assert list(runs["tags.weights_source"]) == ["none", str(store / "ckpt")]
    assert set(runs["tags.padding"]) == {"official"} and set(runs["tags.kernel"]) == {"torch"}
    assert (runs["metrics.qmsum_local/n_eval"] == 20).all()


def test_a_failed_run_leaves_no_earlier_metrics_behind(store: Path):
    base = ["run", "--task", "locov1", "--sample", "--model", "bm25", "--limit", "5",
            "--no-progress"]  # fmt: skip
    assert _invoke(*base).exit_code == 0
    folder = store / "runs/locov1/bm25"
    assert (folder / "metrics.json").is_file() and (folder / "rankings.trec").is_file()
    (folder / "weights.pt").write_bytes(b"kept")
    res = _invoke(*base, "model.k1=abc")  # fails inside BM25 scoring: a FAILED run
    assert res.exit_code == 1, res.output
    assert sorted(p.name for p in folder.iterdir()) == ["weights.pt"]
    assert sorted(_runs()["status"]) == ["FAILED", "FINISHED"]


def test_a_bad_json_line_is_one_line_in_a_fresh_process(tmp_path: Path):
    """datasets logs its failed read (twice) before m2bench's error; only the error is shown."""
    import shutil
    import subprocess
    import sys

    from m2bench.data import sample_dir

    data = tmp_path / "data"
    shutil.copytree(sample_dir("locov1_qmsum"), data)
    lines = (data / "queries.jsonl").read_text().splitlines()
    (data / "queries.jsonl").write_text("\n".join(["{not json", *lines[1:]]) + "\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    res = subprocess.run(
        [sys.executable, "-c", "from cli import main; main()", "run", "--task", "locov1",
         "--data-dir", str(data), "--model", "bm25", "--no-progress"],
        cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2
    shown = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert shown == [f"error: {data}/queries.jsonl line 1: not valid JSON "
                     "(Expecting property name enclosed in double quotes)"]  # fmt: skip
