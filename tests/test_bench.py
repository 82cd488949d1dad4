"""`m2bench bench`: the CSV contract, out-of-memory halving, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench.bench import COLUMNS


def test_bench_writes_csv_plot_and_table(store: Path):
    res = CliRunner().invoke(main, ["bench", "--model", "m2_bert_tiny", "--model", "bert_tiny",
                                    "--seq-len", "32,64", "--mode", "fwd,fwdbwd",
                                    "--tokens-per-batch", "256", "--repeats", "2", "--warmup", "1",
                                    "--out", "b.csv", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "tokens/ms" in res.output and "m2_bert_tiny" in res.output
    rows = list(csv.DictReader(open(store / "b.csv")))
    assert list(rows[0]) == COLUMNS and len(rows) == 2 * 2 * 2
    by = {(r["model"], r["mode"], r["seq_len"]): r for r in rows}
    r = by[("m2_bert_tiny", "fwd", "64")]
    assert int(r["batch_size"]) == 4 and float(r["tokens_per_ms"]) > 0
    tokens_per_ms = float(r["batch_size"]) * 64 / float(r["latency_ms"])
    assert abs(float(r["tokens_per_ms"]) - tokens_per_ms) < 1e-4 * tokens_per_ms  # 6 digits
    assert r["gpu"].startswith("cpu") and r["command"].startswith("m2bench bench")
    assert (store / "b.png").stat().st_size > 1000
    # --append keeps the other rows
    CliRunner().invoke(main, ["bench", "--model", "bert_tiny", "--seq-len", "32", "--mode", "fwd",
                              "--tokens-per-batch", "64", "--repeats", "1", "--out", "b.csv",
                              "--append", "--no-progress"])  # fmt: skip
    rows = list(csv.DictReader(open(store / "b.csv")))
    assert len(rows) == 8
    assert [r["batch_size"] for r in rows if r["model"] == "bert_tiny" and r["seq_len"] == "32"
            and r["mode"] == "fwd"] == ["2"]  # fmt: skip


def test_out_of_memory_halves_the_batch_and_records_it(store: Path, temp_model):
    class Hungry(torch.nn.Module):
        max_length = 1 << 20

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def hidden_states(self, batch):
            if batch["input_ids"].shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return batch["input_ids"].float()[..., None] * self.w

    temp_model("test_hungry", "encoder", Hungry)
    res = CliRunner().invoke(main, ["bench", "--model", "test_hungry", "--seq-len", "16",
                                    "--mode", "fwd", "--tokens-per-batch", "256", "--repeats", "1",
                                    "--out", "b.csv", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    row = next(csv.DictReader(open(store / "b.csv")))
    assert (row["batch_size"], row["oom_retries"], row["error"]) == ("2", "3", "")


def test_bench_bad_input(store: Path):
    res = CliRunner().invoke(main, ["bench", "--model", "m2_bert_tinyy", "--seq-len", "32"])
    assert res.exit_code == 2 and "did you mean 'm2_bert_tiny'" in res.output
    res = CliRunner().invoke(main, ["bench", "--model", "m2_bert_tiny", "--seq-len", "32,x"])
    assert res.exit_code == 2 and "--seq-len" in res.output
    res = CliRunner().invoke(main, ["bench", "--model", "m2_bert_tiny", "--mode", "both"])
    assert res.exit_code == 2 and "unknown mode 'both'" in res.output


def test_a_baseline_that_cannot_be_built_is_an_error_row(store: Path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "flash_attn" else real(n, *a)
    )
    args = ["bench", "--model", "bert_tiny", "--model", "bert_base_fa2", "--seq-len", "32",
            "--mode", "fwd", "--tokens-per-batch", "64", "--repeats", "1", "--out", "b.csv",
            "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in csv.DictReader(open(store / "b.csv"))}
    assert float(rows["bert_tiny"]["tokens_per_ms"]) > 0 and rows["bert_tiny"]["error"] == ""
    assert "flash-attn" in rows["bert_base_fa2"]["error"]
    assert rows["bert_base_fa2"]["tokens_per_ms"] == "nan"


def _bench(*args: str):
    base = ["bench", "--device", "cpu", "--mode", "fwd", "--tokens-per-batch", "64",
            "--repeats", "1", "--warmup", "1", "--out", "b.csv", "--no-progress"]  # fmt: skip
    return CliRunner().invoke(main, base + list(args))


def _rows(store: Path) -> list[dict]:
    return list(csv.DictReader(open(store / "b.csv")))


def test_a_model_that_raises_is_recorded_and_the_sweep_goes_on(store: Path, temp_model):
    from m2bench import tracking

    class Broken(torch.nn.Module):
        max_length = 1 << 20

        def hidden_states(self, batch):
            raise RuntimeError("kernel exploded\nsecond line")

    temp_model("test_broken", "encoder", Broken)
    res = _bench("--model", "m2_bert_tiny", "--model", "test_broken", "--model", "bert_tiny",
                 "--seq-len", "32")  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "FAILED: test_broken fwd L=32: RuntimeError: kernel exploded" in res.output
    rows = {r["model"]: r for r in _rows(store)}
    assert rows["test_broken"]["status"] == "failed"
    assert rows["test_broken"]["error"] == "RuntimeError: kernel exploded"
    for name in ("m2_bert_tiny", "bert_tiny"):  # measured before and after the failure
        assert rows[name]["status"] == "ok" and float(rows[name]["tokens_per_ms"]) > 0
    assert (store / "b.png").stat().st_size > 1000
    runs = tracking.search_runs().set_index("tags.model")
    assert runs.loc["test_broken", "status"] == "FAILED"
    assert runs.loc["test_broken", "tags.error"] == "RuntimeError: kernel exploded"
    assert set(runs.loc[["m2_bert_tiny", "bert_tiny"], "status"]) == {"FINISHED"}


def test_a_model_without_hidden_states_is_refused_before_any_compute(store: Path):
    res = _bench("--model", "m2_bert_tiny", "--model", "bm25", "--seq-len", "32")
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "error: model 'bm25' is of kind 'lexical'" in res.output
    assert not (store / "b.csv").exists() and not (store / "mlflow.db").exists()


def test_append_keeps_rows_of_other_precisions_and_devices(store: Path):
    # a file written before the status column, with a row measured on another device
    with open(store / "b.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in COLUMNS if c != "status"])
        w.writeheader()
        w.writerow({"model": "m2_bert_tiny", "mode": "fwd", "seq_len": "32", "batch_size": "2",
                    "tokens_per_ms": "999", "latency_ms": "0.064", "peak_mem_gb": "1",
                    "oom_retries": "0", "error": "", "gpu": "NVIDIA H200", "precision": "bf16",
                    "torch": "x", "git_sha": "y", "command": "z"})  # fmt: skip
    for precision in ("bf16", "fp32", "fp32"):  # the second fp32 call replaces the first
        res = _bench("--model", "m2_bert_tiny", "--seq-len", "32", "--precision", precision,
                     "--append")  # fmt: skip
        assert res.exit_code == 0, res.output
    rows = _rows(store)
    keys = sorted((r["gpu"].split(":")[0], r["precision"]) for r in rows)
    assert keys == [("NVIDIA H200", "bf16"), ("cpu", "bf16"), ("cpu", "fp32")]
    assert [r["status"] for r in rows] == ["ok"] * 3  # the old row's status is filled in
    from m2bench.bench import plot_lines

    lines = plot_lines(rows)  # one line per precision and device, each named by them
    assert len(lines) == 3 and all(len(pts) == 1 for pts in lines.values())
    assert any("fp32" in name and "cpu" in name for name in lines)
    one = plot_lines([r for r in rows if r["gpu"] == "NVIDIA H200"])
    assert list(one) == ["m2_bert_tiny (fwd)"]


def test_an_override_no_model_has_is_an_error(store: Path):
    res = _bench("--model", "m2_bert_tiny", "--seq-len", "32", "model.kernal=torch")
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "'kernal'" in res.output and "did you mean 'kernel'" in res.output
    assert not (store / "b.csv").exists()
    # a field that one model of the sweep has applies to that model only
    res = _bench("--model", "m2_bert_tiny", "--model", "bert_tiny", "--seq-len", "32",
                 "model.kernel=torch")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(r["model"] for r in _rows(store)) == ["bert_tiny", "m2_bert_tiny[kernel=torch]"]


@pytest.mark.parametrize(
    "args",
    [
        ["--repeats", "0"],
        ["--seq-len", "0"],
        ["--seq-len", "32,-1"],
        ["--tokens-per-batch", "0"],
        ["--warmup", "-1"],
    ],
)
def test_edge_values_are_refused(store: Path, args: list[str]):
    res = _bench("--model", "m2_bert_tiny", "--seq-len", "32", *args)
    assert res.exit_code == 2, res.output
    assert args[0] in res.output and not (store / "b.csv").exists()


def test_run_bench_refuses_edge_values_before_compute():
    from m2bench.bench import check_sweep
    from m2bench.errors import ConfigError

    ok = {"tokens_per_batch": 64, "precision": "bf16", "warmup": 0, "repeats": 1,
          "overrides": {}}  # fmt: skip
    check_sweep(["m2_bert_tiny"], [32], ["fwd"], **ok)
    for bad, match in (({"repeats": 0}, "--repeats"), ({"warmup": -1}, "--warmup"),
                       ({"tokens_per_batch": 0}, "--tokens-per-batch"),
                       ({"precision": "fp8"}, "precision")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            check_sweep(["m2_bert_tiny"], [32], ["fwd"], **{**ok, **bad})
    with pytest.raises(ConfigError, match="--seq-len"):
        check_sweep(["m2_bert_tiny"], [0], ["fwd"], **ok)


def test_bench_runs_carry_overrides_and_stage_tag(store: Path, caplog):
    from m2bench import leaderboard, tracking

    res = _bench("--model", "m2_bert_tiny", "--model", "bert_tiny", "--seq-len", "32",
                 "model.kernel=torch", "model.dropout=0.0")  # fmt: skip
    assert res.exit_code == 0, res.output
    runs = tracking.search_runs().set_index("tags.model")
    m2 = runs.loc["m2_bert_tiny[dropout=0.0,kernel=torch]"]
    bert = runs.loc["bert_tiny[dropout=0.0]"]
    assert (m2["params.model.kernel"], m2["params.model.dropout"]) == ("torch", "0.0")
    assert bert["params.model.dropout"] == "0.0" and bert.isna()["params.model.kernel"]
    assert m2["tags.model_overrides"] == "dropout=0.0 kernel=torch"
    assert set(runs["tags.stage"]) == {"bench"} and set(runs["tags.kind"]) == {"encoder"}
    with caplog.at_level("WARNING"):
        assert leaderboard.collect().empty
    assert "unknown task" not in caplog.text


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_each_model_reports_its_own_cpu_peak_memory(store: Path, temp_model):
    class Fat(torch.nn.Module):
        max_length = 1 << 20

        def hidden_states(self, batch):
            blob = b"\x01" * 400_000_000  # written, so resident; freed before returning
            del blob
            return batch["input_ids"].float()[..., None]

    class Slim(Fat):
        def hidden_states(self, batch):
            return batch["input_ids"].float()[..., None]

    temp_model("test_fat", "encoder", Fat)
    temp_model("test_slim", "encoder", Slim)
    res = _bench("--model", "test_fat", "--model", "test_slim", "--seq-len", "16")
    assert res.exit_code == 0, res.output
    peak = {r["model"]: float(r["peak_mem_gb"]) for r in _rows(store)}
    assert peak["test_slim"] < peak["test_fat"] - 0.3, peak
