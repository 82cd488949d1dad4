"""Monarch Mixer layers against their dense / direct definitions (CPU, float64 where exact)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m2bench.errors import ConfigError
from m2bench.layers.long_conv import HyenaFilter, ImplicitLongConv, fft_conv
from m2bench.layers.mixer import BlockdiagGLU, M2SequenceMixer
from m2bench.layers.monarch import BlockdiagLinear, MonarchLinear

SIZES = [(16, 16, 4), (64, 256, 4), (10, 7, 4), (7, 10, 3), (30, 12, 4), (13, 29, 5)]


def _double(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    return module.double()


@pytest.mark.parametrize("layer_cls", [BlockdiagLinear, MonarchLinear])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("n_in", "n_out", "nblocks"), SIZES)
def test_structured_linear_equals_dense(layer_cls, bias, n_in, n_out, nblocks):
    layer = _double(layer_cls(n_in, n_out, nblocks, bias=bias))
    x = torch.randn(3, 5, n_in, dtype=torch.float64)
    dense = layer.to_dense()
    assert dense.shape == (n_out, n_in)
    expected = x @ dense.T + (layer.bias if bias else 0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_blockdiag_is_block_diagonal_without_shuffle():
    layer = BlockdiagLinear(8, 12, 4, bias=False)
    dense = layer.to_dense()
    for b in range(4):
        block = dense[3 * b : 3 * b + 3]
        assert torch.equal(block[:, 2 * b : 2 * b + 2], layer.weight[b])
        assert block.count_nonzero() == block[:, 2 * b : 2 * b + 2].count_nonzero()


def test_square_monarch_factor_structure():
    # n = b**2: M = P2 BD2 P1 BD1 with P the (b, b) transpose; every output mixes every input.
    b = 4
    layer = _double(MonarchLinear(b * b, b * b, b, bias=False))
    assert layer.weight1.shape == layer.weight2.shape == (b, b, b)
    assert layer.to_dense().count_nonzero() == b**4
    perm = torch.arange(b * b).view(b, b).t().reshape(-1)
    p = torch.eye(b * b, dtype=torch.float64)[perm]
    manual = p @ torch.block_diag(*layer.weight2) @ p @ torch.block_diag(*layer.weight1)
    torch.testing.assert_close(layer.to_dense(), manual)


def _direct_conv(x, k_fwd, k_rev, skip):
    """O(L^2): y[t] = sum_{s<=t} x[s] k_fwd[t-s] + sum_{s>t} x[s] k_rev[s-t-1] + D x[t]."""
    seqlen = x.shape[-1]
    y = torch.zeros_like(x)
    for t in range(seqlen):
        for s in range(seqlen):
            if s <= t:
                y[..., t] += x[..., s] * k_fwd[:, t - s]
            elif k_rev is not None:
                y[..., t] += x[..., s] * k_rev[:, s - t - 1]
    return y + x * skip[:, None]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("seqlen", [1, 7, 16])
def test_fft_conv_equals_direct_convolution(bidirectional, seqlen):
    torch.manual_seed(0)
    x = torch.randn(2, 3, seqlen, dtype=torch.float64)
    k_fwd, k_rev = torch.randn(2, 3, seqlen, dtype=torch.float64)
    skip = torch.randn(3, dtype=torch.float64)
    k_rev = k_rev if bidirectional else None
    expected = _direct_conv(x, k_fwd, k_rev, skip)
    torch.testing.assert_close(fft_conv(x, k_fwd, k_rev, skip), expected)


def test_fft_conv_float32_precision():
    # float32 inputs are convolved in float32; compare with a float64 direct sum.
    torch.manual_seed(1)
    x, k_fwd, k_rev = torch.randn(3, 1, 8, 33).unbind(0)
    skip = torch.randn(8)
    out = fft_conv(x, k_fwd[0], k_rev[0], skip)
    assert out.dtype == torch.float32
    ref = _direct_conv(x.double(), k_fwd[0].double(), k_rev[0].double(), skip.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_causal_conv_does_not_see_the_future():
    torch.manual_seed(0)
    conv = ImplicitLongConv(4, 32, order=8, bidirectional=False)
    x = torch.randn(1, 4, 32)
    later = x.clone()
    later[..., 11:] = torch.randn_like(later[..., 11:])
    y, y_later = conv(x), conv(later)
    torch.testing.assert_close(y[..., :11], y_later[..., :11], rtol=0, atol=1e-6)
    assert not torch.allclose(y[..., 11:], y_later[..., 11:])


def test_bidirectional_conv_sees_the_future():
    torch.manual_seed(0)
    conv = ImplicitLongConv(4, 32, order=8, bidirectional=True)
    x = torch.randn(1, 4, 32)
    later = x.clone()
    later[..., 11:] += 1.0
    assert not torch.allclose(conv(x)[..., :11], conv(later)[..., :11])


def test_hyena_filter_shapes_decay_and_length_independence():
    torch.manual_seed(0)
    filt = HyenaFilter(6, 64, order=16)
    assert filt.freq.shape == (1, 16) and filt.z.shape == (1, 64, 5)
    k_fwd, k_rev = filt(64)
    assert k_fwd.shape == k_rev.shape == (6, 64)
    short_fwd, short_rev = filt(20)
    torch.testing.assert_close(short_fwd, k_fwd[:, :20])
    torch.testing.assert_close(short_rev, k_rev[:, :20])
    # The fixed decay exp(-t |delta|) bounds each channel's envelope; faster for later channels.
    assert filt.deltas[0, 0, -1].abs() > filt.deltas[0, 0, 0].abs()
    assert HyenaFilter(6, 64, order=16, bidirectional=False)(8)[1] is None
    with pytest.raises(ValueError, match="max_len"):
        filt(65)


def test_hyena_sin_frequency_is_one_shared_parameter():
    filt = HyenaFilter(6, 16, order=8)
    names = [name for name, _ in filt.named_parameters() if "freq" in name]
    assert names == ["freq"]
    k_before = filt(16)[1].clone()
    with torch.no_grad():
        filt.freq.add_(1.0)
    assert not torch.allclose(filt(16)[1], k_before)  # the reverse MLP uses it too


def test_short_conv_is_causal_and_mixer_shapes():
    torch.manual_seed(0)
    mixer = M2SequenceMixer(8, 24, hyena_order=8, bidirectional=False)
    u = torch.randn(2, 24, 8)
    later = u.clone()
    later[:, 10:] = torch.randn_like(later[:, 10:])
    out = mixer(u)
    assert out.shape == u.shape
    torch.testing.assert_close(out[:, :10], mixer(later)[:, :10], rtol=0, atol=1e-6)


def test_glu_mlp_equals_dense_formula():
    torch.manual_seed(0)
    mlp = BlockdiagGLU(12, 20, nblocks=4).double().eval()
    h = torch.randn(2, 5, 12, dtype=torch.float64)
    z = h @ mlp.fc_in.to_dense().T
    a = F.gelu(z[..., :20]) * z[..., 20:]
    expected = F.layer_norm(
        a @ mlp.fc_out.to_dense().T + mlp.fc_out.bias + h,
        (12,),
        mlp.norm.weight,
        mlp.norm.bias,
        1e-12,
    )
    torch.testing.assert_close(mlp(h), expected)


@pytest.mark.parametrize(
    "build",
    [
        lambda: BlockdiagLinear(4, 4, 2, kernel="cuda_fused"),
        lambda: MonarchLinear(4, 4, 2, kernel="tvm"),
        lambda: ImplicitLongConv(4, 8, kernel="flash"),
        lambda: M2SequenceMixer(4, 8, kernel="cuda"),
    ],
)
def test_unknown_kernels_are_refused(build):
    with pytest.raises(ConfigError, match="torch, triton"):
        build()


def test_filter_kernels_stay_float32_under_bf16_autocast():
    """bf16 positional features collide at long L; the filter must ignore autocast."""
    from m2bench.layers.long_conv import HyenaFilter

    torch.manual_seed(0)
    filt = HyenaFilter(8, 2048, order=16)
    ref_fwd, ref_rev = filt(2048)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fwd, rev = filt(2048)
    assert fwd.dtype == rev.dtype == torch.float32
    torch.testing.assert_close(fwd, ref_fwd, rtol=0, atol=0)
    torch.testing.assert_close(rev, ref_rev, rtol=0, atol=0)
