"""GPU parity sweep of every Triton kernel against its plain-PyTorch twin (issue #4, part 2).

CUDA only (skipped elsewhere; CI covers the same kernels under TRITON_INTERPRET=1 at small
shapes in tests/test_kernels*.py). Run on the device with ``bash scripts/gpu_tests.sh``.

Each case feeds the kernel inputs in float32 or bfloat16, and the twin the *same* values in
float64, then compares the output and every input gradient by relative error (Frobenius norm).
Shapes cover batch 1 and odd batches (the FFT kernel takes batch rows in pairs), odd widths,
and lengths/rows on either side of the tile, transform-size and autotune boundaries.
Tolerances: float32 inputs run exact (ieee) dots, and the FFT convolution tf32x3 under PyTorch's
default float32 matmul precision (measured 9e-7 at L = 4096); bf16 rounds operands and
outputs (2^-8 = 3.9e-3 per rounding, measured 4.0e-3 for the FFT convolution).
"""

from __future__ import annotations

import pytest
import torch

from m2bench.kernels import reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA parity sweep")

DTYPES = [torch.float32, torch.bfloat16]
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
FFT_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


@pytest.fixture(autouse=True)
def _float32_matmuls_exact():
    """PyTorch's default: no TF32, so float32 FFT convolutions run tf32x3 (and the twins' GEMMs
    exact)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.double()
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def _assert_parity(
    fast, twin, inputs: list[torch.Tensor | None], dtype, tol: float, grads=True
) -> None:
    """Run ``fast`` on ``inputs`` (float tensors cast to ``dtype``; float32 ones stay float32
    where the kernel keeps them so) and ``twin`` on the same values in float64; compare the
    outputs and, with ``grads``, the gradients of a random projection of every output."""
    ins = [None if t is None else t.detach().clone().requires_grad_(grads) for t in inputs]
    ref_ins = [None if t is None else t.detach().double().requires_grad_(grads) for t in ins]
    outs = fast(*ins)
    refs = twin(*ref_ins)
    outs = outs if isinstance(outs, tuple) else (outs,)
    refs = refs if isinstance(refs, tuple) else (refs,)
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        assert o.shape == r.shape, f"output {i}: {tuple(o.shape)} vs {tuple(r.shape)}"
        assert torch.isfinite(o).all(), f"output {i} is not finite"
        err = _rel(o, r)
        assert err < tol, f"output {i} rel err {err:.2e} >= {tol:.0e}"
    if not grads:
        return
    g = torch.Generator(device="cuda").manual_seed(1)
    dys = [torch.randn(r.shape, device="cuda", generator=g).to(o.dtype) for r, o in zip(
        refs, outs, strict=True)]  # fmt: skip
    torch.autograd.backward(outs, dys)
    torch.autograd.backward(refs, [dy.double() for dy in dys])  # the same values
    for i, (t, r) in enumerate(zip(ins, ref_ins, strict=True)):
        if t is None:
            continue
        assert t.grad is not None, f"input {i} got no gradient"
        err = _rel(t.grad, r.grad)
        assert err < tol, f"grad of input {i} rel err {err:.2e} >= {tol:.0e}"


def _randn(*shape, dtype=torch.float32, scale=1.0) -> torch.Tensor:
    return (torch.randn(*shape, device="cuda") * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "m,nblocks,out_block,in_block,bias",
    # batch row 1; odd blocks; rows on either side of a 128-row tile and of AUTOTUNE_MIN_M;
    # M2-BERT-80M's 768 -> 3072 and 3072 -> 768 (4 blocks)
    [(1, 4, 8, 8, False), (127, 3, 70, 33, True), (129, 4, 24, 17, False),
     (4095, 4, 768, 192, True), (4097, 4, 192, 768, False)],
)  # fmt: skip
def test_blockdiag(dtype, m, nblocks, out_block, in_block, bias):
    from m2bench.kernels.blockdiag_triton import blockdiag_matmul

    torch.manual_seed(m)
    x = _randn(m, nblocks * in_block, dtype=dtype)
    w = _randn(nblocks, out_block, in_block, dtype=dtype, scale=in_block**-0.5)
    b = _randn(nblocks * out_block, dtype=dtype) if bias else None
    _assert_parity(blockdiag_matmul, reference.blockdiag_matmul, [x, w, b], dtype, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "m,nblocks,p,r,s", [(1, 4, 8, 8, 8), (129, 3, 17, 16, 9), (4097, 4, 192, 192, 192)]
)
def test_monarch(dtype, m, nblocks, p, r, s):
    from m2bench.kernels.monarch_triton import monarch_matmul

    torch.manual_seed(m)
    x = _randn(m, nblocks * p, dtype=dtype)
    w1 = _randn(nblocks, r, p, dtype=dtype, scale=p**-0.5)
    w2 = _randn(nblocks, s, r, dtype=dtype, scale=r**-0.5)
    _assert_parity(monarch_matmul, reference.monarch_matmul, [x, w1, w2], dtype, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "m,nblocks,out_block,in_block",
    [(1, 2, 16, 8), (127, 2, 70, 33), (4097, 4, 1536, 192)],  # 768 -> 2 x 3072, 4 blocks
)
def test_blockdiag_glu(dtype, m, nblocks, out_block, in_block):
    from m2bench.kernels.mlp_triton import blockdiag_glu

    torch.manual_seed(m)
    h = _randn(m, nblocks * in_block, dtype=dtype)
    w = _randn(nblocks, out_block, in_block, dtype=dtype, scale=in_block**-0.5)
    _assert_parity(blockdiag_glu, reference.blockdiag_glu, [h, w], dtype, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("m,d", [(1, 5), (129, 1000), (4097, 768)])
def test_add_layer_norm(dtype, m, d):
    from m2bench.kernels.mlp_triton import add_layer_norm

    torch.manual_seed(m)
    x, res = _randn(m, d, dtype=dtype, scale=3), _randn(m, d, dtype=dtype)
    weight, bias = _randn(d) + 1, _randn(d)  # LayerNorm parameters stay float32
    inputs = [x, res, weight, bias]
    _assert_parity(add_layer_norm, reference.add_layer_norm, inputs, dtype, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "batch,seqlen,d,taps",
    [(1, 1, 5, 3), (1, 63, 33, 3), (3, 65, 31, 4), (2, 4096, 768, 3)],
)
def test_short_conv_gate(dtype, batch, seqlen, d, taps):
    from m2bench.kernels.gating_triton import short_conv_gate

    torch.manual_seed(seqlen + d)
    z = _randn(batch, seqlen, 3 * d, dtype=dtype)
    w, b = _randn(3 * d, taps, scale=0.5), _randn(3 * d)  # conv parameters stay float32
    _assert_parity(short_conv_gate, reference.short_conv_gate, [z, w, b], dtype, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch,seqlen,d,with_res", [(1, 63, 5, True), (3, 4097, 33, False)])
def test_gate_out(dtype, batch, seqlen, d, with_res):
    from m2bench.kernels.gating_triton import gate_out

    torch.manual_seed(seqlen)
    y = _randn(batch, d, seqlen)  # the FFT convolution's float32 output
    x2 = _randn(batch, d, seqlen, dtype=dtype)
    res = _randn(batch, d, seqlen) if with_res else None
    _assert_parity(gate_out, reference.gate_out, [y, x2, res], dtype, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 63, 65), (3, 4097, 33), (2, 4096, 768)])
def test_transpose(dtype, shape):
    from m2bench.kernels.gating_triton import transpose

    x = _randn(*shape, dtype=dtype)
    _assert_parity(transpose, reference.transpose, [x], dtype, 1e-7)  # a copy: exact


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "batch,channels,seqlen,bidirectional",
    # batch 1 and odd batches (rows go in pairs); odd channels; lengths on either side of the
    # transform-size steps (N = max(512, pow2 >= 2L)) up to the one-program limit L = 8192,
    # and past it into the three-pass kernel (8193)
    [(1, 3, 1, True), (3, 5, 256, True), (2, 3, 257, False), (1, 7, 2047, True),
     (3, 5, 2049, True), (2, 3, 4096, True), (1, 768, 4096, True), (3, 5, 4097, True),
     (1, 3, 8192, False), (2, 3, 8193, True)],
)  # fmt: skip
def test_fft_conv(dtype, batch, channels, seqlen, bidirectional):
    from m2bench.kernels.fftconv_triton import fft_conv

    torch.manual_seed(seqlen + channels)
    x = _randn(batch, channels, seqlen, dtype=dtype)
    k_fwd = _randn(channels, seqlen, scale=seqlen**-0.5)  # filters stay float32, as in the layer
    k_rev = _randn(channels, seqlen, scale=seqlen**-0.5) if bidirectional else None
    skip = _randn(channels)
    _assert_parity(fft_conv, reference.fft_conv, [x, k_fwd, k_rev, skip], dtype, FFT_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "batch,channels,seqlen", [(1, 5, 1000), (3, 768, 4096), (2, 768, 8192), (1, 768, 16384)]
)
def test_fft_conv_gated_inference(dtype, batch, channels, seqlen):
    """The fused inference path (gate and add inside the kernel, no autograd)."""
    from m2bench.kernels.fftconv_triton import fft_conv

    torch.manual_seed(seqlen)
    x, gate, add = (_randn(batch, channels, seqlen, dtype=dtype) for _ in range(3))
    k_fwd, k_rev = (_randn(channels, seqlen, scale=seqlen**-0.5) for _ in range(2))
    skip = _randn(channels)
    with torch.no_grad():
        _assert_parity(fft_conv, reference.fft_conv, [x, k_fwd, k_rev, skip, gate, add], dtype,
                FFT_TOL[dtype], grads=False)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch,channels,seqlen", [(1, 3, 4097), (3, 5, 8192), (1, 2, 32768)])
def test_three_pass_fft_conv(dtype, batch, channels, seqlen):
    """The three-pass kernel (L > 8192 in the layers; any L >= 1 here), forward, gated."""
    from m2bench.kernels import fftconv_long_triton as lt

    torch.manual_seed(seqlen)
    x, gate, add = (_randn(batch, channels, seqlen, dtype=dtype) for _ in range(3))
    k_fwd, k_rev = (_randn(channels, seqlen, scale=seqlen**-0.5) for _ in range(2))
    skip = _randn(channels)
    how = lt.long_transform(seqlen)
    spec = lt.long_spectrum(k_fwd, k_rev, *how)
    prec = "tf32x3" if dtype == torch.float32 else "bf16"

    def fast(x, skip, gate, add):
        return lt.long_fftconv_fwd(x, spec, *how, skip, gate, add, precision=prec)

    def twin(x, skip, gate, add):
        return reference.fft_conv(x, k_fwd.double(), k_rev.double(), skip, gate, add)

    with torch.no_grad():
        _assert_parity(fast, twin, [x, skip, gate, add], dtype, FFT_TOL[dtype], grads=False)


@pytest.mark.parametrize("batch,channels,seqlen", [(1, 3, 4097), (2, 768, 32768)])
def test_three_pass_fft_conv_bf16_scratch(batch, channels, seqlen):
    """The bf16-scratch knob of the three-pass kernel (one more bf16 rounding of the spectrum)."""
    from m2bench.kernels import fftconv_long_triton as lt

    torch.manual_seed(seqlen)
    x, gate, add = (_randn(batch, channels, seqlen, dtype=torch.bfloat16) for _ in range(3))
    k_fwd, k_rev = (_randn(channels, seqlen, scale=seqlen**-0.5) for _ in range(2))
    skip = _randn(channels)
    how = lt.long_transform(seqlen)
    spec = lt.long_spectrum(k_fwd, k_rev, *how)

    def fast(x, skip, gate, add):
        return lt.long_fftconv_fwd(x, spec, *how, skip, gate, add, precision="bf16",
                                   scratch_dtype=torch.bfloat16)  # fmt: skip

    def twin(x, skip, gate, add):
        return reference.fft_conv(x, k_fwd.double(), k_rev.double(), skip, gate, add)

    with torch.no_grad():
        _assert_parity(fast, twin, [x, skip, gate, add], torch.bfloat16, 3e-2, grads=False)
