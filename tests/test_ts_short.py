"""ts-short: M4 metrics by hand, TSLib's training sampler and SMAPE loss, Naive2, the .tsf parser
on the bundled M1 stand-in, M4 file readers and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import tasks.ts_short as ts
from cli import main
from m2bench import tracking
from m2bench.data import sample_dir
from m2bench.errors import DataError
from m2bench.registry import get_task

TASK = get_task("ts-short")

# two series, H = 2, m = 1: in-sample scales mean|diff| = 1.5 and 1
INSAMPLE = [np.array([1.0, 2.0, 4.0]), np.array([10.0, 10.0, 12.0])]
FORECAST = np.array([[2.0, 0.0], [12.0, 12.0]])
ACTUAL = np.array([[3.0, 0.0], [10.0, 14.0]])


def test_m4_metrics_by_hand_with_a_zero_over_zero_step():
    got = ts.group_errors(FORECAST, ACTUAL, INSAMPLE, 1)
    smape = (200 * 1 / 5 + 0 + 200 * 2 / 22 + 200 * 2 / 26) / 4  # 0/0 -> 0/1 = 0
    mape = (100 / 3 + 0 + 100 * 2 / 10 + 100 * 2 / 14) / 4
    mase = ((1 + 0) / 2 / 1.5 + (2 + 2) / 2 / 1) / 2
    assert got == {"smape": pytest.approx(smape), "mape": pytest.approx(mape),
                   "mase": pytest.approx(mase)}  # fmt: skip
    m2 = ts.group_errors(FORECAST, ACTUAL, [np.array([1.0, 5.0, 2.0, 4.0])] * 2, 2)
    assert m2["mase"] == pytest.approx(((1 + 0) / 2 + (2 + 2) / 2) / 2 / 1)  # |2-1|, |4-5|


def test_owa_and_summary_rows_by_hand():
    keys = ("smape", "mape", "mase", "naive2_smape", "naive2_mase")
    rows = {
        "Yearly": dict(zip(keys, (10.0, 1.0, 2.0, 20.0, 2.0), strict=True)),
        "Weekly": dict(zip(keys, (6.0, 1.0, 1.0, 12.0, 4.0), strict=True)),
        "Daily": dict(zip(keys, (2.0, 3.0, 3.0, 4.0, 4.0), strict=True)),
    }
    table = ts.summarise(rows, {"Yearly": 2, "Weekly": 1, "Daily": 3})
    assert table["Yearly"]["owa"] == pytest.approx(0.5 * (2 / 2 + 10 / 20))
    others = table["Others"]  # (1 x Weekly + 3 x Daily) / 4
    assert others["smape"] == pytest.approx(3.0) and others["mase"] == pytest.approx(2.5)
    assert others["owa"] == pytest.approx(0.5 * (2.5 / 4 + 3 / 6))  # ratio of weighted means
    avg = table["Average"]
    assert avg["smape"] == pytest.approx((20 + 6 + 6) / 6)
    assert avg["mase"] == pytest.approx(14 / 6)  # naive2: mase 20/6, smape 64/6
    assert avg["owa"] == pytest.approx(0.5 * (14 / 20 + 32 / 64))
    assert set(ts.summarise({"Yearly": rows["Yearly"]}, {"Yearly": 2})) == {"Yearly"}


def test_smape_loss_masks_zero_over_zero_and_detaches_the_denominator():
    f = torch.tensor([[2.0, 0.0, 5.0]], requires_grad=True)
    a, mask = torch.tensor([[3.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    loss = ts.smape_loss(f, a, mask)
    assert loss.item() == pytest.approx(200 * (1 / 5 + 0 + 0) / 3)
    loss.backward()
    # d/dF of |F-A| / stop_grad(|F|+|A|): sign(F-A)/(|F|+|A|); the 0/0 step has a zero gradient
    expected = 200 / 3 * torch.tensor([[-1 / 5, 0.0, 0.0]])
    torch.testing.assert_close(f.grad, expected)


def test_training_sample_cut_window_and_masks_by_hand():
    s = np.arange(1.0, 11.0)  # n = 10, H = 2: input 2H = 4, target 2H = 4
    x, xm, y, ym = ts.training_sample(s, 5, 2)
    assert list(x) == [2, 3, 4, 5] and list(xm) == [1] * 4
    assert list(y) == [4, 5, 6, 7] and list(ym) == [1] * 4  # loss on y[-H:] = s[cut:cut+H]
    x, xm, y, ym = ts.training_sample(s, 1, 2)  # cut < H: left-zero-padded input, target from 0
    assert list(x) == [0, 0, 0, 1] and list(xm) == [0, 0, 0, 1]
    assert list(y) == [1, 2, 3, 0] and list(ym) == [1, 1, 1, 0]
    x, xm, y, ym = ts.training_sample(s, 9, 2)  # target runs past the end: right-zero-padded
    assert list(y) == [8, 9, 10, 0] and list(ym) == [1, 1, 1, 0]
    cuts = ts.cut_points(np.array([10] * 500 + [2] * 500), 3, np.random.default_rng(0))
    assert set(cuts[:500]) == {7, 8, 9} and set(cuts[500:]) == {1}  # [max(1, n-limit), n-1]


def test_last_window_is_left_zero_padded():
    out = ts.last_window([np.arange(1.0, 4.0), np.arange(1.0, 9.0)], 4)
    assert out.shape == (2, 4, 1)
    assert list(out[0, :, 0]) == [0, 1, 2, 3] and list(out[1, :, 0]) == [5, 6, 7, 8]


def test_naive2_is_the_last_value_for_m1_and_reseasonalises_seasonal_series():
    y = np.array([3.0, 8.0, 1.0, 7.5])
    np.testing.assert_array_equal(ts.naive2(y, 6, 1), [7.5] * 6)
    rng = np.random.default_rng(0)
    noise = rng.normal(10, 1, 40)
    assert not ts.is_seasonal(noise, 4)
    np.testing.assert_array_equal(ts.naive2(noise, 3, 4), [noise[-1]] * 3)
    seasonal = np.tile([1.0, 2.0, 3.0, 2.0], 6) * 10  # pure multiplicative pattern
    assert ts.is_seasonal(seasonal, 4)
    np.testing.assert_allclose(ts.seasonal_indices(seasonal, 4), [0.5, 1, 1.5, 1])
    np.testing.assert_allclose(ts.naive2(seasonal, 6, 4), [10, 20, 30, 20, 10, 20])
    assert not ts.is_seasonal(seasonal[:11], 4)  # fewer than 3 m points: not tested


def test_tsf_parser_on_the_bundled_m1_yearly(tmp_path):
    header, names, series = ts.parse_tsf(sample_dir("ts_short") / ts.M1_FILE)
    assert len(series) == 181 and names[:2] == ["T1", "T2"]
    assert header["frequency"] == "yearly" and header["horizon"] == "6"
    assert min(map(len, series)) == 15 and max(map(len, series)) == 58
    assert series[0][:3].tolist() == [3600, 7700, 12300] and len(series[0]) == 28
    data = TASK.load("test", sample=True)
    (g,) = data.tables["groups"]
    assert (g.name, g.horizon, g.season) == ("M1-Yearly", 6, 1) and g.test.shape == (181, 6)
    np.testing.assert_array_equal(g.test[0], series[0][-6:])
    assert len(g.train[0]) == 22 and data.provenance["data_source"].endswith(ts.M1_FILE)
    bad = tmp_path / "bad.tsf"
    bad.write_text("@attribute series_name string\n@horizon 2\n@data\nT1:1,2\nT2:1,x\n")
    with pytest.raises(DataError, match="line 5: a value is not a number"):
        ts.parse_tsf(bad)


def test_missing_m4_files_are_named_and_the_sample_is_not_m4(tmp_path):
    with pytest.raises(DataError, match=r"M4 Yearly: no M4-info.csv in .*Mcompetitions/M4-methods"):
        TASK.load("test", data_dir=tmp_path, subtask="Yearly")
    with pytest.raises(DataError, match="M4 Monthly is not bundled .*stand-in M1-Yearly"):
        TASK.load("test", sample=True, subtask="Monthly")
    with pytest.raises(DataError, match="unknown ts-short group 'Yerly'"):
        TASK.load("test", sample=True, subtask="Yerly")


def _tslib_folder(root: Path) -> Path:
    """A toy m4 folder in TSLib's layout: 3 Yearly and 2 Weekly series, Naive2 included."""
    m4 = root / "m4"
    m4.mkdir(parents=True)
    ids, sp = ["Y1", "Y2", "W1", "Y3", "W2"], ["Yearly", "Yearly", "Weekly", "Yearly", "Weekly"]
    pd.DataFrame({"M4id": ids, "SP": sp}).to_csv(m4 / "M4-info.csv", index=False)
    rng = np.random.default_rng(1)
    train = [rng.uniform(50, 100, n) for n in (20, 25, 40, 19, 60)]
    test = [rng.uniform(50, 100, 6 if s == "Yearly" else 13) for s in sp]
    for name, arrs in (("training.npz", train), ("test.npz", test)):
        arr = np.empty(len(arrs), dtype=object)
        arr[:] = arrs
        arr.dump(m4 / name)  # TSLib's cache format: a pickled object array
    naive = np.full((5, 48), np.nan)
    for i, t in enumerate(train):
        naive[i, : 6 if sp[i] == "Yearly" else 13] = t[-1]
    pd.DataFrame(naive, index=pd.Index(ids, name="id")).to_csv(m4 / "submission-Naive2.csv")
    return root


def test_tslib_m4_folder_and_raw_csvs_are_read(tmp_path):
    root = _tslib_folder(tmp_path / "a")
    (y,) = TASK.load("test", data_dir=root, subtask="Yearly").tables["groups"]
    assert len(y.train) == 3 and y.test.shape == (3, 6) and y.naive2.shape == (3, 6)
    np.testing.assert_array_equal(y.naive2[:, 0], [t[-1] for t in y.train])
    both = TASK.load("test", data_dir=root).tables["groups"]
    assert [g.name for g in both] == ["Yearly", "Weekly"] and both[1].test.shape == (2, 13)
    raw = tmp_path / "b"
    raw.mkdir()
    pd.DataFrame([[1.0, 2.0, 3.0, np.nan], [4.0, 5.0, 6.0, 7.0]], index=["W1", "W2"]).to_csv(
        raw / "Weekly-train.csv"
    )
    pd.DataFrame(np.ones((2, 13)), index=["W1", "W2"]).to_csv(raw / "Weekly-test.csv")
    (w,) = TASK.load("test", data_dir=raw).tables["groups"]
    assert w.name == "Weekly" and [len(t) for t in w.train] == [3, 4] and w.naive2 is None


def test_cli_m1_yearly_sample_run(store: Path):
    args = ["run", "--task", "ts-short:M1-Yearly", "--sample", "--model", "dlinear",
            "--max-steps", "2", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["metrics.M1-Yearly/n_eval"] == 181 and r["metrics.train/steps"] == 2
    assert r["metrics.smape"] == r["metrics.M1-Yearly/smape"] > 0
    assert r["metrics.mase"] > 0 and r["metrics.owa"] > 0
    assert r["metrics.params_m"] == pytest.approx(2 * (12 * 6 + 6) / 1e6)
    assert r["tags.protocol"] == "clean" and r["tags.naive2"] == "computed"
    assert r["tags.setting"] == "M1-Yearly clean"


def test_cli_all_groups_logs_summary_rows(store: Path, tmp_path: Path):
    root = _tslib_folder(tmp_path / "m4data")
    args = ["run", "--task", "ts-short", "--data-dir", str(root), "--model", "dlinear",
            "--max-steps", "2", "--protocol", "tslib", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["metrics.Yearly/n_eval"] == 3 and r["metrics.Weekly/n_eval"] == 2
    assert r["metrics.smape"] == pytest.approx(r["metrics.Average/smape"])
    expected = (3 * r["metrics.Yearly/smape"] + 2 * r["metrics.Weekly/smape"]) / 5
    assert r["metrics.Average/smape"] == pytest.approx(expected)
    assert r["metrics.Others/smape"] == pytest.approx(r["metrics.Weekly/smape"])
    assert r["tags.naive2"] == "submission-Naive2.csv" and r["tags.protocol"] == "tslib"
