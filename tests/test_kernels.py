"""Kernels against their plain-PyTorch twins: on the CPU under TRITON_INTERPRET=1 (CI, small
shapes), and on CUDA when a GPU is present (tests/test_gpu.py has the heavier shapes)."""

from __future__ import annotations

import os

import pytest
import torch

from m2bench.kernels import reference
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
