"""Triton kernels for the GLU MLP of an M2-BERT layer (:class:`~m2bench.layers.mixer.BlockdiagGLU`).

The torch path runs ``LayerNorm(fc_out(GELU(g) * v) + h)`` as a block-diagonal GEMM that writes
``[g, v]`` (M, 2I), a GELU pass, a product pass, a second GEMM, a bias add, a residual add and a
LayerNorm, each a full read and write. Two kernels fuse it down to the two GEMMs:

- :func:`blockdiag_glu` (h (M, d), w_in (nblocks, 2I/nblocks, d/nblocks) -> a (M, I)):
  ``GELU(g) * v`` where ``[g, v] = blockdiag(h, w_in)`` split at I. Output feature j < I (the
  gate) is row ``j % out_block`` of block ``j // out_block``; the value of j is feature I + j,
  the same row of block ``nblocks/2 + j // out_block``. One program computes a (BLOCK_M,
  BLOCK_N) tile of a: two float32 accumulators (gate, value) over the same K loop, then the exact
  erf GELU and the product in the epilogue, one store in h's dtype. It reads h and w_in once per
  tile and writes (M, I) instead of ``[g, v]`` (M, 2I): for M2-BERT-80M (d 768, I 3072) and 64k
  bf16 tokens, 0.4 GB less than the GEMM alone, and the GELU and product passes (about 2 GB of
  traffic) are gone. Tiles, grid order, autotuning and the interpreter's bf16 upcast as in
  :mod:`m2bench.kernels.blockdiag_triton` (:data:`CUDA_CONFIGS` here: two accumulators, so at
  most 128 x 128 per program); one small config under ``TRITON_INTERPRET=1``.
  Backward (Triton except dw; no twin recomputation): recomputes ``[g, v]`` with the Triton
  block-diagonal kernel (so the forward saves only h), one Triton elementwise kernel for
  ``d[g, v]`` (the exact GELU derivative and the product rule in float32, stored in h's dtype),
  then dh with the Triton block-diagonal kernel (transposed weight) and dw with ``torch.bmm``
  (:func:`~m2bench.kernels.blockdiag_triton.blockdiag_matmul_bwd`).
- :func:`add_layer_norm` (x (M, d), residual (M, d), weight (d,), bias (d,), eps -> (M, d)):
  ``LayerNorm(x + residual)`` over the last dim, one kernel: each program loads a few whole
  rows, float32 statistics (two-pass variance on registers), output in x's dtype.
  Backward: plain PyTorch, recomputing the twin in float32 and differentiating it.

Needs ``nblocks`` even (the gate blocks are the first half). Runs on CUDA, and on the CPU under
``TRITON_INTERPRET=1`` (the CI parity tests). Twins: ``m2bench.kernels.reference``. Measured on
an H200 (65,536 tokens, bf16): the fused GLU 0.716 ms (unfused PyTorch: 2.389 ms), add +
LayerNorm 0.078 ms (94% of copy bandwidth; PyTorch: 0.216 ms); ``results/README.md``.
"""

from __future__ import annotations

import torch

from m2bench.kernels.blockdiag_triton import (
    DTYPES,
    _interpreting,
    blockdiag_matmul_bwd,
    blockdiag_matmul_fwd,
    check_backend,
    m_bucket,
    pick_kernel,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the launcher raises a clear error instead
    triton = None


if triton is not None:
    from m2bench.kernels.blockdiag_triton import SMALL_CONFIG, _cfg

    #: autotune candidates on CUDA; two (BLOCK_M, BLOCK_N) float32 accumulators per program
    CUDA_CONFIGS = [
        _cfg(128, 128, 64, 8, 3),
        _cfg(128, 128, 32, 8, 4),
        _cfg(128, 64, 64, 4, 3),
        _cfg(64, 128, 64, 4, 3),
        _cfg(128, 64, 64, 8, 4),
        _cfg(64, 256, 64, 8, 3),
        _cfg(64, 64, 64, 4, 4),
    ]
    #: the one config used under TRITON_INTERPRET=1
    INTERPRET_CONFIG = _cfg(32, 32, 16, 4, 1)
    _KEY = ["M_BUCKET", "IN_BLOCK", "OUT_BLOCK"]
    _BWD_BLOCK_M, _BWD_BLOCK_N = 32, 128  # the elementwise GLU backward
    _HEURISTICS = {"EVEN_K": lambda args: args["IN_BLOCK"] % args["BLOCK_K"] == 0}

    @triton.jit
    def _glu_kernel(
        h_ptr, w_ptr, a_ptr, M, M_BUCKET, HALF, IN_BLOCK, OUT_BLOCK,
        stride_hm, stride_wb, stride_wo, stride_am,
        PRECISION: tl.constexpr, EVEN_K: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        # grid: N tile fastest, then the gate block bg < HALF, then the M tile (L2 reuse of h);
        # the value block is bg + HALF; M_BUCKET is only the autotune key
        pid = tl.program_id(0)
        n_tiles = tl.cdiv(OUT_BLOCK, BLOCK_N)
        pid_n = pid % n_tiles
        rest = pid // n_tiles
        bg = rest % HALF
        pid_m = rest // HALF
        bv = bg + HALF
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm < M
        n_ok = rn < OUT_BLOCK
        h_rows = h_ptr + rm.to(tl.int64)[:, None] * stride_hm
        hg_rows = h_rows + bg * IN_BLOCK
        hv_rows = h_rows + bv * IN_BLOCK
        wg_cols = w_ptr + bg * stride_wb + rn[None, :] * stride_wo
        wv_cols = w_ptr + bv * stride_wb + rn[None, :] * stride_wo
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_v = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, IN_BLOCK, BLOCK_K):
            k = k0 + rk
            if EVEN_K:
                hm = m_ok[:, None]
                wm = n_ok[None, :]
            else:
                k_ok = k < IN_BLOCK
                hm = m_ok[:, None] & k_ok[None, :]
                wm = n_ok[None, :] & k_ok[:, None]
            xg = tl.load(hg_rows + k[None, :], mask=hm, other=0.0)
            wg = tl.load(wg_cols + k[:, None], mask=wm, other=0.0)
            if UPCAST:  # the interpreter's bf16 dot is wrong (see the launcher)
                xg, wg = xg.to(tl.float32), wg.to(tl.float32)
            acc_g += tl.dot(xg, wg, input_precision=PRECISION)
            xv = tl.load(hv_rows + k[None, :], mask=hm, other=0.0)
            wv = tl.load(wv_cols + k[:, None], mask=wm, other=0.0)
            if UPCAST:
                xv, wv = xv.to(tl.float32), wv.to(tl.float32)
            acc_v += tl.dot(xv, wv, input_precision=PRECISION)
        # exact GELU, as torch's F.gelu default: g * Phi(g), Phi(g) = (1 + erf(g / sqrt 2)) / 2
        gelu = 0.5 * acc_g * (1.0 + tl.math.erf(acc_g * 0.7071067811865476))
        out = a_ptr + rm.to(tl.int64)[:, None] * stride_am + bg * OUT_BLOCK + rn[None, :]
        tl.store(out, (gelu * acc_v).to(a_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    _glu_heur = triton.heuristics(_HEURISTICS)(_glu_kernel)
    _glu_cuda = triton.autotune(CUDA_CONFIGS, key=_KEY)(_glu_heur)
    _glu_interp = triton.autotune([INTERPRET_CONFIG], key=_KEY)(_glu_heur)
    _glu_small = triton.autotune([SMALL_CONFIG], key=_KEY)(_glu_heur)

    @triton.jit
    def _glu_bwd_kernel(
        gv_ptr, da_ptr, dgv_ptr, M, INNER, stride_gv, stride_da, stride_dgv,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        # d[g, v] from [g, v] (M, 2I) and da (M, I): dg = da v GELU'(g), dv = da GELU(g)
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (rm < M)[:, None] & (rn < INNER)[None, :]
        rows = rm.to(tl.int64)[:, None]
        g_at = gv_ptr + rows * stride_gv + rn[None, :]
        g = tl.load(g_at, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(g_at + INNER, mask=mask, other=0.0).to(tl.float32)
        da = tl.load(da_ptr + rows * stride_da + rn[None, :], mask=mask, other=0.0).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.math.erf(g * 0.7071067811865476))
        pdf = tl.exp(-0.5 * g * g) * 0.3989422804014327  # 1 / sqrt(2 pi)
        out = dgv_ptr + rows * stride_dgv + rn[None, :]
        ty = dgv_ptr.dtype.element_ty
        tl.store(out, (da * v * (cdf + g * pdf)).to(ty), mask=mask)
        tl.store(out + INNER, (da * g * cdf).to(ty), mask=mask)

    @triton.jit
    def _add_layer_norm_kernel(
        x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, M, D, eps,
        stride_xm, stride_rm, stride_ym,
        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rd = tl.arange(0, BLOCK_D)
        d_ok = rd < D
        mask = (rm < M)[:, None] & d_ok[None, :]
        rows = rm.to(tl.int64)[:, None]
        s = tl.load(x_ptr + rows * stride_xm + rd[None, :], mask=mask, other=0.0).to(tl.float32)
        s += tl.load(r_ptr + rows * stride_rm + rd[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(s, axis=1) / D
        centred = tl.where(d_ok[None, :], s - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
        w = tl.load(w_ptr + rd, mask=d_ok, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + rd, mask=d_ok, other=0.0).to(tl.float32)
        y = centred * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(y_ptr + rows * stride_ym + rd[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _check_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} dtype {t.dtype} is not supported; use one of {DTYPES}")


def _check_glu(h: torch.Tensor, w_in: torch.Tensor) -> None:
    check_backend(h)
    if w_in.ndim != 3 or w_in.shape[0] % 2 != 0:
        raise ValueError(
            "w_in must be (nblocks, 2I/nblocks, d/nblocks) with nblocks even, "
            f"got {tuple(w_in.shape)}"
        )
    nblocks, _, in_block = w_in.shape
    if h.ndim != 2 or h.shape[1] != nblocks * in_block:
        raise ValueError(f"h must be (M, {nblocks * in_block}), got {tuple(h.shape)}")
    _check_dtype("h", h)
    if h.dtype != w_in.dtype:
        raise ValueError(f"h and w_in dtypes differ: {h.dtype} vs {w_in.dtype}")


def blockdiag_glu_fwd(h: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """Launch the fused GLU kernel; shapes as :func:`reference.blockdiag_glu`.

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: mismatched shapes, odd nblocks, or unsupported/mismatched dtypes.
    """
    _check_glu(h, w_in)
    nblocks, out_block, in_block = w_in.shape
    half = nblocks // 2
    h, w_in = h.contiguous(), w_in.contiguous()
    m = h.shape[0]
    a = torch.empty(m, half * out_block, device=h.device, dtype=h.dtype)
    if m == 0 or a.shape[1] == 0:
        return a

    def grid(meta):
        tiles_m = triton.cdiv(m, meta["BLOCK_M"])
        return (tiles_m * half * triton.cdiv(out_block, meta["BLOCK_N"]),)

    precision = "ieee" if h.dtype == torch.float32 else "tf32"
    upcast = _interpreting() and h.dtype == torch.bfloat16  # as in blockdiag_matmul_fwd
    precision = "ieee" if upcast else precision
    kernel = pick_kernel(_glu_interp, _glu_small, _glu_cuda, m)
    kernel[grid](
        h, w_in, a, m, m_bucket(m), half, in_block, out_block,
        h.stride(0), w_in.stride(0), w_in.stride(1), a.stride(0),
        PRECISION=precision, UPCAST=upcast,
    )  # fmt: skip
    return a


def add_layer_norm_fwd(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Launch the add + LayerNorm kernel; shapes as :func:`reference.add_layer_norm`.

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: mismatched shapes or unsupported dtypes.
    """
    check_backend(x)
    if x.ndim != 2 or residual.shape != x.shape:
        raise ValueError(
            f"x and residual must share one (M, d) shape, got {tuple(x.shape)} and "
            f"{tuple(residual.shape)}"
        )
    d = x.shape[1]
    if weight.shape != (d,) or bias.shape != (d,):
        raise ValueError(
            f"weight and bias must be ({d},), got {tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    for name, t in (("x", x), ("residual", residual), ("weight", weight), ("bias", bias)):
        _check_dtype(name, t)
    # rows contiguous in the last dim (a column slice keeps its row stride, no copy)
    x = x if x.stride(-1) == 1 else x.contiguous()
    residual = residual if residual.stride(-1) == 1 else residual.contiguous()
    weight, bias = weight.contiguous(), bias.contiguous()
    m = x.shape[0]
    y = torch.empty(m, d, device=x.device, dtype=x.dtype)
    if m == 0 or d == 0:
        return y
    block_d = triton.next_power_of_2(d)
    block_m = max(1, min(16, 4096 // block_d))  # a few whole rows per program
    num_warps = 4 if block_m * block_d <= 4096 else 8
    _add_layer_norm_kernel[(triton.cdiv(m, block_m),)](
        x, residual, weight, bias, y, m, d, float(eps),
        x.stride(0), residual.stride(0), y.stride(0),
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps,
    )  # fmt: skip
    return y


class BlockdiagGLU(torch.autograd.Function):
    """Autograd wrapper: Triton forward; backward recomputes [g, v] with the Triton
    block-diagonal kernel, a Triton elementwise kernel for d[g, v], Triton dh, bmm dw."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(h, w_in)
        return blockdiag_glu_fwd(h, w_in)

    @staticmethod
    def backward(ctx, da: torch.Tensor):  # noqa: D102
        h, w_in = ctx.saved_tensors
        need_dh, need_dw = ctx.needs_input_grad
        if not (need_dh or need_dw):
            return None, None
        with torch.autocast(device_type=h.device.type, enabled=False):
            gv = blockdiag_matmul_fwd(h, w_in)  # recomputed [g, v] (M, 2I), never stored
            da = da if da.stride(-1) == 1 else da.contiguous()
            dgv = torch.empty_like(gv)
            m, inner = da.shape
            grid = (triton.cdiv(m, _BWD_BLOCK_M), triton.cdiv(inner, _BWD_BLOCK_N))
            _glu_bwd_kernel[grid](
                gv, da, dgv, m, inner, gv.stride(0), da.stride(0), dgv.stride(0),
                BLOCK_M=_BWD_BLOCK_M, BLOCK_N=_BWD_BLOCK_N,
            )  # fmt: skip
            return blockdiag_matmul_bwd(dgv, h, w_in, need_dh, need_dw)


class AddLayerNorm(torch.autograd.Function):
    """Autograd wrapper: Triton forward; plain-PyTorch backward through the float32 twin."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps: float):  # noqa: D102
        ctx.save_for_backward(x, residual, weight, bias)
        ctx.eps = eps
        return add_layer_norm_fwd(x, residual, weight, bias, eps)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # noqa: D102
        saved = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) for t, need in zip(
            saved, ctx.needs_input_grad[:4], strict=True)]  # fmt: skip
        wanted = [t for t in inputs if t.requires_grad]
        if not wanted:
            return None, None, None, None, None
        with torch.enable_grad(), torch.autocast(device_type=dy.device.type, enabled=False):
            x, residual, weight, bias = inputs
            s = x.float() + residual.float()
            y = torch.nn.functional.layer_norm(
                s, (s.shape[-1],), weight.float(), bias.float(), ctx.eps
            )
            grads = iter(torch.autograd.grad(y, wanted, dy.float()))
        return (*(next(grads) if t.requires_grad else None for t in inputs), None)


def blockdiag_glu(h: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """``GELU(g) * v``, ``[g, v] = blockdiag(h, w_in)``, fused; same contract as the twin."""
    return BlockdiagGLU.apply(h, w_in)


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``LayerNorm(x + residual)`` with one Triton kernel; same contract as the twin."""
    return AddLayerNorm.apply(x, residual, weight, bias, eps)
