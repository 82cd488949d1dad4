"""The GLU-MLP kernels (fused ``GELU(g) * v``, add + LayerNorm, block-diagonal with bias) against
their plain-PyTorch twins and float64, and ``BlockdiagGLU(kernel="triton")`` against the torch
path: on the CPU under TRITON_INTERPRET=1 (CI, small shapes), and on CUDA when a GPU is present."""

from __future__ import annotations

import os

import pytest
import torch

from m2bench.errors import ConfigError
from m2bench.kernels import reference
from m2bench.layers.mixer import BlockdiagGLU

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 (scripts/test.sh sets it)",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FP32 = dict(rtol=1e-4, atol=1e-4)  # fp32 in, fp32 math (the kernels turn TF32 off)


def _grads(fn, inputs, dout):
    """fn(*inputs) and the gradients of ``(out * dout).sum()`` for every input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out.detach(), grads


def _close_rel(got, want, tol):
    """Max error relative to the largest magnitude of ``want`` (for bf16 roundings)."""
    got, want = got.double(), want.double()
    assert (got - want).abs().max().item() <= tol * max(want.abs().max().item(), 1e-6)


@pytest.mark.parametrize(
    "m,nblocks,out_block,in_block",
    # batch 1; odd widths (masking on M, N and K); M and N over one 32-wide tile; 6 blocks
    [(1, 2, 8, 8), (37, 4, 6, 5), (70, 2, 40, 33), (33, 6, 3, 17)],
)
def test_blockdiag_glu_matches_twin_and_float64(m, nblocks, out_block, in_block):
    from m2bench.kernels.mlp_triton import blockdiag_glu

    torch.manual_seed(m + in_block)
    h = torch.randn(m, nblocks * in_block, device=DEVICE)
    w = torch.randn(nblocks, out_block, in_block, device=DEVICE) / in_block**0.5
    da = torch.randn(m, nblocks // 2 * out_block, device=DEVICE)
    a, (dh, dw) = _grads(blockdiag_glu, (h, w), da)
    assert a.shape == da.shape and a.dtype == torch.float32
    a_twin, (dh_twin, dw_twin) = _grads(reference.blockdiag_glu, (h, w), da)
    a64, (dh64, dw64) = _grads(reference.blockdiag_glu, (h.double(), w.double()), da)
    for got, twin, exact in ((a, a_twin, a64), (dh, dh_twin, dh64), (dw, dw_twin, dw64)):
        torch.testing.assert_close(got, twin, **FP32)
        torch.testing.assert_close(got.double(), exact, **FP32)


def test_blockdiag_glu_twin_is_the_layers_split():
    """The twin's gate/value split is the torch path's: fc_in, split at I, GELU(g) * v."""
    torch.manual_seed(0)
    glu = BlockdiagGLU(8, 12, nblocks=4).to(DEVICE)  # out_block 6, gate blocks 0-1, value 2-3
    h = torch.randn(5, 8, device=DEVICE)
    g, v = glu.fc_in(h).split(12, dim=-1)
    want = torch.nn.functional.gelu(g) * v
    torch.testing.assert_close(reference.blockdiag_glu(h, glu.fc_in.weight), want, **FP32)


def test_blockdiag_glu_in_bf16_within_bf16_tolerance():
    from m2bench.kernels.mlp_triton import blockdiag_glu

    torch.manual_seed(1)
    h = torch.randn(45, 4 * 24, device=DEVICE)
    w = torch.randn(4, 20, 24, device=DEVICE) / 24**0.5
    da = torch.randn(45, 40, device=DEVICE)
    a, (dh, dw) = _grads(blockdiag_glu, (h.bfloat16(), w.bfloat16()), da)
    assert a.dtype == dh.dtype == dw.dtype == torch.bfloat16
    # float64 on the same bf16-rounded inputs; the kernel rounds only its output (float32 math)
    a64, (dh64, dw64) = _grads(reference.blockdiag_glu, (h.bfloat16().double(),
                                                          w.bfloat16().double()), da)  # fmt: skip
    _close_rel(a, a64, 8e-3)  # one bf16 rounding (2^-8) of the output
    _close_rel(dh, dh64, 2e-2)  # backward rounds [g, v] and d[g, v] to bf16 on the way
    _close_rel(dw, dw64, 2e-2)


@pytest.mark.parametrize("m,d,strided", [(1, 5, False), (37, 48, True), (9, 100, False)])
def test_add_layer_norm_matches_twin_and_float64(m, d, strided):
    from m2bench.kernels.mlp_triton import add_layer_norm

    torch.manual_seed(m + d)
    x = torch.randn(m, d + 3 if strided else d, device=DEVICE)
    res = torch.randn(m, d, device=DEVICE)
    weight, bias = torch.randn(d, device=DEVICE), torch.randn(d, device=DEVICE)
    dy = torch.randn(m, d, device=DEVICE)

    def fast(x, *rest):  # a column slice: rows strided, as BlockdiagGLU's truncated fc_out
        return add_layer_norm(x[:, :d], *rest, eps=1e-5)

    def twin(x, *rest):
        return reference.add_layer_norm(x[:, :d], *rest, eps=1e-5)

    y, grads = _grads(fast, (x, res, weight, bias), dy)
    y_twin, grads_twin = _grads(twin, (x, res, weight, bias), dy)
    y64, grads64 = _grads(twin, [t.double() for t in (x, res, weight, bias)], dy)
    for got, tw, exact in zip((y, *grads), (y_twin, *grads_twin), (y64, *grads64), strict=True):
        torch.testing.assert_close(got, tw, **FP32)
        torch.testing.assert_close(got.double(), exact, **FP32)


def test_add_layer_norm_in_bf16_within_bf16_tolerance():
    from m2bench.kernels.mlp_triton import add_layer_norm

    torch.manual_seed(2)
    x = (torch.randn(19, 40, device=DEVICE) * 3).bfloat16()
    res = torch.randn(19, 40, device=DEVICE)  # float32 residual, as an fp32 residual stream
    weight, bias = torch.randn(40, device=DEVICE), torch.randn(40, device=DEVICE)
    dy = torch.randn(19, 40, device=DEVICE)
    y, (dx, dres, dw, db) = _grads(
        lambda *t: add_layer_norm(*t, eps=1e-6), (x, res, weight, bias), dy
    )
    assert y.dtype == dx.dtype == torch.bfloat16 and dres.dtype == dw.dtype == torch.float32
    y64, grads64 = _grads(
        lambda *t: reference.add_layer_norm(*t, eps=1e-6),
        [t.double() for t in (x, res, weight, bias)],
        dy,
    )
    _close_rel(y, y64, 8e-3)  # one bf16 rounding of the output; statistics in float32
    for got, want in zip((dx, dres, dw, db), grads64, strict=True):
        _close_rel(got, want, 8e-3)


@pytest.mark.parametrize("m,nblocks,out_block,in_block", [(1, 4, 8, 8), (37, 3, 5, 20)])
def test_blockdiag_with_bias_matches_twin(m, nblocks, out_block, in_block):
    from m2bench.kernels.blockdiag_triton import blockdiag_matmul

    torch.manual_seed(m)
    x = torch.randn(m, nblocks * in_block, device=DEVICE)
    w = torch.randn(nblocks, out_block, in_block, device=DEVICE)
    b = torch.randn(nblocks * out_block, device=DEVICE)
    dy = torch.randn(m, nblocks * out_block, device=DEVICE)
    y, grads = _grads(blockdiag_matmul, (x, w, b), dy)
    y_twin, grads_twin = _grads(reference.blockdiag_matmul, (x, w, b), dy)
    for got, want in zip((y, *grads), (y_twin, *grads_twin), strict=True):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.skipif(DEVICE == "cuda", reason="interpreter check of the CUDA tile configs")
def test_every_cuda_config_computes_the_same_result(monkeypatch):
    """Each autotune candidate, forced as the only config, on a shape with ragged M, N and K."""
    import triton

    from m2bench.kernels import blockdiag_triton as bd
    from m2bench.kernels import mlp_triton as mlp

    torch.manual_seed(3)
    for m, out_block, in_block in ((130, 136, 72), (64, 64, 128)):  # ragged; every BLOCK_K even
        h = torch.randn(m, 4 * in_block)
        w = torch.randn(4, out_block, in_block) / in_block**0.5
        bias = torch.randn(4 * out_block)
        y_want = reference.blockdiag_matmul(h, w, bias)
        a_want = reference.blockdiag_glu(h, w)
        for cfg in [*bd.CUDA_CONFIGS, bd.SMALL_CONFIG]:
            tuned = triton.autotune([cfg], bd._KEY)(bd._blockdiag_heur)
            monkeypatch.setattr(bd, "_blockdiag_interp", tuned)
            torch.testing.assert_close(bd.blockdiag_matmul_fwd(h, w, bias), y_want, **FP32)
        for cfg in [*mlp.CUDA_CONFIGS, mlp.SMALL_CONFIG]:
            monkeypatch.setattr(mlp, "_glu_interp", triton.autotune([cfg], mlp._KEY)(mlp._glu_heur))
            torch.testing.assert_close(mlp.blockdiag_glu_fwd(h, w), a_want, **FP32)


def test_small_products_on_cuda_skip_autotuning(monkeypatch):
    """Below AUTOTUNE_MIN_M rows CUDA launches one fixed config (no compile of every candidate)."""
    from m2bench.kernels import blockdiag_triton as bd

    monkeypatch.setattr(bd, "_interpreting", lambda: False)
    small = bd.AUTOTUNE_MIN_M - 1
    assert bd.pick_kernel("interp", "small", "tuned", small) == "small"
    assert bd.pick_kernel("interp", "small", "tuned", bd.AUTOTUNE_MIN_M) == "tuned"
    monkeypatch.setattr(bd, "_interpreting", lambda: True)
    assert bd.pick_kernel("interp", "small", "tuned", 10**6) == "interp"


def _glu_pair(d: int, inner: int, nblocks: int):
    fast = BlockdiagGLU(d, inner, nblocks=nblocks, kernel="triton").to(DEVICE)
    slow = BlockdiagGLU(d, inner, nblocks=nblocks, kernel="torch").to(DEVICE)
    with torch.no_grad():  # a non-trivial LayerNorm affine
        fast.norm.weight.uniform_(0.5, 1.5)
        fast.norm.bias.uniform_(-0.5, 0.5)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


@pytest.mark.parametrize(
    "shape,d,inner,nblocks",
    # (B, L, d) with aligned widths; batch 1 as (1, d); widths 4 blocks do not divide (d 10,
    # I 6: padded fc_in input, fc_out input and output); 2 blocks
    [((2, 5), 32, 64, 4), ((1,), 32, 64, 4), ((3, 7), 10, 6, 4), ((4,), 12, 20, 2)],
)
def test_glu_layer_with_triton_equals_torch(shape, d, inner, nblocks):
    torch.manual_seed(d + inner)
    fast, slow = _glu_pair(d, inner, nblocks)
    h = torch.randn(*shape, d, device=DEVICE)
    dout = torch.randn(*shape, d, device=DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False  # the einsum path in fp32 too
    outs = []
    for layer in (fast, slow):
        hi = h.clone().requires_grad_(True)
        y = layer(hi)
        assert y.shape == h.shape
        (y * dout).sum().backward()
        outs.append((y.detach(), hi.grad, *(p.grad for p in layer.parameters())))
    for got, want in zip(*outs, strict=True):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU autocast; the GPU run is tests/test_gpu.py's")
def test_glu_layer_under_bf16_autocast_within_bf16_tolerance():
    torch.manual_seed(4)
    fast, slow = _glu_pair(32, 64, 4)
    h = torch.randn(2, 9, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast(h)
        want = slow(h).float()
    assert got.dtype == torch.bfloat16  # the autocast dtype (the torch path's LayerNorm: fp32)
    with torch.no_grad():
        exact = slow(h)
    # LayerNorm output is O(1): both within a few bf16 roundings (2^-8) of the float32 result
    assert (got.float() - exact).abs().max() <= 3e-2
    assert (got.float() - want).abs().max() <= 3e-2


def test_glu_layer_refuses_block_counts_the_kernel_cannot_split():
    with pytest.raises(ConfigError, match="even nblocks"):
        BlockdiagGLU(12, 12, nblocks=3, kernel="triton")
    with pytest.raises(ConfigError, match="even nblocks"):
        BlockdiagGLU(12, 5, nblocks=4, kernel="triton")  # 2I = 10 not divisible by 4
    BlockdiagGLU(12, 5, nblocks=4, kernel="torch")  # the torch path pads instead


@pytest.mark.parametrize(
    "h_shape,w_shape,dtype,match",
    [
        ((2, 12), (3, 4, 4), torch.float32, "nblocks even"),
        ((2, 12), (4, 4, 4), torch.float32, r"h must be \(M, 16\).*\(2, 12\)"),
        ((16,), (4, 4, 4), torch.float32, r"h must be \(M, 16\)"),
        ((2, 16), (4, 4, 4), torch.float64, "not supported"),
        ((2, 16), (4, 4, 4), torch.bfloat16, "dtypes differ"),
    ],
)
def test_blockdiag_glu_rejects_bad_inputs(h_shape, w_shape, dtype, match):
    from m2bench.kernels.mlp_triton import blockdiag_glu

    h = torch.ones(h_shape, device=DEVICE, dtype=dtype)
    w = torch.ones(w_shape, device=DEVICE, dtype=torch.float64 if dtype == torch.float64 else None)
    with pytest.raises(ValueError, match=match):
        blockdiag_glu(h, w)


@pytest.mark.parametrize(
    "x_shape,r_shape,wb_shape,dtype,match",
    [
        ((3, 8), (3, 9), (8,), torch.float32, "share one"),
        ((8,), (8,), (8,), torch.float32, "share one"),
        ((3, 8), (3, 8), (9,), torch.float32, r"weight and bias must be \(8,\)"),
        ((3, 8), (3, 8), (8,), torch.float64, "not supported"),
    ],
)
def test_add_layer_norm_rejects_bad_inputs(x_shape, r_shape, wb_shape, dtype, match):
    from m2bench.kernels.mlp_triton import add_layer_norm

    x = torch.ones(x_shape, device=DEVICE, dtype=dtype)
    r = torch.ones(r_shape, device=DEVICE)
    wb = torch.ones(wb_shape, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        add_layer_norm(x, r, wb, wb, 1e-5)


def test_mlp_kernels_on_cpu_without_interpreter_refuse(monkeypatch):
    from m2bench.kernels.mlp_triton import add_layer_norm, blockdiag_glu

    if DEVICE == "cuda":
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="Triton kernels need CUDA"):
        blockdiag_glu(torch.ones(2, 8), torch.ones(2, 4, 4))
    with pytest.raises(RuntimeError, match="Triton kernels need CUDA"):
        add_layer_norm(torch.ones(2, 8), torch.ones(2, 8), torch.ones(8), torch.ones(8))
