"""Triton kernels for the gating around the FFT long convolution of the M2 sequence mixer.

The torch path of :class:`~m2bench.layers.mixer.M2SequenceMixer` moves the (B, L, 3d) output of
``in_proj`` through a transpose copy, a depthwise conv, three split views, a gating product, the
FFT convolution (with its cast to float32 and back), a second gating product, a residual add and a
transpose copy back to (B, L, d). Two kernels fuse everything around the FFT convolution:

- :func:`short_conv_gate` (z (B, L, 3d), w (3d, K), b (3d,) -> pre (B, d, L) float32, x2 (B, d, L)):
  the causal depthwise short conv ``o[t] = b + sum_j w[:, j] z[t - (K-1) + j]`` (zero before
  t = 0) read straight from z's natural layout, the split into x1, x2, v and ``pre = v * x1``,
  stored channels first, ready for ``fft_conv``. One read of z (the K taps re-read neighbouring
  rows from cache), one write of each output. Torch: read z, write the transposed copy, read it
  and write the conv output (3d channels), read x1 and v and write ``v * x1``, then read and
  write it again for the float32 cast in ``fft_conv``: about 4x fewer bytes.
- :func:`transpose` (x (B, A, C), any strides -> (B, C, A) contiguous): a tiled transpose
  through shared memory, coalesced on both sides (PyTorch's strided copy is not: 0.33 ms for a
  (16, 4096, 768) bf16 tensor on an H200, three times the bytes' worth).
- :func:`gate_out` (y (B, d, L) float32, x2 (B, d, L), res (B, d, L) or None -> (B, L, d)):
  ``y * x2 (+ res)`` stored transposed, in x2's dtype, ready for ``out_proj``. Reads each input
  once and writes once, instead of the cast of y, the product, the add and the transpose copy
  (each a full read and write).

Math is float32 whatever the input dtype. Backward: :func:`gate_out`'s is a Triton kernel (one
pass: reads dout, y, x2, writes dy and dx2; dres is dout transposed, a view);
:func:`short_conv_gate`'s is plain PyTorch (recomputes the twin in float32 and differentiates it;
a Triton backward with dw/db reductions is future work). Twins: ``m2bench.kernels.reference``.

Runs on CUDA, and on the CPU under ``TRITON_INTERPRET=1`` (the CI parity tests). Measured on an
H200 inside M2-BERT-80M (L = 4096, 65,536 tokens, bf16): short conv + gate 0.34 ms per call (1.8
TB/s), transpose 0.050 ms (``results/README.md``).
"""

from __future__ import annotations

import os

import torch

from m2bench.kernels import reference

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the launcher raises a clear error instead
    triton = None

#: input dtypes the kernels accept (math is float32 for all of them)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCK_L, _BLOCK_D = 64, 32
#: the short conv's tile: 64 x 64 took 0.195 ms at (16, 4096, 2304) bf16 on an H200, 64 x 32 0.341
#: (scripts/gpu_tune_probe.py at 3f7a78e)
_CONV_BLOCK_L, _CONV_BLOCK_D = 64, 64


if triton is not None:

    @triton.jit
    def _short_conv_gate_kernel(
        z_ptr, w_ptr, b_ptr, pre_ptr, x2_ptr, L, D,
        s_zb, s_zl, s_zc, s_wc, s_wk, s_ob, s_oc, s_ol,
        K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        pid_l, pid_d, bi = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        c_ok = c < D
        # conv outputs of the three channel groups x1, x2, v (channels c, D + c, 2D + c)
        acc1 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        acc1 += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        acc2 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        acc2 += tl.load(b_ptr + D + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        acc3 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        acc3 += tl.load(b_ptr + 2 * D + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        z_base = z_ptr + bi * s_zb
        for j in tl.static_range(K):
            ts = t - (K - 1) + j
            m = ((ts >= 0) & (ts < L))[:, None] & c_ok[None, :]
            rows = z_base + ts[:, None] * s_zl
            w_tap = w_ptr + j * s_wk
            w1 = tl.load(w_tap + c * s_wc, mask=c_ok, other=0.0).to(tl.float32)
            w2 = tl.load(w_tap + (D + c) * s_wc, mask=c_ok, other=0.0).to(tl.float32)
            w3 = tl.load(w_tap + (2 * D + c) * s_wc, mask=c_ok, other=0.0).to(tl.float32)
            z1 = tl.load(rows + c[None, :] * s_zc, mask=m, other=0.0).to(tl.float32)
            z2 = tl.load(rows + (D + c)[None, :] * s_zc, mask=m, other=0.0).to(tl.float32)
            z3 = tl.load(rows + (2 * D + c)[None, :] * s_zc, mask=m, other=0.0).to(tl.float32)
            acc1 += w1[None, :] * z1
            acc2 += w2[None, :] * z2
            acc3 += w3[None, :] * z3
        out = bi * s_ob + c[None, :] * s_oc + t[:, None] * s_ol
        m_out = (t < L)[:, None] & c_ok[None, :]
        tl.store(pre_ptr + out, acc3 * acc1, mask=m_out)
        tl.store(x2_ptr + out, acc2.to(x2_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def _gate_out_kernel(
        y_ptr, x2_ptr, res_ptr, out_ptr, L, D,
        s_yb, s_yc, s_yl, s_xb, s_xc, s_xl, s_rb, s_rc, s_rl, s_ob, s_ol, s_oc,
        HAS_RES: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        pid_l, pid_d, bi = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        m = (t < L)[:, None] & (c < D)[None, :]
        y = tl.load(y_ptr + bi * s_yb + c[None, :] * s_yc + t[:, None] * s_yl, mask=m, other=0.0)
        x2 = tl.load(x2_ptr + bi * s_xb + c[None, :] * s_xc + t[:, None] * s_xl, mask=m, other=0.0)
        out = y.to(tl.float32) * x2.to(tl.float32)
        if HAS_RES:
            r_off = bi * s_rb + c[None, :] * s_rc + t[:, None] * s_rl
            out += tl.load(res_ptr + r_off, mask=m, other=0.0).to(tl.float32)
        o_off = bi * s_ob + t[:, None] * s_ol + c[None, :] * s_oc
        tl.store(out_ptr + o_off, out.to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _gate_out_bwd_kernel(
        dout_ptr, y_ptr, x2_ptr, dy_ptr, dx2_ptr, L, D,
        s_db, s_dl, s_dc, s_yb, s_yc, s_yl, s_xb, s_xc, s_xl, s_gb, s_gc, s_gl,
        BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        # dy = dout^T * x2 and dx2 = dout^T * y; dy and dx2 share one (B, d, L) stride triple
        pid_l, pid_d, bi = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        m = (t < L)[:, None] & (c < D)[None, :]
        d_off = bi * s_db + t[:, None] * s_dl + c[None, :] * s_dc
        dout = tl.load(dout_ptr + d_off, mask=m, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + bi * s_yb + c[None, :] * s_yc + t[:, None] * s_yl, mask=m, other=0.0)
        x2 = tl.load(x2_ptr + bi * s_xb + c[None, :] * s_xc + t[:, None] * s_xl, mask=m, other=0.0)
        g_off = bi * s_gb + c[None, :] * s_gc + t[:, None] * s_gl
        tl.store(dy_ptr + g_off, (dout * x2.to(tl.float32)).to(dy_ptr.dtype.element_ty), mask=m)
        tl.store(dx2_ptr + g_off, (dout * y.to(tl.float32)).to(dx2_ptr.dtype.element_ty), mask=m)


if triton is not None:

    @triton.jit
    def _transpose_kernel(
        x_ptr, y_ptr, A, C, s_xb, s_xa, s_xc, s_yb, s_yc, s_ya,
        BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        pid_a, pid_c, bi = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        m = (a < A)[:, None] & (c < C)[None, :]
        tile = tl.load(x_ptr + bi * s_xb + a[:, None] * s_xa + c[None, :] * s_xc, mask=m)
        tl.store(y_ptr + bi * s_yb + c[None, :] * s_yc + a[:, None] * s_ya, tile, mask=m)


def _check_backend(x: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError("Triton is not installed; use kernel='torch'")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton kernels need CUDA (or the CPU with TRITON_INTERPRET=1); use kernel='torch'"
        )


def _check_dtype(name: str, x: torch.Tensor) -> None:
    if x.dtype not in DTYPES:
        raise ValueError(f"{name} dtype {x.dtype} is not supported; use one of {DTYPES}")


def _grid(
    batch: int, seqlen: int, width: int, block_l: int = _BLOCK_L, block_d: int = _BLOCK_D
) -> tuple[int, int, int]:
    return (triton.cdiv(seqlen, block_l), triton.cdiv(width, block_d), batch)


def short_conv_gate_fwd(
    z: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the short-conv-and-gate kernel; shapes as :func:`reference.short_conv_gate`.

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: mismatched shapes or unsupported dtypes.
    """
    _check_backend(z)
    if z.ndim != 3 or z.shape[2] % 3 != 0:
        raise ValueError(f"z must be (B, L, 3d), got {tuple(z.shape)}")
    batch, seqlen, channels = z.shape
    if w.ndim != 2 or w.shape[0] != channels or b.shape != (channels,):
        got = f"{tuple(w.shape)} and {tuple(b.shape)}"
        raise ValueError(f"w must be ({channels}, K) and b ({channels},), got {got}")
    for name, x in (("z", z), ("w", w), ("b", b)):
        _check_dtype(name, x)
    d = channels // 3
    pre = torch.empty(batch, d, seqlen, device=z.device, dtype=torch.float32)
    x2 = torch.empty(batch, d, seqlen, device=z.device, dtype=z.dtype)
    b = b.contiguous()
    _short_conv_gate_kernel[_grid(batch, seqlen, d, _CONV_BLOCK_L, _CONV_BLOCK_D)](
        z, w, b, pre, x2, seqlen, d, *z.stride(), *w.stride(), *pre.stride(),
        K=w.shape[1], BLOCK_L=_CONV_BLOCK_L, BLOCK_D=_CONV_BLOCK_D,
    )  # fmt: skip
    return pre, x2


def gate_out_fwd(y: torch.Tensor, x2: torch.Tensor, res: torch.Tensor | None) -> torch.Tensor:
    """Launch the gate-and-transpose kernel; shapes as :func:`reference.gate_out`.

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: mismatched shapes or unsupported dtypes.
    """
    _check_backend(y)
    if y.ndim != 3 or x2.shape != y.shape or (res is not None and res.shape != y.shape):
        shapes = [tuple(t.shape) for t in (y, x2, res) if t is not None]
        raise ValueError(f"y, x2 and res must share one (B, d, L) shape, got {shapes}")
    for name, x in (("y", y), ("x2", x2), ("res", res)):
        if x is not None:
            _check_dtype(name, x)
    batch, d, seqlen = y.shape
    out = torch.empty(batch, seqlen, d, device=y.device, dtype=x2.dtype)
    res_arg, res_strides = (y, (0, 0, 0)) if res is None else (res, res.stride())
    _gate_out_kernel[_grid(batch, seqlen, d)](
        y, x2, res_arg, out, seqlen, d, *y.stride(), *x2.stride(), *res_strides, *out.stride(),
        HAS_RES=res is not None, BLOCK_L=_BLOCK_L, BLOCK_D=_BLOCK_D,
    )  # fmt: skip
    return out


def gate_out_bwd(
    dout: torch.Tensor, y: torch.Tensor, x2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (dy, dx2), both (B, d, L) in y's and x2's dtypes, from dout (B, L, d)."""
    batch, d, seqlen = y.shape
    dy = torch.empty(batch, d, seqlen, device=y.device, dtype=y.dtype)
    dx2 = torch.empty(batch, d, seqlen, device=y.device, dtype=x2.dtype)
    _gate_out_bwd_kernel[_grid(batch, seqlen, d)](
        dout, y, x2, dy, dx2, seqlen, d, *dout.stride(), *y.stride(), *x2.stride(), *dy.stride(),
        BLOCK_L=_BLOCK_L, BLOCK_D=_BLOCK_D,
    )  # fmt: skip
    return dy, dx2


class ShortConvGate(torch.autograd.Function):
    """Autograd wrapper: Triton forward; plain-PyTorch backward through the recomputed twin."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, w: torch.Tensor, b: torch.Tensor):  # noqa: D102
        ctx.save_for_backward(z, w, b)
        return short_conv_gate_fwd(z, w, b)

    @staticmethod
    def backward(ctx, dpre: torch.Tensor, dx2: torch.Tensor):  # noqa: D102
        z, w, b = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) for t, need in zip(
            (z, w, b), ctx.needs_input_grad, strict=True)]  # fmt: skip
        wanted = [t for t in inputs if t.requires_grad]
        if not wanted:
            return None, None, None
        with torch.enable_grad():
            pre, x2 = reference.short_conv_gate(*inputs)
        grads = iter(torch.autograd.grad((pre, x2), wanted, (dpre, dx2), allow_unused=True))
        return tuple(next(grads) if t.requires_grad else None for t in inputs)


class GateOut(torch.autograd.Function):
    """Autograd wrapper: Triton forward and backward (dres is dout transposed, no kernel)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x2: torch.Tensor, res: torch.Tensor | None):  # noqa: D102
        ctx.save_for_backward(y, x2)
        ctx.res_dtype = None if res is None else res.dtype
        return gate_out_fwd(y, x2, res)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):  # noqa: D102
        y, x2 = ctx.saved_tensors
        dy = dx2 = dres = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dy, dx2 = gate_out_bwd(dout, y, x2)
        if ctx.needs_input_grad[2]:
            dres = dout.transpose(1, 2).to(ctx.res_dtype)
        return dy, dx2, dres


def short_conv_gate(
    z: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Short conv and gate with the Triton kernel; same contract as the reference twin."""
    return ShortConvGate.apply(z, w, b)


def gate_out(y: torch.Tensor, x2: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
    """Output gate, residual and transpose with the Triton kernel; same contract as the twin."""
    return GateOut.apply(y, x2, res)


_BLOCK_T = 64


def transpose_fwd(x: torch.Tensor) -> torch.Tensor:
    """Launch the tiled transpose: x (B, A, C), any strides -> (B, C, A) contiguous."""
    _check_backend(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (B, A, C), got {tuple(x.shape)}")
    batch, rows, cols = x.shape
    y = torch.empty(batch, cols, rows, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(rows, _BLOCK_T), triton.cdiv(cols, _BLOCK_T), batch)
    _transpose_kernel[grid](x, y, rows, cols, *x.stride(), *y.stride(),
                            BLOCK_A=_BLOCK_T, BLOCK_C=_BLOCK_T)  # fmt: skip
    return y


class Transpose(torch.autograd.Function):
    """Autograd wrapper: the backward is the same kernel on the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return transpose_fwd(x)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # noqa: D102
        return transpose_fwd(dy)


def transpose(x: torch.Tensor) -> torch.Tensor:
    """(B, A, C) -> (B, C, A) contiguous with the Triton kernel; same contract as the twin."""
    return Transpose.apply(x)
