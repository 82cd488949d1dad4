"""ts-anomaly: point adjustment, thresholds and metrics by hand, window counts, once-per-point
scoring, the bundled UCR135 sample, file errors and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import tasks.ts_anomaly as ts_anomaly
from cli import main
from m2bench import tracking
from m2bench.errors import DataError
from m2bench.registry import get_task

TASK = get_task("ts-anomaly")


def test_point_adjustment_by_hand_including_index_0():
    gt = np.array([1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1])
    pred = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1])
    # segment [0, 3) hit at 1 -> index 0 too (TSLib's fix); [5, 8) missed; [9, 11) hit at 10
    assert ts_anomaly.point_adjust(gt, pred).tolist() == [1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1]
    assert ts_anomaly.point_adjust([0, 0], [1, 0]).tolist() == [1, 0]  # false alarms stay
    assert ts_anomaly.point_adjust([1], [1]).tolist() == [1]


def _scan(gt, pred):
    """Point adjustment as spec §6 describes the scan (TSLib after c4910bf), step by step."""
    pred, state = list(pred), False
    for t in range(len(gt)):
        if gt[t] == 1 and pred[t] == 1 and not state:
            state = True
            for j in range(t, -1, -1):  # backwards, index 0 included
                if gt[j] == 0:
                    break
                pred[j] = 1
            for j in range(t, len(gt)):
                if gt[j] == 0:
                    break
                pred[j] = 1
        elif gt[t] == 0:
            state = False
        if state:
            pred[t] = 1
    return pred


def test_point_adjustment_equals_the_described_scan():
    rng = np.random.default_rng(3)
    for _ in range(50):
        gt = (rng.random(60) < 0.4).astype(int)
        pred = (rng.random(60) < 0.2).astype(int)
        assert ts_anomaly.point_adjust(gt, pred).tolist() == _scan(gt, pred)


def test_threshold_rule_is_numpys_percentile_of_train_and_test():
    train, test = np.arange(10.0), np.arange(10.0, 20.0)
    # 20 values 0..19; the 90th percentile (ratio 10) sits at position 0.9 * 19 = 17.1
    assert ts_anomaly.tslib_threshold(train, test, 10) == pytest.approx(17.1)
    assert ts_anomaly.tslib_threshold(train, test, 0.5) == pytest.approx(0.995 * 19)


def test_raw_and_point_adjusted_metrics_by_hand():
    gt = np.array([0, 1, 1, 1, 1, 0, 0, 1, 0, 0])
    pred = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    s = ts_anomaly.detection_scores(gt, pred)
    # raw: TP 1, FP 1, FN 4, TN 4 -> P 1/2, R 1/5, F1 2/7; accuracy 5/10
    assert (s["precision"], s["recall"], s["accuracy"]) == pytest.approx((0.5, 0.2, 0.5))
    assert s["f1"] == pytest.approx(2 * 0.5 * 0.2 / 0.7)
    # adjusted: segment [1, 5) complete -> TP 4, FP 1, FN 1 -> P 4/5, R 4/5; accuracy 8/10
    assert (s["pa_precision"], s["pa_recall"], s["pa_f1"]) == pytest.approx((0.8, 0.8, 0.8))
    assert s["pa_accuracy"] == pytest.approx(0.8)


@pytest.mark.parametrize(("n", "step"), [(1000, 100), (1099, 100), (1100, 100), (250, 1), (100, 1)])
def test_window_counts(n, step):
    starts = ts_anomaly.window_starts(n, 100, step)
    assert len(starts) == (n - 100) // step + 1 and starts[-1] + 100 <= n


@pytest.mark.parametrize("n", [100, 250, 300, 6301])
def test_clean_scores_each_point_once(n):
    starts = ts_anomaly.once_starts(n, 100)
    windows = np.stack([np.arange(s, s + 100, dtype=float) for s in starts])  # energy = position
    np.testing.assert_array_equal(ts_anomaly.per_point(windows, starts, n), np.arange(n))
    assert starts[-1] == n - 100 and len(starts) == -(-n // 100)


@pytest.fixture(scope="module")
def sample():
    return TASK.load("test", sample=True)


def test_sample_loads_as_documented(sample):
    s = sample.tables["series"][0]
    assert s.name == "UCR135" and s.train.shape == (1200, 1) and s.test.shape == (6301, 1)
    assert np.flatnonzero(s.labels).tolist() == list(range(2987, 2999))
    assert abs(s.train.mean()) < 1e-5 and s.train.std() == pytest.approx(1, abs=1e-5)
    assert sample.provenance["data_source"] == f"sample:ts_anomaly/{ts_anomaly.UCR}"
    assert "UCR135" not in ts_anomaly.STANDARD


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"MSL: no MSL_train.npy in .*no hub copy"):
        TASK.load("test", data_dir=tmp_path, subtask="MSL")
    with pytest.raises(DataError, match="SMD needs --data-dir DIR with SMD_train.npy.*no hub copy"):
        TASK.load("test", subtask="SMD")
    with pytest.raises(DataError, match="PSM is not bundled"):
        TASK.load("test", sample=True, subtask="PSM")
    (tmp_path / "PSM").mkdir()  # TSLib's folder layout DIR/<SET>/ is searched too
    pd.DataFrame({"timestamp": [0], "a": [1.0]}).to_csv(tmp_path / "PSM" / "train.csv", index=False)
    with pytest.raises(DataError, match="PSM: no test.csv in"):
        TASK.load("test", data_dir=tmp_path, subtask="PSM")


def _msl(tmp_path: Path, train=None, test=None, labels=None) -> Path:
    rng = np.random.default_rng(0)  # synthetic files only exercise the file checks
    np.save(tmp_path / "MSL_train.npy", rng.random((300, 55)) if train is None else train)
    np.save(tmp_path / "MSL_test.npy", rng.random((200, 55)) if test is None else test)
    np.save(tmp_path / "MSL_test_label.npy", np.zeros(200) if labels is None else labels)
    return tmp_path


def test_bad_files_are_data_errors(tmp_path):
    s = TASK.load("test", data_dir=_msl(tmp_path), subtask="MSL").tables["series"][0]
    assert s.train.shape == (300, 55) and s.labels.shape == (200,)
    bad = np.ones((200, 55))
    bad[7, 3] = np.nan
    with pytest.raises(DataError, match=r"MSL_test.npy: a NaN or infinite value at row 7"):
        TASK.load("test", data_dir=_msl(tmp_path, test=bad), subtask="MSL")
    with pytest.raises(DataError, match=r"MSL_test.npy: test data of shape \(200, 54\)"):
        TASK.load("test", data_dir=_msl(tmp_path, test=np.ones((200, 54))), subtask="MSL")
    with pytest.raises(DataError, match="labels must be one 0/1 value per test row"):
        TASK.load("test", data_dir=_msl(tmp_path, labels=np.zeros(199)), subtask="MSL")
    (tmp_path / "swat_train2.csv").write_text("a,b,label\n1,2,0\n")
    (tmp_path / "swat2.csv").write_text("a,b,label\n1,,0\n")
    with pytest.raises(DataError, match=r"swat2.csv: a NaN or infinite value at row 0"):
        TASK.load("test", data_dir=tmp_path, subtask="SWaT")


def test_ucr_test_file_must_start_with_the_train_file(tmp_path):
    folder = ts_anomaly.mdata.sample_dir("ts_anomaly")
    train = pd.read_csv(folder / f"{ts_anomaly.UCR}_TRAIN.csv")
    train.to_csv(tmp_path / f"{ts_anomaly.UCR}_TRAIN.csv", index=False)
    train.assign(value=train["value"] + 1).to_csv(tmp_path / f"{ts_anomaly.UCR}_TEST.csv",
                                                  index=False)  # fmt: skip
    with pytest.raises(DataError, match="first 1200 rows must equal"):
        TASK.load("test", data_dir=tmp_path, subtask="UCR135")


@pytest.mark.parametrize("protocol", ["clean", "tslib"])
def test_cli_sample_run(store: Path, protocol):
    args = ["run", "--task", "ts-anomaly:UCR135", "--sample", "--model", "dlinear", "--max-steps",
            "2", "--no-progress", "--protocol", protocol]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["status"] == "FINISHED" and r["metrics.train/steps"] == 2
    for m in ("precision", "recall", "f1", "accuracy", "pa_precision", "pa_recall", "pa_f1"):
        assert 0 <= r[f"metrics.{m}"] <= 1
    assert r["tags.setting"] == f"UCR135 ratio=0.5 {protocol}"
    if protocol == "clean":  # each of the 6,301 test points once
        assert r["metrics.UCR135/n_eval"] == 6301 and r["metrics.n_anomalies"] == 12
        assert r["tags.headline"].startswith("f1=")
    else:  # (6301 - 100) + 1 stride-1 windows of 100 points
        assert r["metrics.UCR135/n_eval"] == 6202 * 100 and r["tags.headline"].startswith("pa_f1=")
    assert np.isfinite(r["metrics.threshold"])


def test_energy_is_the_channel_mean_of_the_squared_error():
    class Zero(torch.nn.Module):
        def forward(self, x, *args):
            return torch.zeros_like(x)

    ctx = ts_anomaly.EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=2,
                                 out_dir=".")  # fmt: skip
    values = np.arange(2 * 100 * 2, dtype=np.float32).reshape(200, 2)
    e, _ = ts_anomaly.energies(Zero(), values, [0, 100], ts_anomaly.Recipe(batch_size=1), ctx)
    np.testing.assert_allclose(e.ravel(), (values**2).mean(axis=1))
