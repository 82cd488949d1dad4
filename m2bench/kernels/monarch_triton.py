"""Triton order-2 Monarch multiply ``y = P2 · BD2 · P1 · BD1 · x``, forward and backward.

x (M, b*p), w1 (b, r, p), w2 (b, s, r) -> y (M, s*b), laid out as ``MonarchLinear.forward``
lays out its output before truncation (twin: ``m2bench.kernels.reference.monarch_matmul``).

Both stages run one kernel, a block-diagonal product whose loads and stores take a (row, block,
column) stride triple, so the stride permutations are index arithmetic, never copies:

- stage 1 (``BD1``, then ``P1``): reads x in b contiguous chunks of p and stores output j of block
  i at column ``j*b + i`` of h (M, r*b), which is the (r, b) order that ``P1`` produces;
- stage 2 (``BD2``, then ``P2``): reads h in b contiguous chunks of r and stores output u of block
  c at column ``u*b + c`` of y, which is ``P2``'s (s, b) order.

Backward: dx runs the transposed chain with the same kernel: ``P2^T`` becomes a strided load of dy
(block stride 1, column stride b), ``BD2^T`` uses w2 transposed through its strides (no copy),
the result dh is stored contiguously in h's layout, then ``P1^T`` is again a strided load feeding
``BD1^T``. dw1 and dw2 are one ``torch.bmm`` per factor over permuted views of dh / dy and the
saved h and x (as the block-diagonal kernel does its dw; a Triton dw kernel is future work).

Accumulation is float32; fp32 inputs use "ieee" dot precision (no TF32, as the twin computes),
half inputs "tf32". Runs on CUDA, and on the CPU under ``TRITON_INTERPRET=1`` (the CI parity
tests). GPU speed has not been measured yet: the permuted stores (stage 1/2) and loads (backward)
have stride b in the column index, which is uncoalesced; whether that costs more than the copies
it saves is for ``m2bench bench-kernels`` on a GPU to say.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the launcher raises a clear error instead
    triton = None

#: input dtypes the kernel accepts (tl.dot has no float64 path on every GPU)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


if triton is not None:

    @triton.jit
    def _monarch_stage_kernel(
        x_ptr, w_ptr, y_ptr, M, IN_BLOCK, OUT_BLOCK,
        stride_xm, stride_xb, stride_xk,
        stride_wb, stride_wn, stride_wk,
        stride_ym, stride_yb, stride_yn,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        # y[m, blk, n] = sum_k x[m, blk, k] * w[blk, n, k], every operand addressed by strides
        pid_m, pid_n, blk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm[:, None] < M
        n_ok = rn[None, :] < OUT_BLOCK
        # int64 row offsets: M * row stride can pass 2**31 elements at long sequences
        x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm + blk * stride_xb
        w_cols = w_ptr + blk * stride_wb + rn[None, :] * stride_wn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, IN_BLOCK, BLOCK_K):
            k = k0 + rk
            a = tl.load(x_rows + k[None, :] * stride_xk, mask=m_ok & (k[None, :] < IN_BLOCK),
                        other=0.0)  # fmt: skip
            wt = tl.load(w_cols + k[:, None] * stride_wk, mask=n_ok & (k[:, None] < IN_BLOCK),
                         other=0.0)  # fmt: skip
            acc += tl.dot(a, wt, input_precision=PRECISION)
        y = y_ptr + rm.to(tl.int64)[:, None] * stride_ym + blk * stride_yb + rn[None, :] * stride_yn
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok & n_ok)


def _tile(n: int, cap: int) -> int:
    # tl.dot needs every tile side >= 16; small sides stay small (fewer masked lanes)
    return min(cap, max(16, triton.next_power_of_2(n)))


def _stage(
    x: torch.Tensor,
    w: torch.Tensor,
    y: torch.Tensor,
    x_layout: tuple[int, int],
    y_layout: tuple[int, int],
) -> None:
    """``y[m, blk, n] = sum_k x[m, blk, k] * w[blk, n, k]`` written into ``y``.

    Args:
        x: (M, ...) input; row m, block blk, column k sits at ``m*x.stride(0) + blk*bs + k*cs``
            with ``(bs, cs) = x_layout``.
        w: (nblocks, out_block, in_block), any strides.
        y: (M, ...) output, addressed like x through ``y_layout``.
        x_layout: (block stride, column stride) inside a row of x.
        y_layout: (block stride, column stride) inside a row of y.
    """
    m = x.shape[0]
    nblocks, out_block, in_block = w.shape
    if m == 0:
        return
    bm, bn, bk = _tile(m, 64), _tile(out_block, 64), _tile(in_block, 32)
    grid = (triton.cdiv(m, bm), triton.cdiv(out_block, bn), nblocks)
    # fp32 in, fp32 math (no TF32), as the twin computes it; half inputs use the tensor cores
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    _monarch_stage_kernel[grid](
        x, w, y, m, in_block, out_block,
        x.stride(0), *x_layout, *w.stride(), y.stride(0), *y_layout,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=precision,
    )  # fmt: skip


def _check(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError("Triton is not installed; use kernel='torch'")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton kernels need CUDA (or the CPU with TRITON_INTERPRET=1); use kernel='torch'"
        )
    if w1.ndim != 3 or w2.ndim != 3:
        raise ValueError(
            f"w1 must be (b, r, p) and w2 (b, s, r), got {tuple(w1.shape)} and {tuple(w2.shape)}"
        )
    nblocks, r, p = w1.shape
    if w2.shape[0] != nblocks or w2.shape[2] != r:
        raise ValueError(
            f"w2 must be ({nblocks}, s, {r}) to follow w1 {tuple(w1.shape)}, got {tuple(w2.shape)}"
        )
    if x.ndim != 2 or x.shape[1] != nblocks * p:
        raise ValueError(
            f"x must be (M, {nblocks * p}) for w1 {tuple(w1.shape)}, got {tuple(x.shape)}"
        )
    if not x.dtype == w1.dtype == w2.dtype:
        raise ValueError(f"x, w1 and w2 dtypes differ: {x.dtype}, {w1.dtype}, {w2.dtype}")
    if x.dtype not in DTYPES:
        raise ValueError(f"dtype {x.dtype} is not supported; use one of {DTYPES}")
    if not x.device == w1.device == w2.device:
        raise ValueError(f"x, w1 and w2 devices differ: {x.device}, {w1.device}, {w2.device}")


def monarch_matmul_fwd(
    x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch both stages.

    Args:
        x: (M, b*p).
        w1: (b, r, p), the first block-diagonal factor.
        w2: (b, s, r), the second.

    Returns:
        y (M, s*b) in ``P2``'s order, and h (M, r*b) = ``P1 · BD1 · x``, which backward needs.

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: shapes that do not chain, or mismatched or unsupported dtypes.
    """
    _check(x, w1, w2)
    nblocks, r, p = w1.shape
    s = w2.shape[1]
    x = x.contiguous()
    h = torch.empty(x.shape[0], r * nblocks, device=x.device, dtype=x.dtype)
    y = torch.empty(x.shape[0], s * nblocks, device=x.device, dtype=x.dtype)
    _stage(x, w1, h, x_layout=(p, 1), y_layout=(1, nblocks))  # BD1, P1 in the store
    _stage(h, w2, y, x_layout=(r, 1), y_layout=(1, nblocks))  # BD2, P2 in the store
    return y, h


class MonarchMatmul(torch.autograd.Function):
    """Autograd wrapper: Triton forward and dx (transposed chain), ``torch.bmm`` dw1 and dw2."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y, h = monarch_matmul_fwd(x, w1, w2)
        ctx.save_for_backward(x, w1, w2, h)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # noqa: D102
        x, w1, w2, h = ctx.saved_tensors
        nblocks, r, p = w1.shape
        s = w2.shape[1]
        m = x.shape[0]
        need_dx, need_dw1, need_dw2 = ctx.needs_input_grad
        dy = dy.to(x.dtype).contiguous()
        dx = dw1 = dw2 = dh = None
        if need_dx or need_dw1:
            # P2^T as a strided load of dy, BD2^T through w2's transposed strides; dh in h's layout
            dh = torch.empty_like(h)
            _stage(dy, w2.transpose(1, 2), dh, x_layout=(1, nblocks), y_layout=(r, 1))
        if need_dx:
            # P1^T as a strided load of dh, then BD1^T
            dx = torch.empty(m, nblocks * p, device=x.device, dtype=x.dtype)
            _stage(dh, w1.transpose(1, 2), dx, x_layout=(1, nblocks), y_layout=(p, 1))
        if need_dw1:
            dh1 = dh.reshape(m, r, nblocks).permute(2, 1, 0)  # (b, r, M): dL/d(BD1 output)
            xb = x.reshape(m, nblocks, p).transpose(0, 1)  # (b, M, p)
            dw1 = torch.bmm(dh1, xb).to(w1.dtype)
        if need_dw2:
            dz = dy.reshape(m, s, nblocks).permute(2, 1, 0)  # (b, s, M): P2^T dy per block
            hb = h.reshape(m, nblocks, r).transpose(0, 1)  # (b, M, r)
            dw2 = torch.bmm(dz, hb).to(w2.dtype)
        return dx, dw1, dw2


def monarch_matmul(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Order-2 Monarch product with the Triton kernels; same contract as the reference twin."""
    return MonarchMatmul.apply(x, w1, w2)
