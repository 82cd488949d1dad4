"""ts-classify on the bundled JapaneseVowels: the .ts parser, TSLib's loading rules, normalisation
per protocol, the stratified split, exactly-once scoring and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tasks.ts_classify as tc
from cli import main
from m2bench import tracking
from m2bench.data import sample_dir
from m2bench.errors import ConfigError, DataError
from m2bench.registry import get_task
from m2bench.specs import EvalContext

UEA = sample_dir("ts_uea")
TASK = get_task("ts-classify")
HEADER = "@problemName Toy\n@timeStamps false\n@dimensions 2\n@classLabel true a b\n@data\n"


def _write(tmp_path: Path, body: str, name: str = "Toy_TRAIN.ts") -> Path:
    path = tmp_path / name
    path.write_text("# a comment\n" + HEADER + body)
    return path


def test_parser_reads_the_bundled_japanese_vowels():
    train = tc.parse_ts(UEA / "JapaneseVowels_TRAIN.ts")
    test = tc.parse_ts(UEA / "JapaneseVowels_TEST.ts")
    assert (len(train.samples), len(test.samples)) == (270, 370)
    assert {s.shape[1] for s in train.samples + test.samples} == {12}
    assert sorted(set(train.labels)) == [str(i) for i in range(1, 10)]
    assert max(len(s) for s in train.samples + test.samples) == 29
    assert min(len(s) for s in train.samples + test.samples) == 7
    np.testing.assert_allclose(train.samples[0][:2, 0], [1.860936, 1.891651])
    data = TASK.load("test", sample=True)
    assert data.provenance["dataset"] == "JapaneseVowels"
    assert data.provenance["data_source"] == "sample:ts_uea"
    assert data.tables["meta"][0]["classes"] == [str(i) for i in range(1, 10)]
    assert list(np.bincount(data.tables["splits"][0]["train"]["y"])) == [30] * 9


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("1,2:3,4:a\n1,x:3,4:b\n", r"line 8: dimension 1 value 2 is not a number \('x'\)"),
        ("1,2:3,4:a\n1,2:b\n", "line 8: 1 dimensions, expected 2"),
        ("1,2:3,4:\n", "line 7: no class label"),
    ],
)
def test_malformed_line_names_its_line(tmp_path, body, match):
    with pytest.raises(DataError, match=match):
        tc.parse_ts(_write(tmp_path, body))


def test_missing_values_interpolate_and_ragged_samples_subsample(tmp_path):
    s = tc.parse_ts(_write(tmp_path, "?,2,?,6,?:1,1,1,1,1:a\n"))
    (x,) = tc.prepare(s, subsample=False)
    np.testing.assert_allclose(x[:, 0], [2, 2, 4, 6, 6])  # linear inside, constant at the ends
    long = ",".join(str(i) for i in range(300))
    s = tc.parse_ts(_write(tmp_path, f"{long}:1,2,3:b\n"))
    (x,) = tc.prepare(s, subsample=True)  # dimensions differ: > 256 subsampled by 2
    assert x.shape == (150, 2) and x[1, 0] == 2 and not np.isnan(x).any()


def test_normalisation_per_protocol():
    data = TASK.load("test", sample=True)
    splits = data.tables["splits"][0]
    rows = np.concatenate(splits["train"]["x"])
    mean, std = rows.mean(0), rows.std(0, ddof=1)
    test0 = splits["test"]["x"][0]
    clean = tc.normalised(splits, tc.Recipe(), "JapaneseVowels")
    np.testing.assert_allclose(clean["test"][0][0], (test0 - mean) / std, rtol=1e-6)
    tslib = tc.normalised(splits, tc.Recipe(protocol="tslib"), "JapaneseVowels")
    z = np.concatenate(tslib["test"][0])  # TEST with its own statistics: exactly standardised
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, atol=1e-6)
    assert not np.allclose(tslib["test"][0][0], clean["test"][0][0])
    assert tslib["validation"][1] is tslib["test"][1]  # TSLib validates on TEST
    with pytest.raises(ConfigError, match="task.protocol"):
        tc._recipe({"protocol": "leaky"})


def test_ethanol_instance_norm_by_hand():
    x = np.array([[1.0, 3.0], [3.0, 7.0]])
    centred = x - x.mean(0)  # [[-1, -2], [1, 2]]
    expected = centred / np.sqrt(np.array([[0.25], [0.25]]) + 1e-5)
    np.testing.assert_allclose(tc.instance_norm(x), expected)


def test_stratified_split_keeps_every_class_and_is_fixed():
    y = TASK.load("test", sample=True).tables["splits"][0]["train"]["y"]
    fit, val = tc.stratified_split(y, 0.2, 2021)
    assert (len(fit), len(val)) == (216, 54) and not set(fit) & set(val)
    assert list(np.bincount(y[val])) == [6] * 9 and list(np.bincount(y[fit])) == [24] * 9
    np.testing.assert_array_equal(val, tc.stratified_split(y, 0.2, 2021)[1])
    with pytest.raises(DataError, match="stratified"):
        tc.stratified_split(np.array([0, 0, 0, 1]), 0.5, 0)


def test_every_test_sample_scored_once(tmp_path):
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, 0], -x[:, 0, 0]], dim=1)  # class 0 iff x > 0

    x = np.linspace(-1, 1, 37, dtype=np.float32).reshape(37, 1, 1)
    ctx = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=16, out_dir=tmp_path)
    pred, _ = tc.predict(Constant(), x, 16, ctx)  # 16 + 16 + 5: the last partial batch counts
    assert pred.shape == (37,)
    labels = (x[:, 0, 0] <= 0).astype(int)
    assert tc.accuracy(labels, pred) == pytest.approx(36 / 37)  # x = 0 is predicted 0, label 1
    with pytest.raises(ValueError, match="36 predictions for 37"):
        tc.accuracy(labels, pred[:36])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"no Heartbeat_TRAIN.ts in .*timeseriesclassification"):
        TASK.load("test", data_dir=tmp_path, subtask="Heartbeat")
    with pytest.raises(DataError, match="Heartbeat is not bundled"):
        TASK.load("test", sample=True, subtask="Heartbeat")
    with pytest.raises(DataError, match="unknown UEA set 'Heartbeet'"):
        TASK.load("test", sample=True, subtask="Heartbeet")
    (tmp_path / "JapaneseVowels").mkdir()  # DIR/<Name>/ is found too
    for part in ("TRAIN", "TEST"):
        name = f"JapaneseVowels_{part}.ts"
        (tmp_path / "JapaneseVowels" / name).write_bytes((UEA / name).read_bytes())
    assert (
        TASK.load("test", data_dir=tmp_path, subtask="JapaneseVowels").provenance["data_revision"]
        == TASK.load("test", sample=True).provenance["data_revision"]
    )


def test_cli_sample_run_logs_accuracy_and_n_eval(store: Path):
    args = ["run", "--task", "ts-classify:JapaneseVowels", "--sample", "--model", "dlinear",
            "--max-steps", "2", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["metrics.JapaneseVowels/n_eval"] == 370 and r["metrics.train/steps"] == 2
    assert 0 <= r["metrics.accuracy"] <= 1
    assert r["metrics.accuracy"] == r["metrics.JapaneseVowels/accuracy"]
    assert r["tags.protocol"] == "clean" and r["tags.setting"] == "JapaneseVowels clean"
    assert r["metrics.params_m"] > 0 and r["metrics.perf/infer_samples_per_s"] > 0
    preds = list((store / "runs" / "ts-classify" / "dlinear").glob("*_predictions.csv"))
    assert len(preds[0].read_text().splitlines()) == 371
