"""The pile task and the lm-eval task: reading, packing, exactly-once scoring, bits per byte,
training with checkpoints and --resume through the CLI, and lm-eval's metrics in MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench import tracking
from m2bench.errors import DataError
from m2bench.registry import get_task
from m2bench.specs import EvalContext
from m2bench.tokenization import GPT2_EOS, gpt2_tokenizer
from tasks import pile

PILE = get_task("pile")


def _jsonl(path: Path, rows: list) -> Path:
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode()
                              for r in rows))  # fmt: skip
    return path


ROWS = [{"text": "The first document.", "meta": {"pile_set_name": "Pile-CC"}},
        {"text": "A second one, from arXiv.", "meta": {"pile_set_name": "ArXiv"}},
        {"text": "", "meta": {"pile_set_name": "Pile-CC"}}]  # fmt: skip


def test_read_jsonl_and_zst(tmp_path):
    import zstandard

    plain = _jsonl(tmp_path / "val.jsonl", ROWS)
    rows = list(pile.read_jsonl(plain))
    assert [r["set"] for r in rows] == ["Pile-CC", "ArXiv", "Pile-CC"] and rows[2]["text"] == ""
    zst = tmp_path / "test.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    assert list(pile.read_jsonl(zst)) == rows
    assert len(list(pile.read_jsonl(zst, limit=2))) == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"line 2 is not UTF-8"),
        (b'{"text": "ok"}\n{"text": \n', r"line 2 is not JSON"),
        (b'{"meta": {}}\n', r'line 1 has no "text" string'),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, content, match):
    with pytest.raises(DataError, match=match):
        list(pile.read_jsonl(_jsonl(tmp_path / "val.jsonl", [content])))


def test_corrupt_zst_is_a_clear_error(tmp_path):
    bad = tmp_path / "val.jsonl.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 20)
    with pytest.raises(DataError, match=r"val.jsonl.zst is not a valid zstd file"):
        list(pile.read_jsonl(bad))


def test_pile_layout_is_read_and_a_missing_split_named(tmp_path):
    (tmp_path / "train").mkdir()
    _jsonl(tmp_path / "train" / "00.jsonl", ROWS)
    _jsonl(tmp_path / "val.jsonl", ROWS)
    with pytest.raises(DataError, match=r"no test.jsonl.zst .*DIR/val.jsonl.zst"):
        PILE.load("test", data_dir=tmp_path)
    _jsonl(tmp_path / "test.jsonl", ROWS[:2])
    data = PILE.load("test", data_dir=tmp_path)
    assert [len(data.tables[s]) for s in ("train", "validation", "test")] == [3, 3, 2]
    assert data.provenance["data_source"] == f"dir:{tmp_path}"


def test_sample_is_named_as_a_stand_in_not_the_pile():
    data = PILE.load("test", sample=True)
    source = data.provenance["data_source"]  # says what the text is, and never "pile"
    assert "wikitext2" in source and "tinyshakespeare" in source and "pile" not in source.lower()
    assert {r["set"] for r in data.tables["test"]} == {"wikitext2"}
    assert len(data.tables["test"]) == 62  # WikiText-2 test articles
    assert data.tables["test"][0]["text"].startswith(" = Robert Boulter = \n")
    assert {r["set"] for s in ("train", "validation") for r in data.tables[s]} == {
        "tinyshakespeare"
    }
    assert len(PILE.load("test", sample=True, limit=3).tables["validation"]) == 3


class _Uniform(torch.nn.Module):
    """Equal logits for every token: the loss of each scored token is ln(vocabulary)."""

    def forward(self, ids):
        return torch.zeros(*ids.shape, 50264)


def test_every_token_is_scored_once_and_bits_per_byte_by_hand():
    rows = [{"text": t, "set": "s"} for t in ("Hello world.", "Zwei Wörter", "  ")]
    streams, n_bytes, empty = pile.tokenize(rows)
    tok = gpt2_tokenizer()
    expect = [*tok.encode("Hello world.").ids, GPT2_EOS, *tok.encode("Zwei Wörter").ids, GPT2_EOS]
    assert streams["s"].tolist() == expect and empty == 1
    assert n_bytes["s"] == len(b"Hello world.") + len("Zwei Wörter".encode())
    ctx = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=2, out_dir=".")
    for seq_len in (1, 3, 4, 100):  # the last window partial or not
        nats, count, _ = pile.evaluate_stream(_Uniform(), streams["s"], seq_len, 2, ctx)
        assert count == len(expect)  # [EOS] + stream predicts each stream token exactly once
        # the uniform distribution is over GPT-2's 50,257 tokens (the padded rows are cut)
        assert nats == pytest.approx(len(expect) * math.log(50257))
    scores = pile._scores("", nats, count, n_bytes["s"])
    assert scores["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes["s"])
    assert scores["ppl"] == pytest.approx(50257)


def _runs() -> pd.DataFrame:
    tracking._client.cache_clear()
    return tracking.search_runs()


COMMON = ["--sample", "--model", "m2_gpt_tiny", "--limit", "2", "--epochs", "100",
          "task.seq_len=32", "task.batch_size=4", "task.checkpoint_every=2", "--batch-size", "8",
          "--no-progress"]  # fmt: skip


def test_cli_trains_checkpoints_and_resumes(store: Path):
    res = CliRunner().invoke(main, ["run", "--task", "pile", "--max-steps", "4", *COMMON],
                             catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    out = store / "runs" / "pile" / "m2_gpt_tiny"
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"] == 4
    assert (out / "model.pt").is_file()
    first = _runs().iloc[0]
    assert first["metrics.train/steps"] == 4 and first["metrics.train/resumed_from_step"] == 0
    assert first["tags.trained"] == "true" and "pile" not in first["tags.data_source"].lower()
    for key in ("ppl", "loss", "bits_per_byte", "test/ppl", "test/wikitext2/ppl",
                "validation/tinyshakespeare/bits_per_byte", "perf/train_tokens_per_s",
                "perf/infer_tokens_per_s", "train/loss"):  # fmt: skip
        assert first[f"metrics.{key}"] > 0, key
    assert first["metrics.ppl"] == pytest.approx(math.exp(first["metrics.loss"]))

    res = CliRunner().invoke(main, ["run", "--task", "pile", "--max-steps", "6", "--resume",
                                    *COMMON], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    second = _runs().sort_values("start_time").iloc[-1]
    assert second["metrics.train/resumed_from_step"] == 4 and second["metrics.train/steps"] == 6
    assert second["params.resume"] == "True"
    # a checkpoint already at the run's end, or saved under other settings: refused, said why
    again = CliRunner().invoke(main, ["run", "--task", "pile", "--max-steps", "6", "--resume",
                                      *COMMON])  # fmt: skip
    assert again.exit_code == 1 and "is at step 6, this run ends at step 6" in again.output
    other = CliRunner().invoke(main, ["run", "--task", "pile", "--max-steps", "8", "--resume",
                                      *COMMON, "task.batch_size=2"])  # fmt: skip
    assert other.exit_code == 1 and "other settings (batch_size 4 -> 2)" in other.output
    for run in (first, second):  # this process's samples only: 32 + 1 tokens per sequence
        assert run["metrics.perf/train_samples_per_s"] * 32 == pytest.approx(
            run["metrics.perf/train_tokens_per_s"], rel=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("option", "match"),
    [("task.batch_size=0", "task.batch_size must be > 0"), ("task.accum=0", "task.accum must be"),
     ("task.seq_len=-5", "task.seq_len must be >= 0"), ("task.lr=abc", "must be a number")],
)  # fmt: skip
def test_bad_recipe_values_fail_before_any_run(store: Path, option, match):
    res = CliRunner().invoke(main, ["run", "--task", "pile", "--max-steps", "1", *COMMON, option])
    assert res.exit_code == 2 and match in res.output, res.output
    assert _runs().empty


def test_cli_lm_eval_task_logs_metrics_and_result_json(store: Path):
    args = ["run", "--task", "lm-eval:wikitext2_local", "--model", "gpt_tiny", "--model",
            "m2_gpt_tiny", "--limit", "2", "--batch-size", "4", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    runs = _runs().set_index("tags.mlflow.runName")
    for name in ("gpt_tiny", "m2_gpt_tiny"):
        r = runs.loc[name]
        assert r["metrics.wikitext2_local/n_eval"] == 2
        assert r["metrics.main_score"] == r["metrics.wikitext2_local/word_perplexity"] > 1
        assert 0 < r["metrics.wikitext2_local/bits_per_byte"] < 20
        assert r["tags.higher_is_better"] == "false" and r["tags.lm_eval"]
        saved = json.loads((store / "runs" / "lm-eval" / name / "lm_eval_results.json").read_text())
        assert saved["results"]["wikitext2_local"]["bits_per_byte,none"] == pytest.approx(
            r["metrics.wikitext2_local/bits_per_byte"]
        )
    res = CliRunner().invoke(main, ["leaderboard", "--include-sample", "--out", "lb.csv"])
    lb = pd.read_csv(store / "lb.csv")
    lb = lb[lb["task"] == "lm-eval"]
    assert lb.sort_values("rank")["score"].is_monotonic_increasing  # perplexity: lower first


def test_lm_eval_task_errors(store: Path):
    res = CliRunner().invoke(main, ["run", "--task", "lm-eval", "--model", "gpt_tiny"])
    assert res.exit_code == 2 and "--task lm-eval:<task>" in res.output
    res = CliRunner().invoke(main, ["run", "--task", "lm-eval:wikitext2_local", "--model",
                                    "gpt_tiny", "task.weights=nope.pt"])  # fmt: skip
    assert res.exit_code == 2 and "task.weights nope.pt does not exist" in res.output
    assert _runs().empty  # the refused runs recorded nothing


def test_bare_lm_eval_cli_finds_the_m2bench_adapter():
    """`lm_eval --model m2bench` (lm-eval's own CLI) through the .pth hook bootstrap installs."""
    import subprocess
    import sys
    import sysconfig

    pth = Path(sysconfig.get_paths()["purelib"]) / "m2bench-lm-eval.pth"
    assert pth.is_file(), f"{pth} is missing: scripts/bootstrap.sh installs it"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "lm_eval", "--model", "m2bench", "--model_args",
           "model=gpt_tiny", "--tasks", "wikitext2_local", "--include_path",
           "tasks/data/lm_eval", "--limit", "1", "--device", "cpu"]  # fmt: skip
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "m2bench ({'model': 'gpt_tiny'})" in out.stdout and "bits_per_byte" in out.stdout
