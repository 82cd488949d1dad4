"""The Triton FFT convolution (FFT as Monarch matmuls) and the tiled transpose against their
twins and a dense Toeplitz materialisation: on the CPU under TRITON_INTERPRET=1 (CI), and on
CUDA when a GPU is present (scripts/gpu_fftconv_probe.py times it and checks bf16/tf32)."""

from __future__ import annotations

import os

import pytest
import torch

from m2bench.kernels import fftconv_triton as fc
from m2bench.kernels import reference
from m2bench.layers.long_conv import ImplicitLongConv
from m2bench.layers.mixer import M2SequenceMixer

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 (scripts/test.sh sets it)",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# float32 dots under the interpreter; on CUDA the same tests ask for exact (ieee) matmuls
PREC = "ieee"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _dense(k_fwd: torch.Tensor, k_rev: torch.Tensor | None, skip: torch.Tensor) -> torch.Tensor:
    """(C, L, L) matrices T with y[c] = T[c] @ x[c]: the definition, written out."""
    channels, seqlen = k_fwd.shape
    t = torch.arange(seqlen)
    lag = t[:, None] - t[None, :]  # t - s
    mats = torch.zeros(channels, seqlen, seqlen, dtype=torch.float64)
    fwd = lag >= 0
    mats[:, fwd] = k_fwd.double()[:, lag[fwd]]
    if k_rev is not None:
        rev = lag < 0
        mats[:, rev] = k_rev.double()[:, (-lag[rev]) - 1]
    return mats + torch.diag_embed(skip.double()[:, None].expand(channels, seqlen))


@pytest.mark.parametrize(
    "batch,channels,seqlen,bidirectional",
    [(1, 2, 1, True), (3, 2, 64, True), (2, 3, 100, False), (4, 1, 257, True), (5, 2, 512, True)],
)
def test_fft_conv_equals_the_dense_toeplitz_matrix(batch, channels, seqlen, bidirectional):
    torch.manual_seed(seqlen)
    x = torch.randn(batch, channels, seqlen, device=DEVICE)
    k_fwd = torch.randn(channels, seqlen, device=DEVICE)
    k_rev = torch.randn(channels, seqlen, device=DEVICE) if bidirectional else None
    skip = torch.randn(channels, device=DEVICE)
    got = fc.fft_conv(x, k_fwd, k_rev, skip, precision=PREC)
    want = torch.einsum(
        "cts,bcs->bct", _dense(k_fwd.cpu(), None if k_rev is None else k_rev.cpu(), skip.cpu()),
        x.cpu().double(),
    )  # fmt: skip
    assert got.shape == x.shape and got.dtype == x.dtype
    assert _rel(got.cpu(), want) < 1e-5


@pytest.mark.parametrize("with_gate,with_add", [(True, True), (True, False), (False, True)])
def test_fft_conv_gating_and_out_match_the_twin(with_gate, with_add):
    torch.manual_seed(3)
    x = torch.randn(3, 4, 300, device=DEVICE)
    k_fwd, k_rev = torch.randn(2, 4, 300, device=DEVICE)
    skip = torch.randn(4, device=DEVICE)
    gate = torch.randn_like(x) if with_gate else None
    add = torch.randn_like(x) if with_add else None
    want = reference.fft_conv(x.double(), k_fwd.double(), k_rev.double(), skip.double(),
                              None if gate is None else gate.double(),
                              None if add is None else add.double())  # fmt: skip
    got = fc.fft_conv(x, k_fwd, k_rev, skip, gate, add, precision=PREC)
    assert _rel(got, want) < 1e-5
    # written into a (B, L, C) buffer through a view, in another dtype
    buf = torch.full((3, 300, 4), float("nan"), device=DEVICE, dtype=torch.bfloat16)
    out = fc.fft_conv(x, k_fwd, k_rev, skip, gate, add, out=buf.transpose(1, 2), precision=PREC)
    assert out.data_ptr() == buf.data_ptr() and torch.isfinite(buf).all()
    assert _rel(buf.transpose(1, 2).float(), want) < 8e-3  # one bf16 rounding
    # strided input: the (B, L, C) layout read in place
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert _rel(fc.fft_conv(xt, k_fwd, k_rev, skip, gate, add, precision=PREC), want) < 1e-5


@pytest.mark.parametrize("bidirectional", [True, False])
def test_fft_conv_backward_matches_the_twin(bidirectional):
    torch.manual_seed(4)
    b, c, seqlen = 3, 2, 90
    leaves = {
        "x": torch.randn(b, c, seqlen),
        "k_fwd": torch.randn(c, seqlen),
        "k_rev": torch.randn(c, seqlen) if bidirectional else None,
        "skip": torch.randn(c),
        "gate": torch.randn(b, c, seqlen),
        "add": torch.randn(b, c, seqlen),
    }
    dout = torch.randn(b, c, seqlen)
    grads = []
    for fn, dtype in ((fc.fft_conv, torch.float32), (reference.fft_conv, torch.float64)):
        args = {
            k: None if v is None else v.to(DEVICE, dtype).requires_grad_()
            for k, v in leaves.items()
        }
        y = fn(**args, **({"precision": PREC} if fn is fc.fft_conv else {}))
        live = [v for v in args.values() if v is not None]
        grads.append(torch.autograd.grad(y, live, dout.to(DEVICE, dtype)))
    for got, want in zip(*grads, strict=True):
        assert _rel(got, want) < 1e-5


def test_float32_operands_leave_one_program_earlier():
    """bf16 operands: one program up to N = 16,384 (L = 8192); float32 ones (tf32, tf32x3,
    ieee) up to N = 8192, the shared memory an H200 has for them; beyond, three passes."""
    assert fc.plan(8192) == fc.plan(8192, "bf16") == ("one", 128, 128)
    assert fc.plan(4096, "tf32x3") == ("one", 128, 64)
    for precision in ("tf32", "tf32x3", "ieee"):
        assert fc.plan(4097, precision)[0] == "long"
    assert fc.plan(8193)[0] == "long"


def test_transform_size_covers_twice_the_length():
    for seqlen in (1, 255, 256, 257, 1000, 2048, 4096):
        n1, n2 = fc.transform_size(seqlen)
        n = n1 * n2
        assert (
            n >= max(fc.MIN_N, 2 * seqlen)
            and n & (n - 1) == 0
            and n < max(fc.MIN_N * 2, 4 * seqlen)
        )
        assert n1 // 2 >= 16 and n2 >= 16 and n1 in (n2, 2 * n2)  # 16-wide matmul sides
    assert fc.transform_size(4096) == (128, 64)


def test_spectrum_path_equals_fft_conv_and_refuses_gradients():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 128, device=DEVICE)
    k_fwd, k_rev = torch.randn(2, 3, 128, device=DEVICE)
    skip, gate = torch.randn(3, device=DEVICE), torch.randn_like(x)
    spec = fc.kernel_spectrum(k_fwd, k_rev, *fc.transform_size(128))
    got = fc.fft_conv_spectrum(x, spec, skip, gate, precision=PREC)
    torch.testing.assert_close(got, fc.fft_conv(x, k_fwd, k_rev, skip, gate, precision=PREC))
    with pytest.raises(RuntimeError, match="no backward"):
        fc.fft_conv_spectrum(x.requires_grad_(), spec, skip, precision=PREC)
    with pytest.raises(ValueError, match="spectrum must be"):
        fc.fft_conv_spectrum(x.detach(), (spec[0], spec[1][:, :4]), skip)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"x": torch.ones(2, 4097)}, ValueError, r"x must be \(B, C, L\)"),
        ({"x": torch.ones(1, 2, 8, dtype=torch.int32)}, ValueError, "dtype"),
        ({"k_fwd": torch.ones(2, 7)}, ValueError, r"k_fwd must be \(2, 8\)"),
        ({"skip": torch.ones(3)}, ValueError, r"skip must be \(2,\)"),
        ({"gate": torch.ones(1, 2, 7)}, ValueError, "gate must be"),
        ({"precision": "fp8"}, ValueError, "precision 'fp8'"),
    ],
)
def test_fft_conv_rejects_bad_input(kwargs, exc, match):
    args = {"x": torch.ones(1, 2, 8), "k_fwd": torch.ones(2, 8), "skip": None}
    args.update(kwargs)
    seqlen = args["x"].shape[-1]
    if "k_fwd" not in kwargs and args["x"].ndim == 3:
        args["k_fwd"] = torch.ones(args["x"].shape[1], seqlen)
    precision = args.pop("precision", None)
    gate = args.pop("gate", None)
    with pytest.raises(exc, match=match):
        fc.fft_conv(args["x"].to(DEVICE), args["k_fwd"].to(DEVICE), None,
                    None if args["skip"] is None else args["skip"].to(DEVICE),
                    None if gate is None else gate.to(DEVICE), precision=precision)  # fmt: skip


def test_fft_conv_on_cpu_without_interpreter_refuses(monkeypatch):
    if DEVICE == "cuda":
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="Triton kernels need CUDA"):
        fc.fft_conv(torch.ones(1, 2, 8), torch.ones(2, 8))


def test_layer_keeps_its_spectrum_until_a_weight_changes():
    torch.manual_seed(6)
    layer = ImplicitLongConv(4, 64, order=8, kernel="triton").to(DEVICE)
    ref = ImplicitLongConv(4, 64, order=8, kernel="torch").to(DEVICE)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 64, device=DEVICE)
    with torch.no_grad():
        first = layer(x)
        spec = layer._spec
        torch.testing.assert_close(layer(x), first)
        assert layer._spec is spec  # kept
        torch.testing.assert_close(first, ref(x), rtol=1e-5, atol=1e-5)
        for module in (layer, ref):
            module.filter.mlp_fwd.layers[0].weight.add_(0.5)  # an in-place update, as an optimizer
        changed = layer(x)
        assert layer._spec is not spec
        torch.testing.assert_close(changed, ref(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(changed, first)
        torch.testing.assert_close(layer(x[..., :32]), ref(x[..., :32]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_mixer_inference_path_equals_torch(masked):
    torch.manual_seed(7)
    kwargs = dict(hyena_order=8)
    fast = M2SequenceMixer(6, 80, kernel="triton", **kwargs).to(DEVICE).eval()
    slow = M2SequenceMixer(6, 80, kernel="torch", **kwargs).to(DEVICE).eval()
    slow.load_state_dict(fast.state_dict())
    u = torch.randn(2, 70, 6, device=DEVICE)
    mask = None
    if masked:
        mask = torch.ones(2, 70, dtype=torch.bool, device=DEVICE)
        mask[0, 40:] = False
    with torch.no_grad():
        torch.testing.assert_close(fast(u, mask), slow(u, mask), rtol=1e-5, atol=1e-5)


def test_mixer_beyond_the_kernel_length_falls_back_to_cufft(monkeypatch):
    monkeypatch.setattr(fc, "MAX_N", 8192)
    monkeypatch.setattr(fc, "LONG_FFT", False)
    torch.manual_seed(8)
    fast = M2SequenceMixer(2, 4100, hyena_order=4, kernel="triton").to(DEVICE).eval()
    slow = M2SequenceMixer(2, 4100, hyena_order=4, kernel="torch").to(DEVICE).eval()
    slow.load_state_dict(fast.state_dict())
    u = torch.randn(1, 4100, 2, device=DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(fast(u), slow(u), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 70, 33), (3, 130, 64)])
def test_transpose_matches_the_twin(shape):
    from m2bench.kernels.gating_triton import transpose

    x = torch.randn(*shape, device=DEVICE, requires_grad=True)
    y = transpose(x)
    assert y.is_contiguous()
    torch.testing.assert_close(y, reference.transpose(x.detach()), rtol=0, atol=0)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    torch.testing.assert_close(x.grad, reference.transpose(dy), rtol=0, atol=0)
    strided = torch.randn(shape[0], shape[2], shape[1], device=DEVICE).transpose(1, 2)
    torch.testing.assert_close(transpose(strided), reference.transpose(strided), rtol=0, atol=0)


def test_tuning_knobs_keep_the_result():
    """Other transform shapes and bf16 DFT tables (CUDA only; float32 under the interpreter)."""
    torch.manual_seed(9)
    x = torch.randn(3, 2, 300, device=DEVICE)
    k_fwd, k_rev = torch.randn(2, 2, 300, device=DEVICE)
    want = reference.fft_conv(x.double(), k_fwd.double(), k_rev.double())
    for n1, n2 in ((32, 32), (64, 16), (32, 64), (128, 32)):
        spec = fc.kernel_spectrum(k_fwd, k_rev, n1, n2)
        assert _rel(fc.fftconv_fwd(x, spec, n1, n2, precision=PREC), want) < 1e-5
    spec = fc.kernel_spectrum(k_fwd, k_rev, 32, 32)
    got = fc.fftconv_fwd(x, spec, 32, 32, precision="bf16", table_dtype=torch.bfloat16)
    assert _rel(got, want) < (1e-2 if DEVICE == "cuda" else 1e-5)
    with pytest.raises(ValueError, match="N1 >= 32 and N2 >= 16"):
        fc.fftconv_fwd(x, fc.kernel_spectrum(k_fwd, k_rev, 16, 64), 16, 64)
    with pytest.raises(ValueError, match="table_dtype"):
        fc.fftconv_fwd(x, spec, 32, 32, precision="tf32", table_dtype=torch.bfloat16)


@pytest.mark.parametrize(
    "batch,channels,seqlen,bidirectional", [(3, 2, 300, True), (1, 1, 1000, False)]
)
def test_three_pass_kernel_equals_the_twin(batch, channels, seqlen, bidirectional):
    """A small custom transform (N = 32 x 16 x 16) through the three launches, gated."""
    from m2bench.kernels import fftconv_long_triton as lt

    torch.manual_seed(seqlen)
    x = torch.randn(batch, channels, seqlen, device=DEVICE)
    k_fwd = torch.randn(channels, seqlen, device=DEVICE) * 0.1
    k_rev = torch.randn(channels, seqlen, device=DEVICE) * 0.1 if bidirectional else None
    skip, gate, add = torch.randn(channels, device=DEVICE), torch.randn_like(x), torch.randn_like(x)
    spec = lt.long_spectrum(k_fwd, k_rev, 32, 16, 16)
    got = lt.long_fftconv_fwd(x, spec, 32, 16, 16, skip, gate, add, chunk=32, precision=PREC)
    want = reference.fft_conv(x.double(), k_fwd.double(),
                              None if k_rev is None else k_rev.double(), skip.double(),
                              gate.double(), add.double())  # fmt: skip
    assert _rel(got, want) < 1e-5
    with pytest.raises(ValueError, match="long transform"):
        lt.long_fftconv_fwd(x, spec, 16, 16, 16)  # P < 32
    assert lt.long_transform(8192) == (32, 32, 16) and lt.long_transform(32768) == (32, 64, 32)


def test_three_pass_kernel_with_a_bf16_scratch():
    """The bf16 scratch knob: one more bf16 rounding of the spectrum, bf16 operands only."""
    from m2bench.kernels import fftconv_long_triton as lt

    torch.manual_seed(3)
    x = torch.randn(3, 2, 300, device=DEVICE)
    k_fwd, k_rev = (torch.randn(2, 300, device=DEVICE) * 0.1 for _ in range(2))
    skip = torch.randn(2, device=DEVICE)
    spec = lt.long_spectrum(k_fwd, k_rev, 32, 16, 16)
    want = reference.fft_conv(x.double(), k_fwd.double(), k_rev.double(), skip.double())
    got = lt.long_fftconv_fwd(x, spec, 32, 16, 16, skip, chunk=32, precision="bf16",
                              scratch_dtype=torch.bfloat16)  # fmt: skip
    assert 1e-4 < _rel(got, want) < 1e-2  # rounded (the interpreter's dots stay float32)
    with pytest.raises(ValueError, match="bf16 scratch needs precision='bf16'"):
        lt.long_fftconv_fwd(x, spec, 32, 16, 16, precision="tf32", scratch_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="scratch_dtype must be"):
        lt.long_fftconv_fwd(x, spec, 32, 16, 16, precision="bf16", scratch_dtype=torch.float16)


def test_long_sequences_through_the_three_pass_kernel_unless_switched_off(monkeypatch):
    from m2bench.layers import TRITON_COVERAGE, triton_coverage

    assert triton_coverage() == TRITON_COVERAGE  # defaults: one program to 8192, then 3 passes
    torch.manual_seed(10)
    seqlen = 4100  # beyond one program's 8,192 points (MAX_N lowered for interpreter speed)
    monkeypatch.setattr(fc, "MAX_N", 8192)
    x = torch.randn(3, 1, seqlen, device=DEVICE, requires_grad=True)
    k_fwd = (torch.randn(1, seqlen, device=DEVICE) * 0.05).requires_grad_()
    k_rev = (torch.randn(1, seqlen, device=DEVICE) * 0.05).requires_grad_()
    skip = torch.randn(1, device=DEVICE, requires_grad=True)
    monkeypatch.setattr(fc, "LONG_FFT", False)
    with pytest.raises(ValueError, match="L <= 4096"):
        fc.fft_conv(x, k_fwd, k_rev, skip)
    assert "long_conv:triton(L<=4096)+cufft(L>4096)" in triton_coverage()
    monkeypatch.setattr(fc, "LONG_FFT", True)
    assert "long_conv:triton(L<=4096)+triton_3pass(L>4096)" in triton_coverage()
    assert fc.plan(seqlen) == ("long", 32, 32, 16)
    leaves = (x, k_fwd, k_rev, skip)
    y = fc.fft_conv(*leaves, precision=PREC)
    dout = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, dout)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    want = reference.fft_conv(*ref_leaves)
    ref_grads = torch.autograd.grad(want, ref_leaves, dout.double())
    assert _rel(y, want) < 1e-5
    for got, exp in zip(grads, ref_grads, strict=True):
        assert _rel(got, exp) < 1e-5
    layer = ImplicitLongConv(1, seqlen, order=4, kernel="triton").to(DEVICE)
    ref = ImplicitLongConv(1, seqlen, order=4, kernel="torch").to(DEVICE)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert _rel(layer(x.detach()), ref(x.detach())) < 1e-5  # the kept-spectrum path
