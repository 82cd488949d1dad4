"""Triton block-diagonal matmul (M2's dimension mixer), forward and backward.

One program computes a (BLOCK_M, BLOCK_N) tile of one diagonal block: ``x_b @ w[b].T`` with
float32 accumulation, so the product reads x and w once per tile and writes y once, instead of
the einsum path's reshapes and batched GEMM over a strided view. Backward: dx is the same kernel
with the transposed weight; dw = dy_b.T @ x_b per block is left to ``torch.bmm`` (one batched
GEMM over M; a Triton dw kernel is future work). Twin: ``m2bench.kernels.reference``.

Runs on CUDA, and on the CPU under ``TRITON_INTERPRET=1`` (the CI parity tests).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the launcher raises a clear error instead
    triton = None


if triton is not None:

    @triton.jit
    def _blockdiag_kernel(
        x_ptr, w_ptr, y_ptr, M, IN_BLOCK, OUT_BLOCK,
        stride_xm, stride_wb, stride_wo, stride_ym,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        pid_m, pid_n, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        x_base = x_ptr + b * IN_BLOCK
        w_base = w_ptr + b * stride_wb
        for k0 in range(0, IN_BLOCK, BLOCK_K):
            k = k0 + rk
            a = tl.load(x_base + rm[:, None] * stride_xm + k[None, :],
                        mask=(rm[:, None] < M) & (k[None, :] < IN_BLOCK), other=0.0)  # fmt: skip
            w_mask = (rn[None, :] < OUT_BLOCK) & (k[:, None] < IN_BLOCK)
            wt = tl.load(w_base + rn[None, :] * stride_wo + k[:, None], mask=w_mask, other=0.0)
            acc += tl.dot(a, wt, input_precision=PRECISION)
        y = y_ptr + b * OUT_BLOCK + rm[:, None] * stride_ym + rn[None, :]
        tl.store(y, acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < OUT_BLOCK))  # fmt: skip


def blockdiag_matmul_fwd(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Launch the kernel: x (M, nblocks*in_block) contiguous, w (nblocks, out_block, in_block)."""
    if triton is None:
        raise RuntimeError("Triton is not installed; use kernel='torch'")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton kernels need CUDA (or the CPU with TRITON_INTERPRET=1); use kernel='torch'"
        )
    nblocks, out_block, in_block = w.shape
    if x.ndim != 2 or x.shape[1] != nblocks * in_block:
        raise ValueError(f"x must be (M, {nblocks * in_block}), got {tuple(x.shape)}")
    if x.dtype != w.dtype:
        raise ValueError(f"x and w dtypes differ: {x.dtype} vs {w.dtype}")
    x, w = x.contiguous(), w.contiguous()
    m = x.shape[0]
    y = torch.empty(m, nblocks * out_block, device=x.device, dtype=x.dtype)
    bm, bn, bk = 64, 64, 32
    grid = (triton.cdiv(m, bm), triton.cdiv(out_block, bn), nblocks)
    strides = (x.stride(0), w.stride(0), w.stride(1), y.stride(0))
    # fp32 in, fp32 math (no TF32), as the twin computes it; half inputs use the tensor cores
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    _blockdiag_kernel[grid](x, w, y, m, in_block, out_block, *strides,
                            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=precision)  # fmt: skip
    return y


class BlockdiagMatmul(torch.autograd.Function):
    """Autograd wrapper: Triton forward and dx, ``torch.bmm`` dw."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x, w)
        return blockdiag_matmul_fwd(x, w)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # noqa: D102
        x, w = ctx.saved_tensors
        nblocks, out_block, in_block = w.shape
        dy = dy.contiguous()
        dx = (
            blockdiag_matmul_fwd(dy, w.transpose(1, 2).contiguous())
            if ctx.needs_input_grad[0]
            else None
        )
        dw = None
        if ctx.needs_input_grad[1]:
            dyb = dy.reshape(-1, nblocks, out_block).transpose(0, 1)  # (b, M, out)
            xb = x.reshape(-1, nblocks, in_block).transpose(0, 1)  # (b, M, in)
            dw = torch.bmm(dyb.transpose(1, 2), xb).to(w.dtype)
        return dx, dw


def blockdiag_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Block-diagonal product with the Triton kernel; same contract as the reference twin."""
    return BlockdiagMatmul.apply(x, w)
