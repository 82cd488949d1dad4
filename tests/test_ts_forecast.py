"""ts-forecast on the real bundled series: TSLib's windows and scaler, metrics by hand, bad CSVs,
DLinear, exactly-once scoring and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import main
from m2bench import tracking
from m2bench.data import sample_dir
from m2bench.errors import DataError
from m2bench.metrics import point_errors
from m2bench.registry import MODELS, create_model, get_task, list_models
from m2bench.specs import EvalContext
from tasks import ts_data, ts_forecast, ts_train

TS = sample_dir("ts")
TASK = get_task("ts-forecast")


def _series(name: str, seq_len: int):
    path, source, rev = ts_data.locate(name, None, True)
    return ts_data.read_series(name, path, seq_len, source, rev)


@pytest.mark.parametrize(
    ("name", "seq_len", "pred_len", "counts"),
    [
        ("ETTh1", 96, 96, (8449, 2785, 2785)),
        ("ETTh1", 96, 192, (8353, 2689, 2689)),
        ("ETTh2", 96, 336, (8209, 2545, 2545)),
        ("ETTh1", 96, 720, (7825, 2161, 2161)),
        ("Exchange", 96, 96, (5120, 665, 1422)),
        ("Exchange", 96, 720, (4496, 41, 798)),
        ("ILI", 36, 24, (617, 74, 170)),
        ("ILI", 36, 60, (581, 38, 134)),
    ],
)
def test_window_counts_match_tslib(name, seq_len, pred_len, counts):
    s = _series(name, seq_len)
    assert tuple(s.windows(x, seq_len, pred_len) for x in ("train", "validation", "test")) == counts


def test_scaler_is_fitted_on_the_training_rows_only():
    s = _series("ETTh1", 96)
    raw = pd.read_csv(TS / "ETTh1.csv")[s.columns].to_numpy(np.float64)
    np.testing.assert_allclose(s.mean, raw[:8640].mean(0), rtol=1e-6)
    np.testing.assert_allclose(s.scale, raw[:8640].std(0), rtol=1e-6)  # population std
    np.testing.assert_allclose(s.mean, [7.9377, 2.0210, 5.0798, 0.7462, 2.7818, 0.7885, 17.1283],
                               atol=1e-4)  # fmt: skip
    assert not np.allclose(s.mean, raw.mean(0), rtol=1e-3)  # the whole file would differ
    np.testing.assert_allclose(s.inverse(s.values[:5]), raw[:5], rtol=1e-5)
    assert s.columns[-1] == "OT" and s.borders["test"] == (11520 - 96, 14400)


def test_point_errors_by_hand():
    got = point_errors([[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [6.0, 4.0]])
    assert got == {"mse": pytest.approx((0 + 4 + 9 + 0) / 4), "mae": pytest.approx(5 / 4)}


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(tmp_path / "ETTh1.csv", index=False)
    return tmp_path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.drop(columns=["OT"]), "no target column 'OT'"),
        (
            lambda f: f.assign(HULL=f["HULL"].astype(object).where(f.index != 5, "n/a?")),
            r"column 'HULL' row 7 is not a number \('n/a\?'\)",
        ),
        (lambda f: f[["HUFL", "date", "OT"]], "first column must be 'date'"),
        (lambda f: f.assign(MUFL=f["MUFL"].where(f.index != 3)), "column 'MUFL' row 5 is empty"),
        (
            lambda f: f.assign(LULL=f["LULL"].where(f.index != 9, np.inf)),
            r"column 'LULL' row 11 is not finite",
        ),  # fmt: skip
        (lambda f: f.iloc[:999], r"ETTh1.csv: an ETT file needs 14400 rows, this one has 999"),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, mutate, match):
    frame = mutate(pd.read_csv(TS / "ETTh1.csv"))
    with pytest.raises(DataError, match=match):
        TASK.load("test", data_dir=_csv(tmp_path, frame), subtask="ETTh1")


def test_missing_file_and_unknown_dataset_are_named(tmp_path):
    with pytest.raises(DataError, match=r"no ETTh2.csv in .*ETT-small/ETTh2.csv"):
        TASK.load("test", data_dir=tmp_path, subtask="ETTh2")
    with pytest.raises(DataError, match="unknown time-series dataset 'ETTh9'"):
        TASK.load("test", sample=True, subtask="ETTh9")
    (tmp_path / "ETT-small").mkdir()  # TSLib's own sub-folder layout is found too
    shutil.copy(TS / "ETTh2.csv", tmp_path / "ETT-small" / "ETTh2.csv")
    assert TASK.load("test", data_dir=tmp_path, subtask="ETTh2").provenance["dataset"] == "ETTh2"


def test_dlinear_decomposition_and_shapes():
    model = create_model("dlinear", seq_len=96, pred_len=24, enc_in=7)
    const = torch.full((2, 96, 7), 3.0)
    seasonal, trend = __import__("baselines.dlinear", fromlist=["x"]).series_decomp(const, 25)
    assert torch.allclose(trend, const) and torch.allclose(seasonal, torch.zeros_like(const))
    # weights start at 1/L: a constant input maps to (1/L * L) * c + biases on the trend path
    out = model(const)
    assert out.shape == (2, 24, 7)
    bias = model.seasonal[0].bias + model.trend[0].bias
    torch.testing.assert_close(out[0, :, 0], 3.0 + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="seq_len 96"):
        model(torch.zeros(1, 95, 7))


def test_every_test_window_scored_once_and_legacy_drop_last(tmp_path):
    s = _series("ETTh1", 96)
    starts = s.starts("test", 96, 96)
    net = create_model("dlinear")
    ctx = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=32, out_dir=tmp_path)
    pred, truth, _ = ts_forecast._predict(net, s, starts, 96, 96, ctx, ts_forecast.Recipe())
    assert pred.shape == truth.shape == (2785, 96, 7)
    np.testing.assert_array_equal(truth[-1], s.values[14400 - 96 : 14400])  # the last window


def test_cli_sample_run_trains_and_logs(store: Path):
    args = ["run", "--task", "ts-forecast:ETTh1", "--sample", "--model", "dlinear", "--pred-len",
            "192", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["metrics.ETTh1/n_eval"] == 256 and r["tags.pred_len"] == "192"
    assert r["metrics.params_m"] == pytest.approx(2 * (96 * 192 + 192) / 1e6)
    assert pd.isna(r.get("metrics.params_nonembed_m"))  # not the default-geometry model's count
    assert r["metrics.train/steps"] == 20 and r["tags.protocol"] == "clean"
    assert 0 < r["metrics.mse"] < 3 and r["metrics.orig_mse"] > r["metrics.mse"]
    assert r["tags.data_source"] == "sample:ts/ETTh1.csv"


def test_type1_lr_halves_after_the_second_epoch():
    captured = {}

    def fake_train(net, batches, loss_fn, per_epoch, cfg, *, optimizer, **kw):
        opt, set_lr = optimizer(net, 100)
        captured["lrs"] = []
        for step in (0, per_epoch - 1, per_epoch, 2 * per_epoch, 3 * per_epoch):
            set_lr(step)
            captured["lrs"].append(opt.param_groups[0]["lr"])
        raise StopIteration

    ctx = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=8, out_dir=".")
    orig = ts_train.loop.train
    ts_train.loop.train = fake_train
    try:
        with pytest.raises(StopIteration):
            ts_train.fit(create_model("dlinear", enc_in=1), n_train=64, make_batch=None,
                         loss_fn=None, val_score=None, ctx=ctx,
                         recipe=ts_train.FitRecipe(lr=1e-3, batch_size=8))  # fmt: skip
    finally:
        ts_train.loop.train = orig
    assert captured["lrs"] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4])


def test_early_stopping_restores_the_best_epoch_and_ties_count_as_improvement(tmp_path):
    """Scores 3, 2, 2 (tie: kept), 5, 4, 6 with patience 3: stops after epoch 6, epoch-3 weights."""
    net = torch.nn.Linear(1, 1)
    scores = iter([3.0, 2.0, 2.0, 5.0, 4.0, 6.0, 1.0])
    weights = []

    def val_score():
        weights.append(net.weight.item())
        return next(scores)

    ctx = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=4, out_dir=tmp_path)
    stats = ts_train.fit(
        net, n_train=8, make_batch=lambda idx, epoch: (torch.ones(len(idx), 1),),
        loss_fn=lambda m, b: m(b[0]).pow(2).mean(), val_score=val_score, ctx=ctx,
        recipe=ts_train.FitRecipe(lr=0.1, batch_size=4, epochs=10, patience=3),
    )  # fmt: skip
    assert stats["metrics"]["train/epochs"] == 6 and stats["metrics"]["train/steps"] == 12
    assert stats["metrics"]["train/best_val_loss"] == 2.0
    assert net.weight.item() == pytest.approx(weights[2])  # the tie at epoch 3 replaced epoch 2


def test_time_features_match_tslib_timef_h():
    s = _series("ETTh1", 96)
    # 2016-07-01 00:00 is a Friday (weekday 4), day 1, day of year 183; row 1 is 01:00
    np.testing.assert_allclose(s.marks[0], [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5], atol=1e-6)
    np.testing.assert_allclose(s.marks[1, 0], 1 / 23 - 0.5, atol=1e-6)
    assert s.marks.shape == (17420, 4) and s.marks.dtype == np.float32


def test_itransformer_adds_one_token_per_time_feature():
    s = _series("ETTh1", 96)
    net = create_model("itransformer_dense_tiny", mark_dim=4).eval()
    assert net.layers[0].mixer.n_tokens == 7 + 4  # JustDense first commit: L = N + 4
    x, xm, ym, _ = ts_forecast._batch(s, [0, 1], 96, 96, "cpu", True)
    out = net(x, xm, ym)
    assert out.shape == (2, 96, 7)
    assert not torch.allclose(out, net(x, xm + 0.3, ym))  # the marks are used
    with pytest.raises(ValueError, match="time-feature tokens"):
        net(x)


def test_leaderboard_keeps_one_row_per_horizon(store: Path):
    for h in ("96", "192"):
        args = ["run", "--task", "ts-forecast:ETTh1", "--sample", "--model", "dlinear",
                "--pred-len", h, "--max-steps", "2", "--no-progress"]  # fmt: skip
        assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    res = CliRunner().invoke(main, ["leaderboard", "--include-sample", "--out", "lb.csv"])
    assert res.exit_code == 0, res.output
    lb = pd.read_csv(store / "lb.csv")
    assert sorted(lb["setting"]) == ["ETTh1 96->192 clean", "ETTh1 96->96 clean"]
    assert list(lb["rank"]) == [1, 1]  # different horizons are never ranked together
    assert _run("--max-steps", "5").exit_code == 0  # another budget: a row of its own
    CliRunner().invoke(main, ["leaderboard", "--include-sample", "--out", "lb.csv"])
    lb = pd.read_csv(store / "lb.csv")
    assert sorted(lb["budget"]) == ["max_steps=2", "max_steps=2", "max_steps=5"]
    assert list(lb["rank"]) == [1, 1, 1]


def _run(*args: str):
    tracking._client.cache_clear()
    return CliRunner().invoke(main, ["run", "--task", "ts-forecast:ETTh1", "--sample", "--model",
                                     "dlinear", "--no-progress", *args])  # fmt: skip


def test_run_flags_reach_training_and_the_records(store: Path):
    """--epochs bounds the epochs (it was ignored), the model params describe the trained model
    (its horizon), a cut run says so in its budget, and legacy drop-last is its own setting."""
    res = _run("--epochs", "1", "--pred-len", "192", "task.legacy_drop_last=true")
    assert res.exit_code == 0, res.output
    r = tracking.search_runs().iloc[0]
    assert r["metrics.train/epochs"] == 1 and r["metrics.train/steps"] == 20  # --sample: 20 steps
    assert "epochs<=1 " in r["tags.recipe"] and r["params.model.pred_len"] == "192"
    assert r["tags.budget"] == "max_steps=20 epochs=1"
    assert r["tags.setting"] == "ETTh1 96->192 clean drop_last"


def test_seeds_run_one_training_per_seed_with_mean_and_std(store: Path):
    res = _run("--max-steps", "3", "--seeds", "1,2")
    assert res.exit_code == 0, res.output
    m = tracking.search_runs().iloc[0]
    one, two = m["metrics.seed1/mse"], m["metrics.seed2/mse"]
    assert one != two  # two trainings from different seeds
    assert m["metrics.mse"] == pytest.approx((one + two) / 2)
    assert m["metrics.mse_std"] == pytest.approx(abs(one - two) / 2**0.5)
    assert m["metrics.ETTh1/n_eval"] == 256 and m["tags.seeds"] == "1,2" and m["tags.seed"] == "1"
    assert (store / "runs/ts-forecast/dlinear/seed2/metrics.json").parent.is_dir()
    res = _run("--max-steps", "3", "--seeds", "2")  # one seed: the same as the second job
    tracking._client.cache_clear()
    single = tracking.search_runs().sort_values("start_time").iloc[-1]
    assert single["metrics.mse"] == pytest.approx(two)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--batch-size", "8"], "set task.batch_size=8 instead of --batch-size"),
        (["--pred-len", "0"], "Invalid value for '--pred-len'"),
        (["task.pred_len=-5"], "task.pred_len must be >= 1"),
        (["task.epochs=abc"], "ts-forecast option task.epochs must be a number, got 'abc'"),
        (["task.lr=0"], "task.lr must be > 0"),
        (["task.marks=maybe"], "task.marks must be true or false"),
        (["--epochs", "0"], "epochs must be > 0"),
        (["--max-steps", "0"], "max_steps must be >= 1"),
    ],
)
def test_bad_settings_fail_before_any_run(store: Path, args, match):
    res = _run(*args)
    assert res.exit_code == 2 and match in res.output, res.output
    assert tracking.search_runs().empty


def test_a_horizon_longer_than_the_splits_fails_before_any_run(store: Path):
    res = CliRunner().invoke(main, ["run", "--task", "ts-forecast:ILI", "--sample", "--model",
                                    "dlinear", "--pred-len", "720", "--no-progress"])  # fmt: skip
    assert res.exit_code == 2 and "ILI: a split has no 36->720 window" in res.output
    assert "shorter --pred-len (its horizons: 24, 36, 48, 60)" in res.output
    tracking._client.cache_clear()
    assert tracking.search_runs().empty


def test_bundled_files_read_through_data_dir_are_recorded_relative_to_the_repo():
    """Records must not carry one checkout's absolute path (CI and users clone elsewhere)."""
    data = TASK.load("test", data_dir=str(TS.resolve()), subtask="ETTh1")
    assert data.provenance["data_source"] == "dir:tasks/data/ts/ETTh1.csv"


def test_the_last_epoch_is_validated_and_can_be_the_best(tmp_path):
    """TSLib validates after every epoch, the final one included."""
    net = torch.nn.Linear(1, 1)
    scores = iter([3.0, 2.0, 1.0])
    weights = []

    def val_score():
        weights.append(net.weight.item())
        return next(scores)

    ctx = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=4, out_dir=tmp_path)
    stats = ts_train.fit(
        net, n_train=8, make_batch=lambda idx, epoch: (torch.ones(len(idx), 1),),
        loss_fn=lambda m, b: m(b[0]).pow(2).mean(), val_score=val_score, ctx=ctx,
        recipe=ts_train.FitRecipe(lr=0.1, batch_size=4, epochs=3, patience=3),
    )  # fmt: skip
    assert stats["metrics"]["train/epochs"] == 3 and len(weights) == 3
    assert net.weight.item() == pytest.approx(weights[2])  # the final epoch's weights were best


FORECAST_TINY = [n for n in list_models() if MODELS.get(n).kind == "forecast" and "tiny" in n]


def test_every_model_family_has_its_three_mixer_arms():
    families = {"transformer", "informer", "autoformer", "patchtst", "itransformer", "mamba",
                "s_mamba"}  # fmt: skip
    for f in families:
        for arm in ("", "_dense", "_monarch"):
            assert MODELS.get(f + arm).kind == "forecast" and f"{f}{arm}_tiny" in FORECAST_TINY
    assert "dlinear" in list_models()


@pytest.mark.parametrize("name", FORECAST_TINY)
def test_every_model_trains_a_step_on_real_etth1_windows(name):
    s = _series("ETTh1", 96)
    torch.manual_seed(0)
    net = create_model(name, pred_len=24, mark_dim=4)
    x, xm, ym, y = ts_forecast._batch(s, list(range(0, 800, 100)), 96, 24, "cpu", True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.mse_loss(net(x, xm, ym), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    with torch.no_grad():
        assert torch.isfinite(net(x, xm, ym)).all()
