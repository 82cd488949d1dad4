"""`m2bench bench`: the CSV contract, out-of-memory halving, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

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
