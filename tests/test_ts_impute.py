"""ts-impute on the bundled real ETTh1: windows, the mask rule, fixed clean masks, metrics on the
masked entries only, exactly-once scoring and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tasks.ts_impute as ts_impute
from cli import main
from m2bench import tracking
from m2bench.errors import ConfigError
from m2bench.registry import create_model, get_task
from m2bench.specs import EvalContext

TASK = get_task("ts-impute")
CTX = EvalContext(device=torch.device("cpu"), precision="fp32", batch_size=16, out_dir=".")


@pytest.fixture(scope="module")
def series():
    return TASK.load("test", sample=True).tables["series"][0]


def test_window_counts_match_tslib(series):
    got = [len(series.starts(s, 96)) for s in ("train", "validation", "test")]
    assert got == [8545, 2881, 2881]
    assert series.starts("test", 96)[-1] == 14400 - 96


def test_an_entry_is_masked_where_u_is_at_most_r():
    u = torch.tensor([0.0, 0.25, 0.2500001, 0.7, 1.0])
    assert ts_impute.draw_mask(u, 0.25).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_clean_test_masks_are_fixed_and_have_the_rate(series):
    windows = series.starts("test", 96)
    torch.manual_seed(0)
    a = ts_impute.fixed_masks(windows, "test", (96, 7), 0.25, 20210)
    torch.manual_seed(1)
    np.random.seed(1)
    b = ts_impute.fixed_masks(windows, "test", (96, 7), 0.25, 20210)
    assert torch.equal(a, b) and a.shape == (2881, 96, 7)
    assert abs(1 - a.mean().item() - 0.25) < 0.002  # 1.9M entries
    # a window's mask does not depend on its batch or on the windows scored before it
    assert torch.equal(ts_impute.fixed_masks(windows[100:103], "test", (96, 7), 0.25, 20210),
                       a[100:103])  # fmt: skip
    assert not torch.equal(ts_impute.fixed_masks(windows[:5], "validation", (96, 7), 0.25, 20210),
                           a[:5])  # fmt: skip
    rate = 1 - ts_impute.fixed_masks(windows[:200], "test", (96, 7), 0.5, 20210).mean().item()
    assert abs(rate - 0.5) < 0.01


class _Recorder(torch.nn.Module):
    """Wraps a model and keeps the masks and inputs it is given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.masks, self.inputs = net, [], []

    def forward(self, x, x_mark=None, y_mark=None, mask=None):
        self.masks.append(mask.clone())
        self.inputs.append(x.clone())
        assert torch.equal(x_mark, y_mark)
        return self.net(x, x_mark, y_mark, mask)


def test_clean_masks_are_identical_for_two_models_and_every_window_is_scored_once(series):
    windows = series.starts("test", 96)
    recipe = ts_impute.Recipe(batch_size=256)
    seen = []
    for name in ("dlinear", "itransformer_tiny"):
        torch.manual_seed(len(name))  # different global RNG states: the masks must not care
        net = _Recorder(create_model(name, seq_len=96, pred_len=96, enc_in=7, mark_dim=4))
        outs = list(ts_impute.reconstruct(net, series, windows, ts_impute._eval_masks(recipe,
                                          "test"), recipe, CTX))  # fmt: skip
        seen.append(torch.cat(net.masks))
        x = np.concatenate([o[0] for o in outs])
        assert x.shape == (2881, 96, 7) and sum(len(o[2]) for o in outs) == 2881
        np.testing.assert_array_equal(x[-1], series.values[14400 - 96 : 14400])  # the last window
        inp, m = torch.cat(net.inputs), seen[-1]
        assert torch.all(inp[m == 0] == 0)  # masked inputs are zeroed
        assert torch.equal(inp[m == 1], torch.from_numpy(x)[m == 1])
    assert torch.equal(seen[0], seen[1])


def test_metrics_use_the_masked_entries_only():
    truth = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    pred = np.array([[[0.0, 2.0], [3.0, 100.0]]])
    mask = np.array([[[0, 1], [0, 1]]])  # masked: (0,0) err -1 and (1,0) err 0
    assert ts_impute.masked_errors(truth, pred, mask) == {"mse": 0.5, "mae": 0.5}
    mask = np.array([[[1, 0], [1, 0]]])  # masked: (0,1) err 0 and (1,1) err 96
    assert ts_impute.masked_errors(truth, pred, mask) == {"mse": 96**2 / 2, "mae": 48.0}


def test_recipe_is_checked():
    with pytest.raises(ConfigError, match="task.protocol 'paper'"):
        ts_impute._recipe({"protocol": "paper"})
    with pytest.raises(ConfigError, match=r"task.mask_rate must be in \(0, 1\)"):
        ts_impute._recipe({"mask_rate": 1.5})
    with pytest.raises(ConfigError, match="unknown ts-impute option 'pred_len'"):
        ts_impute._recipe({"pred_len": 96})
    r = ts_impute._recipe({})
    assert (r.protocol, r.mask_rate, r.batch_size, r.lr, r.epochs, r.patience) == (
        "clean", 0.25, 16, 1e-3, 10, 3)  # fmt: skip


def test_cli_sample_run_logs_masked_metrics(store: Path):
    args = ["run", "--task", "ts-impute:ETTh1", "--sample", "--model", "dlinear", "--max-steps",
            "2", "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tracking._client.cache_clear()
    r = tracking.search_runs().iloc[0]
    assert r["status"] == "FINISHED" and r["metrics.ETTh1/n_eval"] == 256
    assert abs(r["metrics.n_masked"] / (256 * 96 * 7) - 0.25) < 0.01
    assert 0 < r["metrics.mse"] < 5 and r["metrics.orig_mse"] > r["metrics.mse"]
    assert r["metrics.train/steps"] == 2 and r["tags.setting"] == "ETTh1 mask=0.25 clean"
    assert r["tags.data_source"] == "sample:ts/ETTh1.csv"
