"""`m2bench train` end to end on CPU: input checks before any run, subtasks, provenance, lr log."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from cli import main
from m2bench import tracking
from m2bench.errors import ConfigError
from m2bench.registry import get_task

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tasks/data/locov1_qmsum"
TINY = ["--model", "m2_bert_tiny_retrieval", "--init", "random", "--no-progress"]
FAST = ["--negatives", "2", "--batch-size", "16", "train.grad_accum=1"]


def _two_subtasks(folder: Path, n_docs: int = 8) -> Path:
    """The first ``n_docs`` sample documents and their queries as two subtasks, ``a`` and ``b``."""
    folder.mkdir(parents=True)
    read = lambda name: [json.loads(line) for line in (SAMPLE / name).open()]  # noqa: E731
    docs = read("documents.jsonl")[:n_docs]
    sub = {d["pid"]: "a" if i < n_docs // 2 else "b" for i, d in enumerate(docs)}
    queries = [q for q in read("queries.jsonl") if set(q["answer_pids"]) <= set(sub)]
    for rows, pid_of, name in ((docs, lambda r: r["pid"], "documents"),
                               (queries, lambda r: r["answer_pids"][0], "queries")):  # fmt: skip
        lines = [json.dumps({**r, "dataset": sub[pid_of(r)]}) for r in rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _absent(row, key: str) -> bool:
    return key not in row or row[key] != row[key]  # no column, or NaN (another run has it)


def _train(*args: str):
    return CliRunner().invoke(main, ["train", "--task", "locov1", *TINY, *FAST, *args])


def _assert_refused_before_training(res, *names: str) -> None:
    """Exit 2 with one `error:` line naming ``names``; no run recorded, no checkpoint saved."""
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert all(name in lines[0] for name in names), lines[0]
    assert "--data-dir" not in lines[0] and "--sample and" not in lines[0], lines[0]
    assert tracking.search_runs().empty
    assert not list(Path.cwd().glob("**/checkpoint/config.json"))


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--eval-data", "missing"], ["--eval-data missing", "not a folder"]),
        (["--eval-data", str(REPO / "tasks")], ["--eval-data", "queries.jsonl"]),
        (["--eval-data", str(SAMPLE), "--sample-eval"], ["--eval-data", "--sample-eval"]),
        (["--sample-eval", "--save", "ckpt", "--out", "a_file"], ["--out", "not writable"]),
        (["--save", "a_file/ckpt"], ["--save", "not writable"]),
    ],
)
def test_eval_options_and_folders_are_checked_before_training(store, args, names):
    (store / "a_file").write_text("")
    res = _train("--train-data", str(SAMPLE), "--max-steps", "1", *args)
    _assert_refused_before_training(res, *names)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--batch-size", "0"], ["--batch-size", ">= 1"]),
        (["--negatives", "-1"], ["--negatives", ">= 1"]),
        (["--negatives", "0"], ["--negatives", ">= 1"]),
        (["train.lr=abc"], ["train.lr", "number", "'abc'"]),
        (["train.lr=0"], ["train.lr", "> 0"]),
        (["train.grad_accum=0"], ["train.grad_accum", ">= 1"]),
        (["train.schedule=step"], ["train.schedule", "linear, cosine"]),
        (["--max-steps", "0"], ["--max-steps", ">= 1"]),
        (["--epochs", "0"], ["--epochs", "> 0"]),
        (["train.max_steps=0", "--epochs", "0.02"], ["train.max_steps", ">= 1"]),
        (["--max-steps", "-3"], ["--max-steps", ">= 1"]),
        (["lr=1e-3"], ["lr=", "train.<field>"]),
    ],
)
def test_bad_settings_are_one_line_errors_before_any_run(store, args, names):
    bound = [] if "train.max_steps=0" in args else ["--max-steps", "1"]  # the flag would win
    res = _train("--train-data", str(SAMPLE), *bound, *args)
    _assert_refused_before_training(res, *names)


def test_data_that_gives_no_training_examples_is_refused_before_any_run(store):
    folder = _two_subtasks(store / "data", n_docs=4)  # 2 documents per subtask: #docs - 2 = 0
    res = _train("--train-data", str(folder), "--max-steps", "1")
    _assert_refused_before_training(res, "--train-data", "no training examples")


def test_training_examples_refuse_a_negative_count():
    data = get_task("locov1").load("test", sample=True)
    with pytest.raises(ConfigError, match="negatives"):
        get_task("locov1").training_examples(data, negatives=-1)


def test_unknown_subtask_is_refused_before_any_run(store):
    res = CliRunner().invoke(main, ["train", "--task", "locov1:nope", *TINY, *FAST,
                                    "--train-data", str(SAMPLE), "--max-steps", "1"])  # fmt: skip
    _assert_refused_before_training(res, "--train-data", "'nope'", "qmsum_local")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `m2bench train --task locov1:a` run on a two-subtask folder, evaluated on it."""
    root = tmp_path_factory.mktemp("train")
    folder = _two_subtasks(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        res = CliRunner().invoke(main, ["train", "--task", "locov1:a", *TINY, *FAST,
                                        "--train-data", str(folder), "--eval-data", str(folder),
                                        "--max-steps", "4", "train.lr=3e-3",
                                        "train.warmup_frac=0"])  # fmt: skip
        assert res.exit_code == 0, res.output
        runs = tracking.search_runs()
        client = tracking._client(tracking.tracking_uri())
        train_run = runs[runs["tags.stage"] == "train"].iloc[0]
        history = client.get_metric_history(train_run["run_id"], "train/lr")
        artifacts = {r: {a.path for a in client.list_artifacts(r)} for r in runs["run_id"]}
        config = None
        if "config.yaml" in artifacts[train_run["run_id"]]:
            path = client.download_artifacts(train_run["run_id"], "config.yaml", str(root))
            config = yaml.safe_load(Path(path).read_text())
        return SimpleNamespace(
            runs=runs,
            train=train_run,
            evals=runs[runs["tags.stage"] == "eval"],
            lrs=[m.value for m in sorted(history, key=lambda m: m.step)],
            artifacts=artifacts,
            config=config,
            folder=folder,
        )


def test_subtask_is_trained_and_evaluated_alone(trained):
    loco = get_task("locov1")
    only_a = loco.load("test", data_dir=trained.folder, subtask="a")
    everything = loco.load("test", data_dir=trained.folder)
    n_a = len(loco.training_examples(only_a, negatives=2))
    assert n_a < len(loco.training_examples(everything, negatives=2))
    assert trained.train["tags.subtask"] == "a"
    assert trained.train["metrics.train/examples"] == n_a
    assert len(trained.evals) == 1
    ev = trained.evals.iloc[0]
    assert ev["tags.subtask"] == "a" and ev["metrics.n_eval"] == len(only_a.tables["queries"])
    assert "metrics.a/ndcg_at_10" in ev and _absent(ev, "metrics.b/ndcg_at_10")


def test_train_run_has_the_provenance_of_eval_runs_and_the_eval_run_links_back(trained):
    train_id = trained.train["run_id"]
    assert {"config.yaml", "env.txt", "train_config.yaml"} <= trained.artifacts[train_id]
    cfg = trained.config  # the resolved settings, as an eval run's config.yaml has them
    assert cfg["task"] == "locov1" and cfg["subtask"] == "a"
    assert cfg["model"] == "m2_bert_tiny_retrieval" and cfg["max_steps"] == 4
    assert cfg["train"]["lr"] == 3e-3 and cfg["train"]["negatives"] == 2
    assert cfg["train"]["eval_data"] == str(trained.folder)
    ev = trained.evals.iloc[0]
    assert ev["tags.train_run_id"] == train_id
    assert {"config.yaml", "env.txt"} <= trained.artifacts[ev["run_id"]]


def test_logged_lr_is_the_lr_each_step_used(trained):
    assert trained.lrs == pytest.approx([3e-3, 2.25e-3, 1.5e-3, 0.75e-3])  # linear over 4 steps


def test_evaluation_data_without_the_subtask_is_refused_before_training(store):
    folder = _two_subtasks(store / "data")  # subtasks a and b; the bundled sample has neither
    res = CliRunner().invoke(main, ["train", "--task", "locov1:a", *TINY, *FAST, "--train-data",
                                    str(folder), "--sample-eval", "--max-steps", "1"])  # fmt: skip
    _assert_refused_before_training(res, "--sample-eval", "'a'", "qmsum_local")
