"""GLUE task end to end: sample and real dev files, exactly-once evaluation, seeds, recipes,
MNLI-start, and a short fine-tune whose loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench import tracking
from m2bench.registry import create_model
from tasks.glue.recipes import recipe

SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def _run(*args: str):
    res = CliRunner().invoke(main, ["run", "--no-progress", *args])
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    return tracking.search_runs().sort_values("start_time"), res.output


def _predictions(store: Path, model: str) -> list[dict]:
    path = store / "runs" / "glue" / model / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_recipes_follow_the_m2_code():
    r = recipe("rte", "m2", 768)
    assert (r.lr, r.weight_decay, r.optimizer, r.epochs, r.batch_size) == (
        5e-5,
        0.01,
        "adamw",
        6,
        16,
    )
    assert (r.max_length, r.pooling, r.start) == (128, "cls", "mnli")
    assert recipe("cola", "m2", 960).optimizer == "adamw" and recipe("cola", "m2", 960).lr == 8e-5
    assert recipe("qnli", "m2", 768).pooling == "mean"
    assert recipe("stsb", "m2", 1792).epochs == 8 and recipe("stsb", "m2", 1792).precision == "fp32"
    b = recipe("qnli", "baseline", 768)
    assert (b.lr, b.max_length, b.pooling, b.optimizer) == (1e-5, 256, "cls", "decoupled")
    assert recipe("wnli", "m2", 768).start == "pretrained"


def test_sample_run_is_short_by_default(store: Path):
    runs, _ = _run("--task", "glue:wnli", "--sample", "--model", "bert_tiny", "--init", "random")
    assert runs.iloc[-1]["metrics.wnli/train_steps"] == 20  # runner.SAMPLE_STEPS
    assert runs.iloc[-1]["params.limit"] == "64"
    history = tracking._client(tracking.tracking_uri()).get_metric_history(
        runs.iloc[-1]["run_id"], "train/wnli/loss"
    )
    assert len(history) == 20  # one seed: the curve keeps its name


def test_sample_run_evaluates_every_dev_row_once_with_seeds(store: Path):
    runs, out = _run("--task", "glue", "--sample", "--model", "bert_tiny", "--init", "random",
                     "--max-steps", "3", "--seeds", "1,2")  # fmt: skip
    assert "qnli" in out and "wnli" in out and "glue_score (avg)" in out
    r = runs.iloc[-1]
    # --sample evaluates the first sample_size (64) dev rows of each subtask
    assert r["metrics.qnli/n_eval"] == 64 and r["metrics.wnli/n_eval"] == 64
    assert r["metrics.qnli/train_steps"] == 3
    assert "metrics.qnli/accuracy_std" in r and r["metrics.glue_score"] == pytest.approx(
        r["metrics.qnli/task_score"]
    )  # fmt: skip  (WNLI is outside the average)
    assert "lr=1e-05" in r["tags.recipe/qnli"] and "pooling=cls" in r["tags.recipe/qnli"]
    preds = _predictions(store, "bert_tiny")
    for sub, n in (("qnli", 64), ("wnli", 64)):
        for seed in (1, 2):
            idx = [p["idx"] for p in preds if p["subtask"] == sub and p["seed"] == seed]
            assert sorted(idx) == list(range(n))  # each dev row exactly once per seed
    client = tracking._client(tracking.tracking_uri())
    for seed in (1, 2):  # one curve per seed, steps 1..3 each
        history = client.get_metric_history(r["run_id"], f"train/qnli/seed{seed}/loss")
        assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_metric_history(r["run_id"], "train/qnli/loss") == []


@pytest.mark.needs_data
def test_real_rte_with_limit_and_mnli_start(store: Path, tmp_path: Path):
    torch.manual_seed(0)
    state = tmp_path / "mnli_encoder.pt"
    torch.save(create_model("m2_bert_tiny").state_dict(), state)
    runs, _ = _run("--task", "glue:rte", "--data-dir", str(SHARED_GLUE), "--model", "m2_bert_tiny",
                   "--init", "random", "--max-steps", "2", "--limit", "50",
                   f"task.mnli_checkpoint={state}")  # fmt: skip
    r = runs.iloc[-1]
    assert r["metrics.rte/n_eval"] == 50 and 0 <= r["metrics.rte/accuracy"] <= 1
    assert "start=mnli" in r["tags.recipe/rte"] and "max_length=128" in r["tags.recipe/rte"]
    assert len(_predictions(store, "m2_bert_tiny")) == 50


@pytest.mark.needs_data
@pytest.mark.slow
def test_short_finetune_loss_falls_on_real_sst2(store: Path):
    args = ["--task", "glue:sst2", "--data-dir", str(SHARED_GLUE), "--model", "minilm_l6"]
    runs, _ = _run(
        *args, "--max-steps", "40", "--limit", "200", "task.lr=1e-4", "task.shuffle=true"
    )
    r = runs.iloc[-1]
    losses = [m.value for m in tracking._client(tracking.tracking_uri()).get_metric_history(
        r["run_id"], "train/sst2/loss")]  # fmt: skip
    assert len(losses) == 40
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:10]) / 10, losses
    assert r["metrics.sst2/accuracy"] > 0.6  # 40 steps of a pretrained encoder: above chance


def test_bad_glue_input(store: Path, tmp_path: Path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tx\n")
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t0\n")
    res = CliRunner().invoke(main, ["run", "--task", "glue:rte", "--data-dir", str(tmp_path),
                                    "--model", "bert_tiny", "--init", "random"])  # fmt: skip
    assert res.exit_code == 2 and "RTE/train.tsv line 2: label 'x'" in res.output
    res = CliRunner().invoke(main, ["run", "--task", "glue:cola", "--data-dir", str(tmp_path),
                                    "--model", "bert_tiny", "--init", "random"])  # fmt: skip
    assert res.exit_code == 2 and "CoLA" in res.output and "--sample" in res.output
    res = CliRunner().invoke(main, ["run", "--task", "glue", "--sample", "--model", "bm25"])
    assert res.exit_code == 2 and "lexical model" in res.output


WNLI_TINY = ["run", "--task", "glue:wnli", "--sample", "--model", "m2_bert_tiny", "--init",
             "random", "--limit", "8", "--max-steps", "1", "--no-progress"]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("task.batch_size=0", "task.batch_size must be >= 1, got 0"),
        ("task.pooling=foo", "task.pooling=foo is not one of cls, mean"),
        ("task.precision=foo", "task.precision=foo is not one of fp32, bf16, fp16"),
        ("task.max_length=0", "task.max_length must be >= 3, got 0"),
        ("task.train_limit=0", "task.train_limit must be a whole number >= 1, got 0"),
        ("task.optimizer=foo", "task.optimizer=foo is not one of decoupled, adamw"),
        ("task.start=foo", "task.start=foo is not one of pretrained, mnli"),
        ("task.lr=-1", "task.lr must be > 0, got -1"),
        ("task.epochs=abc", "task.epochs must be a number, got 'abc'"),
        ("task.shuffle=abc", "task.shuffle must be true or false, got 'abc'"),
        ("task.mnli_checkpoint=nowhere.pt", "task.mnli_checkpoint nowhere.pt does not exist"),
        ("task.lrr=1e-4", "unknown GLUE option 'lrr'; did you mean 'lr'?"),
    ],
)
def test_bad_options_fail_before_compute(store: Path, option: str, message: str):
    res = CliRunner().invoke(main, [*WNLI_TINY, option])
    assert res.exit_code == 2, res.output
    [line] = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert message in line
    tracking._client.cache_clear()
    assert tracking.search_runs().empty  # nothing recorded


def test_options_of_the_right_kind_are_applied(store: Path):
    runs, _ = _run(*WNLI_TINY[1:], "task.epochs=1.5", "task.optimizer=adamw", "task.train_limit=4",
                   "task.batch_size=2", "task.pooling=mean", "task.shuffle=true")  # fmt: skip
    tag = runs.iloc[-1]["tags.recipe/wnli"]
    assert "adamw epochs=1.5 bs=2" in tag and "pooling=mean" in tag and "shuffle=True" in tag


def test_nan_loss_names_the_subtask_and_fits_the_precision(store: Path, monkeypatch):
    import tasks.glue as glue_task
    from m2bench import runner

    real = glue_task._loss
    monkeypatch.setattr(glue_task, "_loss", lambda model, item: real(model, item) * float("nan"))
    errors = {}
    for precision in ("fp32", "bf16"):
        [res] = runner.run("glue:wnli", ["m2_bert_tiny"], sample=True, init="random", limit=8,
                           max_steps=1, progress=False, device="cpu",
                           overrides=[f"task.precision={precision}"])  # fmt: skip
        assert res.status == "FAILED"
        errors[precision] = res.error
    assert errors["fp32"].startswith("GLUE wnli seed 0: training loss is nan")
    assert "fp32" not in errors["fp32"] and "task.lr" in errors["fp32"]
    assert errors["bf16"].endswith("or set task.precision=fp32")


def test_header_only_dev_file_is_a_data_error_at_load(store: Path, tmp_path: Path):
    head = "index\tsentence1\tsentence2\tlabel\n"
    (tmp_path / "WNLI").mkdir()
    (tmp_path / "WNLI" / "train.tsv").write_text(head + "0\ta\tb\t1\n")
    (tmp_path / "WNLI" / "dev.tsv").write_text(head)
    res = CliRunner().invoke(main, ["run", "--task", "glue:wnli", "--data-dir", str(tmp_path),
                                    "--model", "m2_bert_tiny", "--init", "random"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert f"error: {tmp_path / 'WNLI' / 'dev.tsv'} has no data rows" in res.output
    tracking._client.cache_clear()
    assert tracking.search_runs().empty


def test_data_dir_says_which_subtasks_it_found(tmp_path: Path, caplog):
    from m2bench.errors import DataError
    from m2bench.registry import get_task

    glue = get_task("glue")
    layout = "expected the original GLUE layout DIR/<Task>/train.tsv and dev.tsv"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"empty \(it holds nothing\); {layout}"):
        glue.load(data_dir=tmp_path / "empty")
    (tmp_path / "wrong" / "glue" / "WNLI").mkdir(parents=True)  # one level too high
    with pytest.raises(DataError, match=r"\(it holds glue\); .*<Task> one of CoLA, SST-2"):
        glue.load(data_dir=tmp_path / "wrong")
    head = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n"
    for rel in ("WNLI/train.tsv", "QNLI/dev.tsv"):
        (tmp_path / "some" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "some" / rel).write_text(head)
    with pytest.raises(DataError, match=r"it holds QNLI, WNLI; qnli \(QNLI/ lacks train.tsv\); "
                       r"wnli \(WNLI/ lacks dev.tsv\)\); expected"):  # fmt: skip
        glue.load(data_dir=tmp_path / "some")
    (tmp_path / "some" / "WNLI" / "dev.tsv").write_text(head)
    with caplog.at_level("WARNING"):
        data = glue.load(data_dir=tmp_path / "some")
    assert sorted(data.tables) == ["wnli/dev", "wnli/train"]
    assert ("found wnli; skipped qnli (QNLI/ lacks train.tsv); cola, sst2, mrpc, qqp, stsb, mnli, "
            "rte (no folder)") in caplog.text  # fmt: skip


@pytest.mark.needs_data
def test_mnli_runs_first_and_rte_starts_from_its_weights(store: Path, tmp_path: Path):
    """The MNLI-start mechanism, with a handful of hand-written MNLI rows (the MNLI files are not
    available offline) and the real RTE files."""
    import shutil

    head = "\t".join(["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                      "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                      "sentence2", "label1", "gold_label"])  # fmt: skip
    rows = [("A man sleeps.", "A person rests.", "entailment"),
            ("A cat runs.", "A dog sits.", "neutral"),
            ("It is day.", "It is night.", "contradiction")]  # fmt: skip
    dev_head = head.replace("\tlabel1\t", "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\t")
    (tmp_path / "MNLI").mkdir()
    for name, hdr, extra in (("train.tsv", head, 0), ("dev_matched.tsv", dev_head, 4),
                             ("dev_mismatched.tsv", dev_head, 4)):  # fmt: skip
        lines = [hdr] + [
            "\t".join(
                [str(i), "0", "0", "fiction", "x", "x", "x", "x", a, b, g] + [g] * extra + [g]
            )
            for i, (a, b, g) in enumerate(rows)
        ]
        (tmp_path / "MNLI" / name).write_text("\n".join(lines) + "\n")
    shutil.copytree(SHARED_GLUE / "RTE", tmp_path / "RTE")
    runs, _ = _run("--task", "glue", "--data-dir", str(tmp_path), "--model", "bert_tiny",
                   "--init", "random", "--max-steps", "2", "--limit", "20")  # fmt: skip
    r = runs.iloc[-1]
    assert (store / "runs/glue/bert_tiny/mnli_encoder.pt").is_file()
    assert "start=mnli " in r["tags.recipe/rte"] and "start=pretrained" in r["tags.recipe/mnli"]
    assert r["metrics.mnli/n_eval"] == 6  # matched + mismatched, 3 each
    assert {"metrics.mnli/matched_accuracy", "metrics.mnli/mismatched_accuracy"} <= set(r.index)
    assert r["metrics.n_tasks"] == 2
