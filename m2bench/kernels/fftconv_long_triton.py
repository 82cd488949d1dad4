"""Triton FFT long convolution for long sequences: three passes through a scratch buffer.

The one-program kernel of :mod:`m2bench.kernels.fftconv_triton` holds a whole N-point transform in
registers (N <= 16,384). For longer rows, N = P * M is split once more (the same four-step FFT,
FlashFFTConv's idea applied recursively: Fu et al. 2023, https://arxiv.org/abs/2311.05908):

1. **outer forward** (one program per row pair, channel and chunk of MC columns): the P-point
   DFT over the slow index n1 of ``x[n1 M + m]`` (only n1 < P/2 are non-zero), times the twiddles
   ``w_N^(k1 m)``, written to a float32 complex scratch (pairs, C, P, M);
2. **inner** (one program per row pair, channel and k1): the M-point DFT of scratch row k1 as the
   in-register four-step (M = M1 * M2), times the kernel's spectrum
   ``K[k1 + P (k1' + M1 k2')] / N``, the inverse M-point DFT, written back in place;
3. **outer inverse** (as pass 1): conjugate twiddles, the inverse P-point DFT for the outputs
   n1 < P/2 (the first L), plus ``skip * x``, ``* gate``, ``+ add``.

Rows are paired as in the one-program kernel (row a real, row b imaginary). Work per row pair:
``4 P N + 8 N (M1 + M2)`` real multiply-adds (P = 32, M = 2048 = 64 x 32: 896 N, against 1536 N
for one program at 128 x 128), plus 32 bytes of scratch traffic per element (16 with the bf16
scratch knob of :func:`long_fftconv_fwd`).

Measured on an H200 (bf16, 65,536 tokens x 768 channels, gated, scripts/gpu_tune_probe.py at
3f7a78e): L = 32768 1.08 ms with P = 32, M1 = 64, M2 = 32, chunk 64 (P = 64: 1.43 ms, P = 128:
1.29 ms; cuFFT 3.07 ms); L = 8192 1.18 ms (cuFFT 2.32 ms, the one-program kernel 1.08 ms). The
layers use it for L > 8192 while :data:`m2bench.kernels.fftconv_triton.LONG_FFT` is on (the
default).
"""

from __future__ import annotations

import torch

from m2bench.kernels.fftconv_triton import _cmm, _cmul, _epilogue, full_spectrum, omega, triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _outer_fwd_kernel(
        x_ptr, fr_ptr, fi_ptr, twr_ptr, twi_ptr, sr_ptr, si_ptr, B, C, L, s_xb, s_xc, s_xl,
        P: tl.constexpr, M: tl.constexpr, MC: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        HP: tl.constexpr = P // 2
        pair, c, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b0 = 2 * pair
        b1 = b0 + 1
        rh = tl.arange(0, HP)
        rp = tl.arange(0, P)
        q = j * MC + tl.arange(0, MC)
        n = rh[:, None] * M + q[None, :]
        m0 = n < L
        m1 = m0 & (b1 < B)
        xn = x_ptr + c * s_xc + n.to(tl.int64) * s_xl
        a = tl.load(xn + b0 * s_xb, mask=m0, other=0.0).to(tl.float32)
        b = tl.load(xn + b1 * s_xb, mask=m1, other=0.0).to(tl.float32)
        f = rp[:, None] * HP + rh[None, :]
        fr = tl.load(fr_ptr + f)
        fi = tl.load(fi_ptr + f)
        br, bi = _cmm(fr, fi, a, b, PREC, False, False)
        tw = rp[:, None] * M + q[None, :]
        twr = tl.load(twr_ptr + tw)
        twi = tl.load(twi_ptr + tw)
        cr, ci = _cmul(br, bi, twr, twi, False)
        off = (pair * C + c).to(tl.int64) * (P * M) + tw
        tl.store(sr_ptr + off, cr.to(sr_ptr.dtype.element_ty))
        tl.store(si_ptr + off, ci.to(si_ptr.dtype.element_ty))

    @triton.jit
    def _inner_kernel(
        sr_ptr, si_ptr, kr_ptr, ki_ptr, f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr, C,
        P: tl.constexpr, M1: tl.constexpr, M2: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        pair, c, k1 = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        r1 = tl.arange(0, M1)
        q = tl.arange(0, M2)
        idx = r1[:, None] * M2 + q[None, :]
        base = ((pair * C + c).to(tl.int64) * P + k1) * (M1 * M2)
        ar = tl.load(sr_ptr + base + idx).to(tl.float32)
        ai = tl.load(si_ptr + base + idx).to(tl.float32)
        f1 = r1[:, None] * M1 + r1[None, :]
        f1r = tl.load(f1r_ptr + f1)
        f1i = tl.load(f1i_ptr + f1)
        br, bi = _cmm(f1r, f1i, ar, ai, PREC, False, False)
        twr = tl.load(twr_ptr + idx)
        twi = tl.load(twi_ptr + idx)
        cr, ci = _cmul(br, bi, twr, twi, False)
        f2 = q[:, None] * M2 + q[None, :]
        f2r = tl.load(f2r_ptr + f2)
        f2i = tl.load(f2i_ptr + f2)
        dr, di = _cmm(cr, ci, f2r, f2i, PREC, False, False)
        k_off = (c * P + k1).to(tl.int64) * (M1 * M2) + idx
        kr = tl.load(kr_ptr + k_off)
        ki = tl.load(ki_ptr + k_off)
        er, ei = _cmul(dr, di, kr, ki, False)
        gr, gi = _cmm(er, ei, f2r, f2i, PREC, False, True)
        hr, hi = _cmul(gr, gi, twr, twi, True)
        # conj(F_M1) is its own transpose's conjugate: rows of the symmetric table, conjugated
        yr, yi = _cmm(f1r, f1i, hr, hi, PREC, True, False)
        tl.store(sr_ptr + base + idx, yr.to(sr_ptr.dtype.element_ty))
        tl.store(si_ptr + base + idx, yi.to(si_ptr.dtype.element_ty))

    @triton.jit
    def _outer_inv_kernel(
        sr_ptr, si_ptr, fr_ptr, fi_ptr, twr_ptr, twi_ptr, x_ptr, skip_ptr, gate_ptr, add_ptr,
        out_ptr, B, C, L, s_xb, s_xc, s_xl, s_gb, s_gc, s_gl, s_ab, s_ac, s_al, s_ob, s_oc, s_ol,
        P: tl.constexpr, M: tl.constexpr, MC: tl.constexpr, HAS_SKIP: tl.constexpr,
        HAS_GATE: tl.constexpr, HAS_ADD: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        HP: tl.constexpr = P // 2
        pair, c, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b0 = 2 * pair
        b1 = b0 + 1
        rh = tl.arange(0, HP)
        rp = tl.arange(0, P)
        q = j * MC + tl.arange(0, MC)
        tw = rp[:, None] * M + q[None, :]
        off = (pair * C + c).to(tl.int64) * (P * M) + tw
        sr = tl.load(sr_ptr + off).to(tl.float32)
        si = tl.load(si_ptr + off).to(tl.float32)
        twr = tl.load(twr_ptr + tw)
        twi = tl.load(twi_ptr + tw)
        hr, hi = _cmul(sr, si, twr, twi, True)
        g = rh[:, None] + rp[None, :] * HP  # conj(F_P)[n1, k1] = conj(F_P[k1, n1]), n1 < P/2
        gr = tl.load(fr_ptr + g)
        gi = tl.load(fi_ptr + g)
        yr, yi = _cmm(gr, gi, hr, hi, PREC, True, False)
        n = rh[:, None] * M + q[None, :]
        m0 = n < L
        m1 = m0 & (b1 < B)
        a, b = yr, yi  # the rows of x, read only for the skip term
        if HAS_SKIP:
            xn = x_ptr + c * s_xc + n.to(tl.int64) * s_xl
            a = tl.load(xn + b0 * s_xb, mask=m0, other=0.0).to(tl.float32)
            b = tl.load(xn + b1 * s_xb, mask=m1, other=0.0).to(tl.float32)
        _epilogue(yr, yi, a, b, c, n, m0, m1, b0, b1, skip_ptr, gate_ptr, add_ptr, out_ptr,
                  s_gb, s_gc, s_gl, s_ab, s_ac, s_al, s_ob, s_oc, s_ol,
                  HAS_SKIP, HAS_GATE, HAS_ADD)  # fmt: skip


def long_transform(seqlen: int) -> tuple[int, int, int]:
    """(P, M1, M2) for ``seqlen``: N = P * M1 * M2 = the power of two >= 2L, at least 16,384.

    P = 32 (the fastest P at L = 8192 and 32768 on an H200); M1 = 2^ceil(log2(M) / 2),
    M2 = M / M1 (both >= 16).
    """
    n = max(16384, 1 << max(0, 2 * seqlen - 1).bit_length())
    p = 32
    m = n // p
    m1 = 1 << -(-(m.bit_length() - 1) // 2)
    return p, m1, m // m1


_TABLES: dict[tuple, tuple[torch.Tensor, ...]] = {}


def long_tables(p: int, m1: int, m2: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Float32 tables, cached: F_P (P, P/2), w_N^(k1 m) (P, M), F_M1 (M1, M1), F_M2 (M2, M2),
    w_M^(k1' m2) (M1, M2); each as (re, im)."""
    key = (p, m1, m2, str(device))
    if key not in _TABLES:
        m, n = m1 * m2, p * m1 * m2
        kp = torch.arange(p, dtype=torch.float64)
        a1 = torch.arange(m1, dtype=torch.float64)
        a2 = torch.arange(m2, dtype=torch.float64)
        mats = (
            omega(kp[:, None] * torch.arange(p // 2, dtype=torch.float64)[None, :], p),
            omega(kp[:, None] * torch.arange(m, dtype=torch.float64)[None, :], n),
            omega(a1[:, None] * a1[None, :], m1),
            omega(a2[:, None] * a2[None, :], m2),
            omega(a1[:, None] * a2[None, :], m),
        )
        _TABLES[key] = tuple(
            part.to(device=device, dtype=torch.float32).contiguous()
            for mat in mats
            for part in (mat.real, mat.imag)
        )
    return _TABLES[key]


def long_spectrum(
    k_fwd: torch.Tensor, k_rev: torch.Tensor | None, p: int, m1: int, m2: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' N-point spectrum / N as (re, im), each (C, P, M1, M2):
    ``out[c, k1, k1', k2'] = K[c, k1 + P (k1' + M1 k2')] / N`` (kernel layout as
    :func:`~m2bench.kernels.fftconv_triton.full_spectrum`)."""
    spec = full_spectrum(k_fwd, k_rev, p * m1 * m2)
    spec = spec.view(k_fwd.shape[0], m2, m1, p).permute(0, 3, 2, 1)
    return spec.real.contiguous(), spec.imag.contiguous()


def long_fftconv_fwd(
    x: torch.Tensor,
    spec: tuple[torch.Tensor, torch.Tensor],
    p: int,
    m1: int,
    m2: int,
    skip: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    precision: str = "tf32",
    chunk: int = 64,
    scratch_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The three launches: x (B, C, L) (any strides), spectrum from :func:`long_spectrum`.

    ``scratch_dtype`` (a tuning knob, not yet timed on a GPU): bf16 halves the scratch traffic
    that bounds this kernel (32 bytes per element in float32) and rounds the intermediate
    spectrum once more, so it is allowed only with ``precision="bf16"``.
    """
    if scratch_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"scratch_dtype must be float32 or bfloat16, got {scratch_dtype}")
    if scratch_dtype != torch.float32 and precision != "bf16":
        raise ValueError("a bf16 scratch needs precision='bf16'")
    batch, channels, seqlen = x.shape
    m = m1 * m2
    ok = all(v & (v - 1) == 0 for v in (p, m1, m2, chunk))
    if not (ok and p >= 32 and m1 >= 16 and m2 >= 16 and 16 <= chunk <= m and p * m >= 2 * seqlen):
        raise ValueError(
            f"long transform {p} x {m1} x {m2} (chunk {chunk}) is not usable for L = {seqlen}"
        )
    if out is None:
        out = torch.empty(batch, channels, seqlen, device=x.device, dtype=out_dtype or x.dtype)
    pairs = (batch + 1) // 2
    scratch = torch.empty(2, pairs, channels, p, m, device=x.device, dtype=scratch_dtype)
    fr, fi, twr, twi, f1r, f1i, f2r, f2i, tir, tii = long_tables(p, m1, m2, x.device)
    prec = precision if x.device.type == "cuda" else "ieee"
    outer = (pairs, channels, m // chunk)
    _outer_fwd_kernel[outer](
        x, fr, fi, twr, twi, scratch[0], scratch[1], batch, channels, seqlen, *x.stride(),
        P=p, M=m, MC=chunk, PREC=prec,
    )  # fmt: skip
    _inner_kernel[(pairs, channels, p)](
        scratch[0], scratch[1], spec[0], spec[1], f1r, f1i, f2r, f2i, tir, tii, channels,
        P=p, M1=m1, M2=m2, PREC=prec,
    )  # fmt: skip
    g, a = (gate if gate is not None else x), (add if add is not None else x)
    _outer_inv_kernel[outer](
        scratch[0], scratch[1], fr, fi, twr, twi, x, skip if skip is not None else x, g, a, out,
        batch, channels, seqlen, *x.stride(), *g.stride(), *a.stride(), *out.stride(),
        P=p, M=m, MC=chunk, HAS_SKIP=skip is not None, HAS_GATE=gate is not None,
        HAS_ADD=add is not None, PREC=prec,
    )  # fmt: skip
    return out
