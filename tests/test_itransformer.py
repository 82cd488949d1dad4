"""iTransformer: shapes, instance norm, variate (non-)equivariance per mixer, training, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.itransformer import ITransformer, ITransformerConfig
from m2bench.errors import ConfigError
from m2bench.registry import create_model

MIXERS = ("attention", "dense", "monarch")
TINY = dict(d_model=32, n_heads=2, d_ff=32, e_layers=1)


def _tiny(mixer: str, **kw: object) -> ITransformer:
    return ITransformer(ITransformerConfig(mixer=mixer, **{**TINY, **kw}))


@pytest.mark.parametrize("mixer", MIXERS)
def test_output_shape(mixer):
    torch.manual_seed(0)
    model = _tiny(mixer, seq_len=48, pred_len=24, enc_in=5)
    out = model(torch.randn(2, 48, 5))
    assert out.shape == (2, 24, 5)
    assert torch.isfinite(out).all()
    mixers = [type(layer.mixer).__name__ for layer in model.layers]
    assert mixers == [{"attention": "SelfAttention", "dense": "DenseMixer",
                       "monarch": "M2SequenceMixer"}[mixer]]  # fmt: skip
    with pytest.raises(ValueError, match="enc_in 5"):
        model(torch.randn(2, 48, 4))


def test_defaults_follow_tslib_etth_script():
    c = ITransformerConfig()
    assert (c.e_layers, c.d_model, c.n_heads, c.d_ff, c.dropout) == (2, 128, 8, 128, 0.1)
    model = create_model("itransformer_dense")
    assert model.layers[0].mixer.M.shape == (8, 7, 7)  # one N x N matrix per head, N = enc_in


@pytest.mark.parametrize("mixer", MIXERS)
def test_instance_norm_makes_forecast_shift_equivariant(mixer):
    torch.manual_seed(0)
    model = _tiny(mixer).eval()
    x = torch.randn(2, 96, 7)
    with torch.no_grad():
        base, shifted = model(x), model(x + 3.0)
        scaled = model(x * 2.0)
    torch.testing.assert_close(shifted, base + 3.0, rtol=0, atol=1e-4)
    assert not torch.allclose(scaled, base)  # not trivially constant


def _permutation_gap(model: ITransformer) -> float:
    torch.manual_seed(1)
    x = torch.randn(3, 96, 7)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    with torch.no_grad():
        return (model(x[:, :, perm]) - model(x)[:, :, perm]).abs().max().item()


def test_attention_is_permutation_equivariant_over_variates():
    torch.manual_seed(0)
    assert _permutation_gap(_tiny("attention").eval()) < 1e-5


def test_dense_mixes_by_token_position_so_is_not_permutation_equivariant():
    torch.manual_seed(0)
    assert _permutation_gap(_tiny("dense").eval()) > 1e-2  # about 0.3 at init


@pytest.fixture(scope="module")
def etth1_windows() -> tuple[torch.Tensor, torch.Tensor]:
    from tasks import ts_data

    path, src, rev = ts_data.locate("ETTh1", None, True)
    s = ts_data.read_series("ETTh1", path, 96, src, rev)
    starts = range(0, 8 * 24, 24)
    x = np.stack([s.values[i : i + 96] for i in starts])
    y = np.stack([s.values[i + 96 : i + 192] for i in starts])
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


@pytest.mark.parametrize(
    "name", ["itransformer_tiny", "itransformer_dense_tiny", "itransformer_monarch_tiny"]
)
def test_training_step_on_etth1_gives_finite_gradients(name, etth1_windows):
    torch.manual_seed(0)
    x, y = etth1_windows
    assert x.shape == (8, 96, 7)
    model = create_model(name)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.mse_loss(model(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all()]  # fmt: skip
    assert not bad, bad
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(d_model=30, n_heads=4), "n_heads"),
        (dict(mixer="mamba"), "mixer"),
        (dict(dropout=1.5), "dropout"),
        (dict(enc_in=0), "enc_in"),
    ],
)
def test_bad_config_raises(overrides, field):
    with pytest.raises(ConfigError, match=field):
        create_model("itransformer_tiny", **overrides)
