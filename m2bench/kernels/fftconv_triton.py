"""Triton FFT long convolution: the FFT computed as Monarch matmuls on the tensor cores.

Idea (FlashFFTConv: Fu et al., "FlashFFTConv: Efficient Convolutions for Long Sequences with
Tensor Cores", 2023, https://arxiv.org/abs/2311.05908; M2: Fu et al., NeurIPS 2023): a length-N
DFT with N = N1 * N2 is ``F_N = P (I ⊗ F_N2) T (F_N1 ⊗ I)``, two block-diagonal (Monarch) factors
with twiddles T between them, so it runs as small dense matmuls instead of a bandwidth-bound FFT.
One program convolves one channel of two batch rows at once (row a as the real part, row b as the
imaginary part: the kernel is real, so ``ifft(fft(a + ib) K) = (a * k) + i (b * k)``), entirely in
registers: read x once, write y once. The cuFFT path (:func:`m2bench.layers.long_conv.fft_conv`)
pads, casts, transforms, multiplies, clones and transforms back through device memory, about 20
full passes over an fp32 tensor of 2L per row; this reads 2 and writes 2 bytes per element in bf16.

The four steps, N = N1 * N2, input index n = N2 n1 + n2, frequency f = k1 + N1 k2,
w_M = exp(-2 pi i / M):

1. ``B = F1[:, :N1/2] @ A``, A (N1/2, N2) = the row reshaped (zero padding: only n1 < N1/2);
2. ``C = B * T``, ``T[k1, n2] = w_N^(k1 n2)``;
3. ``D = C @ F2``, so ``D[k1, k2] = X[k1 + N1 k2]``;
4. ``E = D * K'``, K' the kernel's spectrum in that layout, already divided by N;
5. the inverse in reverse order with conjugates, keeping only the rows n1 < N1/2 (the first L
   outputs), plus the skip ``D x``, then optionally ``* gate`` and ``+ add``.

The convolution is the one of :func:`~m2bench.layers.long_conv.fft_conv` for any L: N is the power
of two >= 2L (at least 512, the smallest size whose matmuls have 16-wide sides), the kernel is laid
out as ``[k_fwd, 0 ..., reversed k_rev]`` on N points (circular wrap-around never reaches a tap it
should not, because |t - s| < L), and the spectrum is computed by ``torch.fft`` in float32.

Limits: one program holds the whole N-point transform (N1 x N2 complex tiles in registers), so
``N <= MAX_N`` (16,384: L <= 8192) with bf16 operands, ``N <= MAX_N_FP32`` (8192) with float32
ones (:func:`max_points`); :data:`LONG_FFT` (on) routes longer sequences to the
three-pass kernel of :mod:`m2bench.kernels.fftconv_long_triton`; with it off they raise
``ValueError`` here and the layers fall back to the cuFFT path
(:func:`m2bench.layers.triton_coverage` says which path runs). Measured on an H200 (bf16,
65,536 tokens x 768 channels, gated; scripts/gpu_tune_probe.py at 3f7a78e): L = 8192 one
program 1.08 ms, three passes 1.18 ms, cuFFT 2.32 ms; L = 32768 three passes 1.08 ms, cuFFT
3.07 ms. Precision: the matmuls use ``precision`` (:func:`default_precision`: ``"bf16"``
operands for half inputs or under autocast; for float32 ``"tf32"`` when PyTorch allows TF32
matmuls, else ``"tf32x3"``, float32-accurate; ``"ieee"`` on request), with float32 accumulation
and float32 elementwise math; under the interpreter every dot is float32.

Backward: dx is the same kernel with the conjugate spectrum (the adjoint of a real circular
convolution); dk_fwd, dk_rev and dskip are reduced over the batch in PyTorch (``torch.fft``, one
cross-correlation per channel). Twin: :func:`m2bench.kernels.reference.fft_conv`.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the launcher raises a clear error instead
    triton = None

#: the largest transform one program holds (L <= MAX_N / 2) with bf16 operands
MAX_N = 16384
#: ... and with float32 operands (tf32, tf32x3, ieee): the N = 16,384 program would need 320 KB of
#: shared memory (H200: 227 KB), so float32 rows beyond L = 4096 take the three-pass kernel
MAX_N_FP32 = 8192
#: longer sequences through the three-pass kernel (:mod:`fftconv_long_triton`); off: they raise
#: here and the layers use the cuFFT path
LONG_FFT = True
MIN_N = 512
PRECISIONS = ("tf32", "tf32x3", "ieee", "bf16")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


if triton is not None:

    @triton.jit
    def _mm(a, b, PREC: tl.constexpr):
        if PREC == "bf16":
            out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
        else:
            out = tl.dot(a, b, input_precision=PREC)
        return out

    @triton.jit
    def _cmm(ar, ai, br, bi, PREC: tl.constexpr, CONJ_A: tl.constexpr, CONJ_B: tl.constexpr):
        """Complex matmul ``A @ B`` from real parts (four real dots), either factor conjugated."""
        if CONJ_A:
            re = _mm(ar, br, PREC) + _mm(ai, bi, PREC)
            im = _mm(ar, bi, PREC) - _mm(ai, br, PREC)
        elif CONJ_B:
            re = _mm(ar, br, PREC) + _mm(ai, bi, PREC)
            im = _mm(ai, br, PREC) - _mm(ar, bi, PREC)
        else:
            re = _mm(ar, br, PREC) - _mm(ai, bi, PREC)
            im = _mm(ar, bi, PREC) + _mm(ai, br, PREC)
        return re, im

    @triton.jit
    def _cmul(xr, xi, yr, yi, CONJ_Y: tl.constexpr):
        """Elementwise complex product ``x * y`` (``x * conj(y)`` with CONJ_Y)."""
        if CONJ_Y:
            re = xr * yr + xi * yi
            im = xi * yr - xr * yi
        else:
            re = xr * yr - xi * yi
            im = xr * yi + xi * yr
        return re, im

    @triton.jit
    def _fftconv_kernel(
        x_ptr, kr_ptr, ki_ptr, skip_ptr, gate_ptr, add_ptr, out_ptr,
        f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr,
        B, L, s_xb, s_xc, s_xl, s_gb, s_gc, s_gl, s_ab, s_ac, s_al, s_ob, s_oc, s_ol,
        N1: tl.constexpr, N2: tl.constexpr, HAS_SKIP: tl.constexpr, HAS_GATE: tl.constexpr,
        HAS_ADD: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        H: tl.constexpr = N1 // 2
        pair, c = tl.program_id(0), tl.program_id(1)
        b0 = 2 * pair
        b1 = b0 + 1
        rh = tl.arange(0, H)
        r1 = tl.arange(0, N1)
        q = tl.arange(0, N2)
        n = rh[:, None] * N2 + q[None, :]
        m0 = n < L
        m1 = m0 & (b1 < B)
        xn = x_ptr + c * s_xc + n * s_xl
        a = tl.load(xn + b0 * s_xb, mask=m0, other=0.0).to(tl.float32)
        b = tl.load(xn + b1 * s_xb, mask=m1, other=0.0).to(tl.float32)
        # 1. DFT over n1 (size N1, only the first N1/2 inputs are non-zero)
        f1 = r1[:, None] * H + rh[None, :]
        f1r = tl.load(f1r_ptr + f1)
        f1i = tl.load(f1i_ptr + f1)
        br, bi = _cmm(f1r, f1i, a, b, PREC, False, False)
        # 2. twiddles
        tw = r1[:, None] * N2 + q[None, :]
        twr = tl.load(twr_ptr + tw)
        twi = tl.load(twi_ptr + tw)
        cr, ci = _cmul(br, bi, twr, twi, False)
        # 3. DFT over n2 (size N2)
        f2 = q[:, None] * N2 + q[None, :]
        f2r = tl.load(f2r_ptr + f2)
        f2i = tl.load(f2i_ptr + f2)
        dr, di = _cmm(cr, ci, f2r, f2i, PREC, False, False)
        # 4. times the kernel's spectrum (already / N)
        kr = tl.load(kr_ptr + c * (N1 * N2) + tw)
        ki = tl.load(ki_ptr + c * (N1 * N2) + tw)
        er, ei = _cmul(dr, di, kr, ki, False)
        # 5. inverse: conj(F2), conj(T), conj(F1) restricted to the first N1/2 outputs
        gr, gi = _cmm(er, ei, f2r, f2i, PREC, False, True)
        hr, hi = _cmul(gr, gi, twr, twi, True)
        g1 = rh[:, None] + r1[None, :] * H  # conj(F1)[n1, k1] = conj(F1[k1, n1])
        g1r = tl.load(f1r_ptr + g1)
        g1i = tl.load(f1i_ptr + g1)
        yr, yi = _cmm(g1r, g1i, hr, hi, PREC, True, False)
        _epilogue(yr, yi, a, b, c, n, m0, m1, b0, b1, skip_ptr, gate_ptr, add_ptr, out_ptr,
                  s_gb, s_gc, s_gl, s_ab, s_ac, s_al, s_ob, s_oc, s_ol,
                  HAS_SKIP, HAS_GATE, HAS_ADD)  # fmt: skip

    @triton.jit
    def _epilogue(
        yr, yi, a, b, c, n, m0, m1, b0, b1, skip_ptr, gate_ptr, add_ptr, out_ptr,
        s_gb, s_gc, s_gl, s_ab, s_ac, s_al, s_ob, s_oc, s_ol,
        HAS_SKIP: tl.constexpr, HAS_GATE: tl.constexpr, HAS_ADD: tl.constexpr,
    ):  # fmt: skip
        """``(y + skip * x) * gate + add`` for rows b0 (real part) and b1 (imaginary part),
        stored at positions ``n`` with masks m0 and m1; a and b are the rows of x."""
        if HAS_SKIP:
            s = tl.load(skip_ptr + c).to(tl.float32)
            yr += s * a
            yi += s * b
        if HAS_GATE:
            gn = gate_ptr + c * s_gc + n * s_gl
            yr *= tl.load(gn + b0 * s_gb, mask=m0, other=0.0).to(tl.float32)
            yi *= tl.load(gn + b1 * s_gb, mask=m1, other=0.0).to(tl.float32)
        if HAS_ADD:
            an = add_ptr + c * s_ac + n * s_al
            yr += tl.load(an + b0 * s_ab, mask=m0, other=0.0).to(tl.float32)
            yi += tl.load(an + b1 * s_ab, mask=m1, other=0.0).to(tl.float32)
        out_t = out_ptr.dtype.element_ty
        on = out_ptr + c * s_oc + n * s_ol
        tl.store(on + b0 * s_ob, yr.to(out_t), mask=m0)
        tl.store(on + b1 * s_ob, yi.to(out_t), mask=m1)


def transform_size(seqlen: int) -> tuple[int, int]:
    """(N1, N2) of the transform for sequences of ``seqlen``: N = N1 * N2 = max(512, pow2 >= 2L).

    N1 ~ sqrt(2N) minimises the matmul work N (N1 + 2 N2) of the two-row program.
    """
    n = max(MIN_N, 1 << max(0, 2 * seqlen - 1).bit_length())
    n1 = 1 << -(-(n.bit_length() - 1) // 2)  # 2^ceil(log2(N) / 2)
    return n1, n // n1


def max_points(precision: str = "bf16") -> int:
    """The largest transform one program holds with matmul operands of ``precision``."""
    return MAX_N if precision == "bf16" else min(MAX_N, MAX_N_FP32)


def supported(seqlen: int, precision: str = "bf16") -> bool:
    """Whether the Triton FFT convolution takes length ``seqlen`` (one program, or LONG_FFT)."""
    return 2 * seqlen <= max_points(precision) or LONG_FFT


def plan(seqlen: int, precision: str = "bf16") -> tuple:
    """How length ``seqlen`` is transformed with ``precision`` operands: ``("one", N1, N2)`` (one
    program per row pair) or, beyond :func:`max_points` / 2 with :data:`LONG_FFT` on,
    ``("long", P, M1, M2)`` (three passes)."""
    max_n = max_points(precision)
    if 2 * seqlen <= max_n:
        return ("one", *transform_size(seqlen))
    if not supported(seqlen, precision):
        raise ValueError(
            f"the Triton FFT convolution holds N <= {max_n} points (L <= {max_n // 2}) with "
            f"{precision} operands, got L = {seqlen}; use kernel='torch' for longer sequences"
        )
    from m2bench.kernels.fftconv_long_triton import long_transform

    return ("long", *long_transform(seqlen))


def plan_spectrum(
    how: tuple, k_fwd: torch.Tensor, k_rev: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' spectrum in the layout of plan ``how``."""
    if how[0] == "one":
        return kernel_spectrum(k_fwd, k_rev, *how[1:])
    from m2bench.kernels.fftconv_long_triton import long_spectrum

    return long_spectrum(k_fwd, k_rev, *how[1:])


def plan_conv(how: tuple, x: torch.Tensor, spec, skip=None, gate=None, add=None, **kw):
    """Run plan ``how`` (keywords as :func:`fftconv_fwd`: out, out_dtype, precision)."""
    if how[0] == "one":
        return fftconv_fwd(x, spec, *how[1:], skip, gate, add, **kw)
    from m2bench.kernels.fftconv_long_triton import long_fftconv_fwd

    return long_fftconv_fwd(x, spec, *how[1:], skip, gate, add, **kw)


_TABLES: dict[tuple, tuple[torch.Tensor, ...]] = {}


def omega(prod: torch.Tensor, size: int) -> torch.Tensor:
    """``exp(-2 pi i prod / size)`` for float64 integer-valued ``prod`` (complex128)."""
    return torch.polar(torch.ones_like(prod), -2 * math.pi * (prod % size) / size)


def dft_tables(
    n1: int, n2: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """(f1r, f1i, f2r, f2i, twr, twi), cached per (N1, N2, device, dtype).

    ``f1`` (N1, N1/2): ``w_N1^(k1 n1)`` for n1 < N1/2; ``f2`` (N2, N2): ``w_N2^(n2 k2)``, both in
    ``dtype`` (they only feed matmuls: bf16 tables give the same products as float32 tables cast
    to bf16 in the kernel); ``tw`` (N1, N2): ``w_N^(k1 n2)``, always float32.
    """
    key = (n1, n2, str(device), dtype)
    if key not in _TABLES:
        n = n1 * n2
        k1 = torch.arange(n1, dtype=torch.float64)
        h = torch.arange(n1 // 2, dtype=torch.float64)
        q = torch.arange(n2, dtype=torch.float64)
        mats = (
            omega(k1[:, None] * h[None, :], n1),
            omega(q[:, None] * q[None, :], n2),
            omega(k1[:, None] * q[None, :], n),
        )
        _TABLES[key] = tuple(
            part.to(device=device, dtype=dtype if i < 2 else torch.float32).contiguous()
            for i, m in enumerate(mats)
            for part in (m.real, m.imag)
        )
    return _TABLES[key]


def full_spectrum(k_fwd: torch.Tensor, k_rev: torch.Tensor | None, n: int) -> torch.Tensor:
    """The N-point spectrum / N (C, N) of the kernels laid out as ``[k_fwd, 0 ..., reversed
    k_rev]`` (causal: ``[k_fwd, 0 ...]``). Complex64 (complex128 for float64 kernels)."""
    channels, seqlen = k_fwd.shape
    work = torch.float64 if k_fwd.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=k_fwd.device.type, enabled=False):
        k = torch.zeros(channels, n, device=k_fwd.device, dtype=work)
        k[:, :seqlen] = k_fwd.to(work)
        if k_rev is not None:
            k[:, n - seqlen :] = k_rev.to(work).flip(-1)
        return torch.fft.fft(k, dim=-1) / n


def kernel_spectrum(
    k_fwd: torch.Tensor, k_rev: torch.Tensor | None, n1: int, n2: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`full_spectrum` in the program's layout: (re, im), each (C, N1, N2), with
    ``out[c, k1, k2] = K[c, k1 + N1 k2] / N``."""
    spec = full_spectrum(k_fwd, k_rev, n1 * n2).view(k_fwd.shape[0], n2, n1).transpose(1, 2)
    return spec.real.contiguous(), spec.imag.contiguous()


def default_precision(x: torch.Tensor) -> str:
    """``"bf16"`` matmul operands for half inputs or under autocast; for float32 ``"tf32"`` when
    PyTorch allows TF32 matmuls (``torch.get_float32_matmul_precision()`` is not "highest", e.g.
    ``torch.backends.cuda.matmul.allow_tf32 = True``), else ``"tf32x3"`` (PyTorch's default:
    float32-accurate).

    Measured on an H200 (relative error of one convolution against float64, L = 4096): tf32
    2.3e-3, bf16 4.0e-3, tf32x3 9e-7 (5x slower than bf16), ieee 4.5e-7 (slower still).
    """
    half = x.dtype in (torch.float16, torch.bfloat16)
    if half or torch.is_autocast_enabled(x.device.type):
        return "bf16"
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _check(x: torch.Tensor, k_fwd: torch.Tensor, k_rev, skip, gate, add, precision) -> None:
    if triton is None:
        raise RuntimeError("Triton is not installed; use kernel='torch'")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton kernels need CUDA (or the CPU with TRITON_INTERPRET=1); use kernel='torch'"
        )
    if x.ndim != 3:
        raise ValueError(f"x must be (B, C, L), got {tuple(x.shape)}")
    batch, channels, seqlen = x.shape
    plan(seqlen, precision)  # raises beyond max_points / 2 unless LONG_FFT
    if x.dtype not in DTYPES:
        raise ValueError(f"x dtype {x.dtype} is not supported; use one of {DTYPES}")
    want = (channels, seqlen)
    for name, k in (("k_fwd", k_fwd), ("k_rev", k_rev)):
        if k is not None and tuple(k.shape) != want:
            raise ValueError(f"{name} must be {want}, got {tuple(k.shape)}")
    if skip is not None and tuple(skip.shape) != (channels,):
        raise ValueError(f"skip must be ({channels},), got {tuple(skip.shape)}")
    for name, t in (("gate", gate), ("add", add)):
        if t is not None and t.shape != x.shape:
            raise ValueError(f"{name} must be {tuple(x.shape)}, got {tuple(t.shape)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")


def fftconv_fwd(
    x: torch.Tensor,
    spec: tuple[torch.Tensor, torch.Tensor],
    n1: int,
    n2: int,
    skip: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    precision: str = "tf32",
    num_warps: int | None = None,
    table_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Launch the kernel: x (B, C, L), spectrum from :func:`kernel_spectrum` -> (B, C, L).

    ``n1``, ``n2``, ``num_warps`` and ``table_dtype`` (of the DFT matrices; bf16 only with
    ``precision="bf16"``, where it gives the same products; default bf16 there, 8% faster at
    L = 4096 on an H200, else float32) are tuning knobs; the public functions use
    :func:`transform_size` and the defaults.

    Any strides: a (B, L, C) tensor viewed as (B, C, L) is read and written in place (measured
    2x slower than contiguous rows on an H200: one channel per program).
    """
    pow2 = all(v & (v - 1) == 0 for v in (n1, n2))
    if not (pow2 and n1 >= 32 and n2 >= 16 and n1 * n2 >= 2 * x.shape[-1]):
        raise ValueError(
            f"transform {n1} x {n2} is not usable for L = {x.shape[-1]}: powers of two with "
            "N1 >= 32 and N2 >= 16 (16-wide matmul sides) and N1 * N2 >= 2L"
        )
    if table_dtype is None:
        table_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if table_dtype != torch.float32 and precision != "bf16":
        raise ValueError("table_dtype other than float32 needs precision='bf16'")
    batch, channels, seqlen = x.shape
    if out is None:
        out = torch.empty(batch, channels, seqlen, device=x.device, dtype=out_dtype or x.dtype)
    g, a = (gate if gate is not None else x), (add if add is not None else x)
    tables = dft_tables(n1, n2, x.device, table_dtype if x.device.type == "cuda" else torch.float32)
    # the interpreter computes every dot in float32 (its bf16 dot is wrong in triton 3.8)
    prec = precision if x.device.type == "cuda" else "ieee"
    grid = ((batch + 1) // 2, channels)
    _fftconv_kernel[grid](
        x, spec[0], spec[1], skip if skip is not None else x, g, a, out, *tables,
        batch, seqlen, *x.stride(), *g.stride(), *a.stride(), *out.stride(),
        N1=n1, N2=n2, HAS_SKIP=skip is not None, HAS_GATE=gate is not None,
        HAS_ADD=add is not None, PREC=prec, num_warps=num_warps or (8 if n1 * n2 >= 8192 else 4),
    )  # fmt: skip
    return out


class FFTConv(torch.autograd.Function):
    """Autograd wrapper: Triton forward and dx; dk_fwd, dk_rev, dskip by ``torch.fft``."""

    @staticmethod
    def forward(ctx, x, k_fwd, k_rev, skip, precision):  # noqa: D102
        how = plan(x.shape[-1], precision)
        spec = plan_spectrum(how, k_fwd, k_rev)
        ctx.save_for_backward(x, skip, *spec)
        ctx.meta = (how, precision, k_rev is not None, k_fwd.dtype)
        return plan_conv(how, x, spec, skip, precision=precision)

    @staticmethod
    def backward(ctx, dy):  # noqa: D102
        x, skip, sr, si = ctx.saved_tensors
        how, precision, has_rev, k_dtype = ctx.meta
        need_x, need_kf, need_kr, need_skip = ctx.needs_input_grad[:4]
        dx = dkf = dkr = dskip = None
        if need_x:  # the adjoint: the conjugate spectrum
            dx = plan_conv(how, dy, (sr, -si), skip, out_dtype=x.dtype, precision=precision)
        if need_kf or need_kr or need_skip:
            seqlen, n = x.shape[-1], math.prod(how[1:])
            with torch.autocast(device_type=x.device.type, enabled=False):
                work = torch.float64 if x.dtype == torch.float64 else torch.float32
                xw, dyw = x.to(work), dy.to(work)
                if need_kf or need_kr:
                    cross = (torch.fft.rfft(dyw, n=n) * torch.fft.rfft(xw, n=n).conj()).sum(0)
                    dk = torch.fft.irfft(cross, n=n)  # dk[j] = sum_b,t dy[t] x[t - j mod N]
                    dkf = dk[:, :seqlen].to(k_dtype) if need_kf else None
                    if need_kr and has_rev:
                        dkr = dk[:, n - seqlen :].flip(-1).to(k_dtype)
                if need_skip and skip is not None:
                    dskip = (dyw * xw).sum((0, 2)).to(skip.dtype)
        return dx, dkf, dkr, dskip, None


def fft_conv(
    x: torch.Tensor,
    k_fwd: torch.Tensor,
    k_rev: torch.Tensor | None = None,
    skip: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """``(fft_conv(x, k_fwd, k_rev, skip) * gate + add)`` with the Triton kernel.

    Same contract as :func:`m2bench.kernels.reference.fft_conv`: x (B, C, L), kernels (C, L),
    skip (C,), gate and add (B, C, L) or None, any strides; output (B, C, L) in ``out_dtype``
    (default x's), written into ``out`` when given (any strides; returned). Without gradients
    the gating is fused into the kernel; with gradients the convolution is an autograd function
    and the gating plain PyTorch (``out`` then receives a copy).

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: bad shapes, dtypes, precision, or L > MAX_N / 2.
    """
    precision = precision or default_precision(x)
    _check(x, k_fwd, k_rev, skip, gate, add, precision)
    if out is not None and out.shape != x.shape:
        raise ValueError(f"out must be {tuple(x.shape)}, got {tuple(out.shape)}")
    grads = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, k_fwd, k_rev, skip, gate, add)
    )
    if not grads:
        how = plan(x.shape[-1], precision)
        spec = plan_spectrum(how, k_fwd, k_rev)
        return plan_conv(how, x, spec, skip, gate, add, out=out, out_dtype=out_dtype,
                         precision=precision)  # fmt: skip
    from m2bench.layers.long_conv import gate_add

    y = FFTConv.apply(x, k_fwd, k_rev, skip, precision)
    return gate_add(y, gate, add, out_dtype or x.dtype, out)


def fft_conv_spectrum(
    x: torch.Tensor,
    spec: tuple[torch.Tensor, torch.Tensor],
    skip: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """:func:`fft_conv` from a precomputed :func:`plan_spectrum` (inference: no gradients).

    For layers that keep their kernels' spectrum between calls while the weights do not change.

    Raises:
        RuntimeError: gradients are required (use :func:`fft_conv`), or no backend.
        ValueError: as :func:`fft_conv`, or a spectrum of the wrong shape.
    """
    precision = precision or default_precision(x)
    _check(x, None, None, skip, gate, add, precision)
    how = plan(x.shape[-1], precision)
    want = (x.shape[1], *how[1:])
    if len(spec) != 2 or any(tuple(t.shape) != want for t in spec):
        raise ValueError(f"spectrum must be two {want} tensors (plan_spectrum)")
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, skip, gate, add)
    ):
        raise RuntimeError("fft_conv_spectrum has no backward; use fft_conv when training")
    return plan_conv(how, x, spec, skip, gate, add, out_dtype=out_dtype, precision=precision)
