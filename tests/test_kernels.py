"""Kernels against their plain-PyTorch twins: on the CPU under TRITON_INTERPRET=1 (CI, small
shapes), and on CUDA when a GPU is present (tests/test_gpu.py has the heavier shapes)."""

from __future__ import annotations

import os

import pytest
import torch

from m2bench.kernels import reference
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.layers.monarch import BlockdiagLinear, MonarchLinear
from m2bench.registry import create_model

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 (scripts/test.sh sets it)",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    "m,nblocks,out_block,in_block",
    [(1, 4, 8, 8), (37, 4, 24, 16), (130, 2, 70, 33), (64, 3, 5, 96)],  # batch 1, odd sizes
)
def test_blockdiag_forward_and_backward_match_the_twin(m, nblocks, out_block, in_block):
    from m2bench.kernels.blockdiag_triton import blockdiag_matmul

    torch.manual_seed(m)
    x = torch.randn(m, nblocks * in_block, device=DEVICE, requires_grad=True)
    w = torch.randn(nblocks, out_block, in_block, device=DEVICE, requires_grad=True)
    dy = torch.randn(m, nblocks * out_block, device=DEVICE)
    y = blockdiag_matmul(x, w)
    (y * dy).sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    y_ref = reference.blockdiag_matmul(x, w)
    (y_ref * dy).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-4)  # fp32 in, fp32 math (the kernel turns TF32 off)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, x.grad, **tol)
    torch.testing.assert_close(gw, w.grad, **tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 tensor-core path: CUDA only")
def test_blockdiag_bf16_on_cuda_within_bf16_tolerance():
    from m2bench.kernels.blockdiag_triton import blockdiag_matmul

    torch.manual_seed(0)
    x = torch.randn(4096, 768, device="cuda")
    w = torch.randn(4, 768, 192, device="cuda") / 192**0.5
    ref = reference.blockdiag_matmul(x.double(), w.double())
    y = blockdiag_matmul(x.bfloat16(), w.bfloat16()).double()
    assert ((y - ref).norm() / ref.norm()).item() < 1e-2


def test_blockdiag_layer_with_triton_equals_torch_and_dense():
    torch.manual_seed(0)
    fast = BlockdiagLinear(48, 100, 4, kernel="triton").to(DEVICE)  # 100 not divisible by 4 blocks
    slow = BlockdiagLinear(48, 100, 4, kernel="torch").to(DEVICE)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 5, 48, device=DEVICE)
    tol = dict(rtol=1e-4, atol=1e-4)
    torch.backends.cuda.matmul.allow_tf32 = False  # the einsum twin in fp32 too
    torch.testing.assert_close(fast(x), slow(x), **tol)
    torch.testing.assert_close(fast(x), x @ fast.to_dense().T + fast.bias, **tol)


def test_m2_bert_with_triton_kernels_matches_torch_and_is_tagged():
    torch.manual_seed(0)
    fast = create_model("m2_bert_tiny_retrieval", kernel="triton").to(DEVICE).eval()
    slow = create_model("m2_bert_tiny_retrieval", kernel="torch").to(DEVICE).eval()
    slow.load_state_dict(fast.state_dict())
    batch = {k: v.to(DEVICE) for k, v in fast.tokenize(["a meeting about the budget"]).items()
             if k != "n_truncated"}  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(fast.embed(batch), slow.embed(batch), rtol=1e-3, atol=1e-3)
    assert fast.run_tags()["kernel_impl"].startswith("blockdiag_mlp:triton")


def test_triton_on_cpu_without_interpreter_refuses(monkeypatch):
    from m2bench.kernels.blockdiag_triton import blockdiag_matmul_fwd

    if DEVICE == "cuda":
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="Triton kernels need CUDA"):
        blockdiag_matmul_fwd(torch.ones(2, 8), torch.ones(2, 4, 4))


def _dense_monarch(w1, w2):
    """``MonarchLinear.to_dense()`` for any (b, r, p), (b, s, r) pair, differentiable in both."""
    nblocks, r, p = w1.shape
    layer = MonarchLinear(nblocks * p, nblocks * w2.shape[1], nblocks, bias=False)
    del layer.weight1, layer.weight2  # plain tensors instead, so grads reach w1 and w2
    layer.weight1, layer.weight2, layer.r = w1, w2, r  # the layer picks r = max(p, s); any r works
    return layer.to_dense()


@pytest.mark.parametrize(
    "m,nblocks,p,r,s",
    # batch 1; odd p/r/s with r > p and s < r; M over one 64-row tile; square b = p = r = s;
    # r = p > s; s = r > p
    [(1, 3, 5, 7, 4), (70, 3, 5, 7, 4), (6, 4, 4, 4, 4), (5, 2, 6, 6, 3), (9, 2, 3, 17, 17)],
)
def test_monarch_forward_and_backward_match_the_twin_and_dense(m, nblocks, p, r, s):
    from m2bench.kernels.monarch_triton import monarch_matmul

    torch.manual_seed(m + r)
    x = torch.randn(m, nblocks * p, device=DEVICE, requires_grad=True)
    w1 = torch.randn(nblocks, r, p, device=DEVICE, requires_grad=True)
    w2 = torch.randn(nblocks, s, r, device=DEVICE, requires_grad=True)
    dy = torch.randn(m, nblocks * s, device=DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False  # twin and dense in fp32 too
    results = {}
    for name, fn in [
        ("triton", monarch_matmul),
        ("twin", reference.monarch_matmul),
        ("dense", lambda x, w1, w2: x @ _dense_monarch(w1, w2).T),
    ]:
        y = fn(x, w1, w2)
        (y * dy).sum().backward()
        results[name] = (y.detach(), x.grad, w1.grad, w2.grad)
        x.grad = w1.grad = w2.grad = None
    tol = dict(rtol=1e-4, atol=1e-4)  # fp32 in, fp32 math (the kernel turns TF32 off)
    for ref in ("twin", "dense"):
        for got, want in zip(results["triton"], results[ref], strict=True):
            torch.testing.assert_close(got, want, **tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 tensor-core path: CUDA only")
def test_monarch_bf16_on_cuda_within_bf16_tolerance():
    from m2bench.kernels.monarch_triton import monarch_matmul

    torch.manual_seed(0)
    x = torch.randn(4096, 768, device="cuda")
    w1 = torch.randn(4, 192, 192, device="cuda") / 192**0.5
    w2 = torch.randn(4, 192, 192, device="cuda") / 192**0.5
    ref = reference.monarch_matmul(x.double(), w1.double(), w2.double())
    y = monarch_matmul(x.bfloat16(), w1.bfloat16(), w2.bfloat16()).double()
    assert ((y - ref).norm() / ref.norm()).item() < 2e-2


def test_monarch_layer_with_triton_equals_torch():
    torch.manual_seed(0)
    fast = MonarchLinear(10, 13, 3, kernel="triton").to(DEVICE)  # p=4, s=5, r=5: both padded
    slow = MonarchLinear(10, 13, 3, kernel="torch").to(DEVICE)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 10, device=DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False  # the einsum twin in fp32 too
    outs = []
    for layer in (fast, slow):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        assert y.shape == (2, 3, 13)
        y.square().sum().backward()
        outs.append((y.detach(), xi.grad, *(prm.grad for prm in layer.parameters())))
    for got, want in zip(*outs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "x_shape,w1_shape,w2_shape,dtype,match",
    [
        ((2, 14), (3, 7, 5), (3, 4, 7), torch.float32, r"x must be \(M, 15\).*\(2, 14\)"),
        ((2, 15), (3, 7, 5), (3, 4, 6), torch.float32, r"w2 must be \(3, s, 7\).*\(3, 4, 6\)"),
        ((2, 15), (3, 7, 5), (2, 4, 7), torch.float32, r"w2 must be \(3, s, 7\)"),
        ((2, 15), (3, 7, 5), (3, 4, 7), torch.float64, "dtypes differ"),
    ],
)
def test_monarch_rejects_mismatched_inputs(x_shape, w1_shape, w2_shape, dtype, match):
    from m2bench.kernels.monarch_triton import monarch_matmul

    x = torch.ones(x_shape, device=DEVICE, dtype=dtype)
    w1, w2 = torch.ones(w1_shape, device=DEVICE), torch.ones(w2_shape, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        monarch_matmul(x, w1, w2)


def test_monarch_on_cpu_without_interpreter_refuses(monkeypatch):
    from m2bench.kernels.monarch_triton import monarch_matmul

    if DEVICE == "cuda":
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="Triton kernels need CUDA"):
        monarch_matmul(torch.ones(2, 8), torch.ones(2, 4, 4), torch.ones(2, 4, 4))


@pytest.mark.parametrize(
    "batch,seqlen,d,taps",
    # batch 1; odd d; L over one 64-step tile and not a multiple of it; d over one 32-channel
    # tile; K = 4; L shorter than K
    [(1, 70, 5, 3), (2, 9, 40, 4), (2, 64, 3, 3), (1, 2, 6, 3)],
)
def test_short_conv_gate_forward_and_backward_match_the_twin(batch, seqlen, d, taps):
    from m2bench.kernels.gating_triton import short_conv_gate

    torch.manual_seed(seqlen + d)
    z = torch.randn(batch, seqlen, 3 * d, device=DEVICE, requires_grad=True)
    w = torch.randn(3 * d, taps, device=DEVICE, requires_grad=True)
    b = torch.randn(3 * d, device=DEVICE, requires_grad=True)
    dpre, dx2 = torch.randn(2, batch, d, seqlen, device=DEVICE)
    results = []
    for fn in (short_conv_gate, reference.short_conv_gate):
        pre, x2 = fn(z, w, b)
        assert pre.dtype == torch.float32 and pre.shape == x2.shape == (batch, d, seqlen)
        ((pre * dpre).sum() + (x2 * dx2).sum()).backward()
        results.append((pre.detach(), x2.detach(), z.grad, w.grad, b.grad))
        z.grad = w.grad = b.grad = None
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_short_conv_gate_twin_is_the_layers_conv():
    torch.manual_seed(0)
    d, seqlen = 5, 11
    conv = torch.nn.Conv1d(3 * d, 3 * d, 3, groups=3 * d, padding=2).to(DEVICE)
    z = torch.randn(2, seqlen, 3 * d, device=DEVICE)
    x1, x2, v = conv(z.transpose(1, 2))[..., :seqlen].split(d, dim=1)
    pre, x2_twin = reference.short_conv_gate(z, conv.weight.squeeze(1), conv.bias)
    torch.testing.assert_close(pre, v * x1)
    torch.testing.assert_close(x2_twin, x2)


@pytest.mark.parametrize("batch,seqlen,d,with_res", [(1, 70, 5, True), (2, 33, 40, False)])
def test_gate_out_forward_and_backward_match_the_twin(batch, seqlen, d, with_res):
    from m2bench.kernels.gating_triton import gate_out

    torch.manual_seed(seqlen)
    y, x2, res = (torch.randn(batch, d, seqlen, device=DEVICE, requires_grad=True) for _ in "abc")
    res_in = res if with_res else None
    dout = torch.randn(batch, seqlen, d, device=DEVICE)
    results = []
    for fn in (gate_out, reference.gate_out):
        out = fn(y, x2, res_in)
        assert out.shape == (batch, seqlen, d)
        (out * dout).sum().backward()
        results.append((out.detach(), y.grad, x2.grad, res.grad))
        y.grad = x2.grad = res.grad = None
    for got, want in zip(*results, strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gating_kernels_in_bf16_within_bf16_tolerance():
    from m2bench.kernels.gating_triton import gate_out, short_conv_gate

    torch.manual_seed(0)
    z = torch.randn(2, 70, 15, device=DEVICE).bfloat16()
    w, b = torch.randn(15, 3, device=DEVICE), torch.randn(15, device=DEVICE)
    pre, x2 = short_conv_gate(z, w, b)
    pre_ref, x2_ref = reference.short_conv_gate(z, w, b)
    assert pre.dtype == torch.float32 and x2.dtype == torch.bfloat16
    torch.testing.assert_close(pre, pre_ref, rtol=1e-5, atol=1e-5)  # float32 math, same inputs
    bf16 = dict(rtol=1.6e-2, atol=1e-2)  # x2 and the output are rounded to bf16 (one ulp)
    torch.testing.assert_close(x2.float(), x2_ref.float(), **bf16)
    y, res = torch.randn(2, 2, 5, 70, device=DEVICE)
    out = gate_out(y, x2, res)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.gate_out(y, x2, res).float(), **bf16)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(z=(2, 4, 14), w=(14, 3), b=(14,)), r"z must be \(B, L, 3d\)"),
        (dict(z=(2, 4, 15), w=(12, 3), b=(15,)), r"w must be \(15, K\)"),
        (dict(z=(2, 4, 15), w=(15, 3), b=(15,), dtype=torch.float64), "not supported"),
    ],
)
def test_short_conv_gate_rejects_mismatched_inputs(kwargs, match):
    from m2bench.kernels.gating_triton import short_conv_gate

    dtype = kwargs.get("dtype", torch.float32)
    z = torch.ones(kwargs["z"], device=DEVICE, dtype=dtype)
    w, b = torch.ones(kwargs["w"], device=DEVICE), torch.ones(kwargs["b"], device=DEVICE)
    with pytest.raises(ValueError, match=match):
        short_conv_gate(z, w, b)


def test_gating_on_cpu_without_interpreter_refuses(monkeypatch):
    from m2bench.kernels.gating_triton import gate_out

    if DEVICE == "cuda":
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="Triton kernels need CUDA"):
        gate_out(torch.ones(1, 2, 3), torch.ones(1, 2, 3))


def _mixer_pair(residual: bool, bidirectional: bool = True, taps: int = 3):
    kwargs = dict(hyena_order=8, residual_long_conv=residual, bidirectional=bidirectional,
                  short_conv_size=taps)  # fmt: skip
    fast = M2SequenceMixer(6, 80, kernel="triton", **kwargs).to(DEVICE)
    slow = M2SequenceMixer(6, 80, kernel="torch", **kwargs).to(DEVICE)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


@pytest.mark.parametrize(
    "residual,masked,bidirectional,taps",
    [
        (True, False, True, 3),
        (False, False, True, 3),
        (True, True, True, 3),
        (False, True, False, 4),
    ],
)
def test_mixer_with_fused_gating_equals_torch(residual, masked, bidirectional, taps):
    torch.manual_seed(1)
    fast, slow = _mixer_pair(residual, bidirectional, taps)
    u = torch.randn(2, 70, 6, device=DEVICE)
    mask = None
    if masked:
        mask = torch.ones(2, 70, dtype=torch.bool, device=DEVICE)
        mask[0, 50:] = False
        mask[1, :3] = False
    dout = torch.randn(2, 70, 6, device=DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False
    outs = []
    for layer in (fast, slow):
        ui = u.clone().requires_grad_(True)
        y = layer(ui, mask)
        (y * dout).sum().backward()
        outs.append((y.detach(), ui.grad, *(p.grad for p in layer.parameters())))
    for got, want in zip(*outs, strict=True):
        # fp32 throughout; the short conv sums its taps in another order than torch's conv1d, and
        # the filter-MLP grads (magnitude ~100) sum that ulp noise over B*L: atol scales with them
        atol = 1e-5 * max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=atol)


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU autocast; the GPU run is tests/test_gpu.py's")
def test_mixer_with_fused_gating_under_bf16_autocast_within_bf16_tolerance():
    torch.manual_seed(2)
    fast, slow = _mixer_pair(True)
    u = torch.randn(2, 70, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fast(u).float(), slow(u).float()
    with torch.no_grad():
        exact = slow(u)
    # both within a few bf16 roundings (eps 2^-8 = 3.9e-3) of the float32 result; they round at
    # different steps (the fused path keeps v * x1 and the gating in float32)
    scale = exact.abs().max()
    assert (got - exact).abs().max() <= 1.6e-2 * scale
    assert (got - want).abs().max() <= 1.6e-2 * scale


def test_m2_bert_with_fused_gating_matches_torch():
    torch.manual_seed(0)
    fast = create_model("m2_bert_tiny", kernel="triton").to(DEVICE).eval()
    slow = create_model("m2_bert_tiny", kernel="torch").to(DEVICE).eval()
    slow.load_state_dict(fast.state_dict())
    mixers = [m for m in fast.modules() if isinstance(m, M2SequenceMixer)]
    assert len(mixers) == fast.config.n_layers and all(m.kernel == "triton" for m in mixers)
    ids = torch.randint(5, 1000, (2, 40), device=DEVICE)
    mask = torch.ones(2, 40, dtype=torch.long, device=DEVICE)
    mask[1, 25:] = 0
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), slow(ids, mask), rtol=1e-4, atol=1e-4)
    assert "fused_gating:triton" in fast.run_tags()["kernel_impl"]
