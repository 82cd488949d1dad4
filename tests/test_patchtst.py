"""PatchTST and the JustDense dense mixer: patching, mixer swap, formula, norm, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.patchtst import PatchTST, PatchTSTConfig
from m2bench.errors import ConfigError
from m2bench.layers.dense_mixer import DenseMixer
from m2bench.registry import create_model

MIXERS = ("attention", "dense", "monarch")
TINY = dict(d_model=32, n_heads=2, d_ff=64, e_layers=1)


def _tiny(mixer: str, **kw: object) -> PatchTST:
    return PatchTST(PatchTSTConfig(mixer=mixer, **{**TINY, **kw}))


def test_patch_num_for_l96():
    assert PatchTSTConfig().patch_num == 12
    assert PatchTSTConfig(seq_len=336).patch_num == 42  # floor(320/8) + 2


@pytest.mark.parametrize("mixer", MIXERS)
def test_output_shape(mixer):
    torch.manual_seed(0)
    model = _tiny(mixer, pred_len=24, enc_in=3)
    out = model(torch.randn(2, 96, 3))
    assert out.shape == (2, 24, 3)
    assert torch.isfinite(out).all()
    mixers = [type(layer.mixer).__name__ for layer in model.layers]
    assert mixers == [{"attention": "SelfAttention", "dense": "DenseMixer",
                       "monarch": "M2SequenceMixer"}[mixer]]  # fmt: skip


def test_dense_mixer_matches_einsum_and_init():
    torch.manual_seed(0)
    n, d, h = 12, 32, 4
    mixer = DenseMixer(n, d, h)
    x = torch.randn(3, n, d)
    m = mixer.M.detach()
    want = x.clone()
    xh = x.view(3, n, h, d // h)
    for head in range(h):
        want[:, :, head * 8 : (head + 1) * 8] += (m[head] @ xh[:, :, head]) / math.sqrt(n)
    torch.testing.assert_close(mixer(x), want, rtol=1e-5, atol=1e-5)
    big = DenseMixer(96, 64, 8)  # many draws for a tight std estimate: std 0.0142 (spec §10)
    want_std = math.sqrt(2.0 / (96**2 + 8 * 96))
    assert abs(big.M.std().item() - want_std) < 0.03 * want_std
    with pytest.raises(ValueError, match="12 tokens"):
        mixer(torch.randn(1, 13, d))


def test_dense_mixer_is_linear_and_input_independent():
    torch.manual_seed(0)
    mixer = DenseMixer(12, 16, 2)
    a, b = torch.randn(2, 12, 16), torch.randn(2, 12, 16)
    torch.testing.assert_close(mixer(a + b), mixer(a) + mixer(b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixer(2.5 * a), 2.5 * mixer(a), rtol=1e-5, atol=1e-5)
    # the same token-mixing matrix applies to every input: probe it with unit impulses
    eye = torch.eye(12).unsqueeze(-1).expand(12, 12, 16)  # batch of one-hot token inputs
    probe = mixer(eye)  # probe[s, l, :] = delta(l, s) + M[head, l, s] / sqrt(N)
    m0 = (probe[:, :, 0].T - torch.eye(12)) * math.sqrt(12)
    torch.testing.assert_close(m0, mixer.M.detach()[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mixer", MIXERS)
def test_instance_norm_makes_forecast_shift_equivariant(mixer):
    torch.manual_seed(0)
    model = _tiny(mixer).eval()
    x = torch.randn(2, 96, 7)
    with torch.no_grad():
        base, shifted = model(x), model(x + 3.0)
    torch.testing.assert_close(shifted, base + 3.0, rtol=0, atol=1e-4)
    assert not torch.allclose(model(x * 2.0), base)  # not trivially constant


@pytest.fixture(scope="module")
def etth1_windows() -> tuple[torch.Tensor, torch.Tensor]:
    from tasks import ts_data

    path, src, rev = ts_data.locate("ETTh1", None, True)
    s = ts_data.read_series("ETTh1", path, 96, src, rev)
    starts = range(0, 8 * 24, 24)
    x = np.stack([s.values[i : i + 96] for i in starts])
    y = np.stack([s.values[i + 96 : i + 192] for i in starts])
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


@pytest.mark.parametrize("name", ["patchtst_tiny", "patchtst_dense_tiny", "patchtst_monarch_tiny"])
def test_training_step_on_etth1_gives_finite_gradients(name, etth1_windows):
    torch.manual_seed(0)
    x, y = etth1_windows
    model = create_model(name)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = torch.nn.functional.mse_loss(model(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all()]  # fmt: skip
    assert not bad, bad
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(seq_len=7), "patch_len"),
        (dict(d_model=30, n_heads=4), "n_heads"),
        (dict(mixer="mamba"), "mixer"),
        (dict(dropout=1.5), "dropout"),
        (dict(stride=0), "stride"),
    ],
)
def test_bad_config_raises(overrides, field):
    with pytest.raises(ConfigError, match=field):
        create_model("patchtst_tiny", **overrides)


def test_short_inputs_padded_to_one_patch_as_tslib():
    """M4 Yearly: seq_len 2H = 12 < patch_len 16; TSLib's end padding of 8 gives one patch."""
    c = PatchTSTConfig(seq_len=12, pred_len=6, enc_in=1, **TINY)
    assert c.patch_num == 1
    assert _tiny("attention", seq_len=12, pred_len=6, enc_in=1)(torch.randn(3, 12, 1)).shape == (
        3, 6, 1)  # fmt: skip
    with pytest.raises(ConfigError, match="patch_len"):
        PatchTSTConfig(seq_len=7, **TINY)
