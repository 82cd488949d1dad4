"""The lm-eval task plugin (tasks/lm_harness.py): what it checks before any model is built, the
provenance of the bundled data, and the weights tags of a run with ``task.weights``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("lm_eval")

from cli import main  # noqa: E402
from m2bench import tracking  # noqa: E402
from m2bench.errors import DataError  # noqa: E402
from m2bench.registry import create_model, get_task  # noqa: E402
from tasks import lm_harness  # noqa: E402

JSONL_SHA256 = "18d7e94b01563599a122337fa68fa9fe2be7200ab41420548f0edf74adb401e0"  # SOURCE.md


def _runs():
    tracking._client.cache_clear()
    return tracking.search_runs()


def test_unknown_task_is_refused_before_compute_with_close_names(store: Path) -> None:
    res = CliRunner().invoke(main, ["run", "--task", "lm-eval:hellaswg", "--model", "gpt_tiny",
                                    "--limit", "1", "--no-progress"])  # fmt: skip
    assert res.exit_code == 2, res.output
    [line] = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert "unknown lm-eval task 'hellaswg'; did you mean hellaswag" in line
    assert _runs().empty  # nothing recorded


def test_unknown_task_among_local_ones() -> None:
    with pytest.raises(DataError, match="unknown lm-eval task 'nonexistent_task'"):
        get_task("lm-eval").load(subtask="wikitext2_local+nonexistent_task")


def test_bundled_data_revision_is_the_jsonl_sha256() -> None:
    prov = get_task("lm-eval").load(sample=True).provenance
    assert prov["data_revision"] == f"sha256:{JSONL_SHA256}"
    from m2bench.adapters.lm_eval import LM_EVAL_VERSION

    assert prov["lm_eval"] == LM_EVAL_VERSION  # the lm-eval version: its own tag
    assert "init" not in prov and "weights_source" not in prov


def test_changed_bundled_data_is_an_error(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "lm_eval"
    shutil.copytree(lm_harness.LOCAL_TASKS, folder)
    with open(folder / "wikitext2_local.jsonl", "a") as f:
        f.write('{"page": "extra"}\n')
    monkeypatch.setattr(lm_harness, "LOCAL_TASKS", folder)
    with pytest.raises(DataError, match="wikitext2_local.jsonl has sha256 .*git checkout"):
        get_task("lm-eval").load(sample=True)


def test_weights_file_is_the_runs_weights_source(store: Path) -> None:
    torch.manual_seed(0)
    weights = store / "trained.pt"
    torch.save(create_model("gpt_tiny").state_dict(), weights)
    base = ["run", "--task", "lm-eval:wikitext2_local", "--model", "gpt_tiny", "--limit", "1",
            "--no-progress"]  # fmt: skip
    for extra in ([], [f"task.weights={weights}"]):
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 0, res.output
    runs = _runs().sort_values("start_time")
    assert list(runs["status"]) == ["FINISHED", "FINISHED"]
    assert list(runs["tags.weights_source"]) == ["none", str(weights.resolve())]
    assert list(runs["tags.init"]) == ["n/a", "task.weights"]
    from m2bench import leaderboard

    table = leaderboard.collect("lm-eval")
    assert len(table) == 2  # a random and a trained run are two rows, not one replacing the other
