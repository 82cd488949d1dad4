"""Triton block-diagonal matmul (M2's dimension mixer), forward and backward.

One program computes a (BLOCK_M, BLOCK_N) tile of one diagonal block: ``x_b @ w[b].T`` with
float32 accumulation (plus an optional bias in the epilogue), so the product reads x and w once
per tile and writes y once, instead of the einsum path's reshapes and batched GEMM over a strided
view. Twin: ``m2bench.kernels.reference``.

Speed (H100/H200 class, bf16). The op is close to memory bound: for 768 -> 3072 in 4 blocks the
bytes floor is about as long as the tensor-core floor, so the kernel needs large tiles, a
pipelined K loop and L2 reuse of the x tile:

- tiles 128 x 128/256 (or 64 x 256 / 256 x 128) with BLOCK_K 64 or 128, num_warps 4/8,
  num_stages 3/4, picked by ``triton.autotune`` (:data:`CUDA_CONFIGS`) per (M bucket,
  IN_BLOCK, OUT_BLOCK) and dtype. The M bucket is M rounded up to a power of two, so a batch of
  a new length does not re-tune (the tuning takes a few seconds per key);
- a 1-D grid ordered (M tile, block, N tile) with the N tile fastest: the programs that read the
  same x tile run together and hit it in L2, so x streams from HBM about once;
- ``EVEN_K`` (a heuristic) drops the K mask when BLOCK_K divides the in-block;
- int64 row offsets, so M x width may pass 2**31 elements.

Under ``TRITON_INTERPRET=1`` (CPU parity tests) a single small config (:data:`INTERPRET_CONFIG`)
is used instead: autotuning under the interpreter would only be slow. The interpreter's bf16
``tl.dot`` returns garbage (triton 3.8), so there bf16 tiles are upcast to float32 before the
dot (``UPCAST``; exact products, so the CPU tests check indexing, masking and epilogue, not the
tensor-core rounding); on CUDA the flag is always off.

Precision: float32 inputs use ``input_precision="ieee"`` (no TF32, as the twin computes);
fp16/bf16 use the tensor cores.

Backward: dx is the same kernel with the transposed weight; dw = dy_b.T @ x_b per block is one
``torch.bmm`` over strided views (a batched cuBLAS GEMM over M, no copies); dbias is
``dy.sum(0)`` in float32.

Below :data:`AUTOTUNE_MIN_M` rows CUDA launches one fixed config (:data:`SMALL_CONFIG`): small
products (tests, short batches) would otherwise compile every candidate.

Measured on an H200 (65,536 tokens, bf16, autotuned): 768 -> 3072 in 0.281 ms, 43% of the
measured copy bandwidth (the issue's target is 70%); 3072 -> 768 in 0.223 ms (55%); einsum
0.654 ms (``results/README.md``).

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

#: input dtypes the kernel accepts (x and w must share one; a bias may be any of them)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_backend(x: torch.Tensor) -> None:
    """Raise a one-line RuntimeError unless the Triton kernels can run on ``x``'s device."""
    if triton is None:
        raise RuntimeError("Triton is not installed; use kernel='torch'")
    if x.device.type != "cuda" and not _interpreting():
        raise RuntimeError(
            "Triton kernels need CUDA (or the CPU with TRITON_INTERPRET=1); use kernel='torch'"
        )


#: below this many rows the CUDA launch uses one fixed config instead of autotuning: small
#: products (tests, short batches) would spend seconds compiling every candidate for little gain
AUTOTUNE_MIN_M = 4096


def m_bucket(m: int) -> int:
    """The autotune key for M: the next power of two (at least 16)."""
    return max(16, 1 << max(m - 1, 0).bit_length())


if triton is not None:

    def _cfg(bm: int, bn: int, bk: int, warps: int, stages: int) -> triton.Config:
        return triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages
        )

    #: autotune candidates on CUDA (H100/H200: 228 KB shared memory; configs that do not fit,
    #: e.g. the big ones in float32, fail to compile and the autotuner skips them)
    CUDA_CONFIGS = [
        _cfg(128, 128, 64, 4, 3),
        _cfg(128, 128, 64, 8, 4),
        _cfg(128, 256, 64, 8, 3),
        _cfg(64, 256, 64, 4, 4),
        _cfg(256, 128, 64, 8, 3),
        _cfg(128, 64, 64, 4, 4),
        _cfg(128, 128, 128, 8, 3),
        _cfg(64, 128, 64, 4, 4),
    ]
    #: the one config used under TRITON_INTERPRET=1
    INTERPRET_CONFIG = _cfg(32, 32, 16, 4, 1)
    #: the one config used on CUDA below AUTOTUNE_MIN_M rows
    SMALL_CONFIG = _cfg(64, 64, 32, 4, 3)
    _KEY = ["M_BUCKET", "IN_BLOCK", "OUT_BLOCK"]
    _HEURISTICS = {"EVEN_K": lambda args: args["IN_BLOCK"] % args["BLOCK_K"] == 0}

    @triton.jit
    def _blockdiag_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr, M, M_BUCKET, NBLOCKS, IN_BLOCK, OUT_BLOCK,
        stride_xm, stride_wb, stride_wo, stride_ym,
        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, EVEN_K: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        # 1-D grid, N tile fastest, then the block, then the M tile: programs sharing x_b's tile
        # run back to back (L2 reuse); M_BUCKET is only the autotune key
        pid = tl.program_id(0)
        n_tiles = tl.cdiv(OUT_BLOCK, BLOCK_N)
        pid_n = pid % n_tiles
        rest = pid // n_tiles
        b = rest % NBLOCKS
        pid_m = rest // NBLOCKS
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm < M
        n_ok = rn < OUT_BLOCK
        x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm + b * IN_BLOCK
        w_cols = w_ptr + b * stride_wb + rn[None, :] * stride_wo
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, IN_BLOCK, BLOCK_K):
            k = k0 + rk
            if EVEN_K:
                a = tl.load(x_rows + k[None, :], mask=m_ok[:, None], other=0.0)
                wt = tl.load(w_cols + k[:, None], mask=n_ok[None, :], other=0.0)
            else:
                k_ok = k < IN_BLOCK
                a = tl.load(x_rows + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                wt = tl.load(w_cols + k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
            if UPCAST:  # the interpreter's bf16 dot is wrong (see the launcher)
                a, wt = a.to(tl.float32), wt.to(tl.float32)
            acc += tl.dot(a, wt, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + b * OUT_BLOCK + rn, mask=n_ok, other=0.0).to(tl.float32)[
                None, :
            ]
        y = y_ptr + rm.to(tl.int64)[:, None] * stride_ym + b * OUT_BLOCK + rn[None, :]
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    _blockdiag_heur = triton.heuristics(_HEURISTICS)(_blockdiag_kernel)
    _blockdiag_cuda = triton.autotune(CUDA_CONFIGS, key=_KEY)(_blockdiag_heur)
    _blockdiag_interp = triton.autotune([INTERPRET_CONFIG], key=_KEY)(_blockdiag_heur)
    _blockdiag_small = triton.autotune([SMALL_CONFIG], key=_KEY)(_blockdiag_heur)


def pick_kernel(interp, small, tuned, m: int):
    """The interpreter's kernel, the fixed small-M CUDA kernel, or the autotuned one."""
    if _interpreting():
        return interp
    return tuned if m >= AUTOTUNE_MIN_M else small


def blockdiag_matmul_fwd(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Launch the kernel: x (M, nblocks*in_block), w (nblocks, out_block, in_block), optional
    bias (nblocks*out_block,) -> y (M, nblocks*out_block) in x's dtype.

    Raises:
        RuntimeError: Triton is missing, or no CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: mismatched shapes or unsupported dtypes.
    """
    check_backend(x)
    if w.ndim != 3:
        raise ValueError(f"w must be (nblocks, out_block, in_block), got {tuple(w.shape)}")
    nblocks, out_block, in_block = w.shape
    if x.ndim != 2 or x.shape[1] != nblocks * in_block:
        raise ValueError(f"x must be (M, {nblocks * in_block}), got {tuple(x.shape)}")
    if x.dtype != w.dtype:
        raise ValueError(f"x and w dtypes differ: {x.dtype} vs {w.dtype}")
    if x.dtype not in DTYPES:
        raise ValueError(f"x dtype {x.dtype} is not supported; use one of {DTYPES}")
    if bias is not None and (bias.shape != (nblocks * out_block,) or bias.dtype not in DTYPES):
        raise ValueError(
            f"bias must be ({nblocks * out_block},) in one of {DTYPES}, "
            f"got {tuple(bias.shape)} {bias.dtype}"
        )
    x, w = x.contiguous(), w.contiguous()
    m = x.shape[0]
    y = torch.empty(m, nblocks * out_block, device=x.device, dtype=x.dtype)
    if m == 0:
        return y
    bias_arg = y if bias is None else bias.contiguous()

    def grid(meta):
        tiles_m = triton.cdiv(m, meta["BLOCK_M"])
        return (tiles_m * nblocks * triton.cdiv(out_block, meta["BLOCK_N"]),)

    # fp32 in, fp32 math (no TF32), as the twin computes it; half inputs use the tensor cores
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    # Triton's CPU interpreter computes bf16 tl.dot wrongly (garbage, triton 3.8): there the
    # tiles are upcast to float32 first (same products, exact in float32); never on CUDA
    upcast = _interpreting() and x.dtype == torch.bfloat16
    precision = "ieee" if upcast else precision
    kernel = pick_kernel(_blockdiag_interp, _blockdiag_small, _blockdiag_cuda, m)
    kernel[grid](
        x, w, bias_arg, y, m, m_bucket(m), nblocks, in_block, out_block,
        x.stride(0), w.stride(0), w.stride(1), y.stride(0),
        HAS_BIAS=bias is not None, PRECISION=precision, UPCAST=upcast,
    )  # fmt: skip
    return y


def blockdiag_matmul_bwd(
    dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_dx: bool, need_dw: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dx, dw) of ``y = blockdiag(x, w)`` from dy (M, nblocks*out_block); None where not needed.

    dx: the Triton kernel with the transposed weight; dw: one ``torch.bmm`` over strided views.
    """
    nblocks, out_block, in_block = w.shape
    dy = dy.contiguous()
    dx = blockdiag_matmul_fwd(dy, w.transpose(1, 2).contiguous()) if need_dx else None
    dw = None
    if need_dw:
        dyb = dy.reshape(-1, nblocks, out_block).transpose(0, 1)  # (b, M, out)
        xb = x.reshape(-1, nblocks, in_block).transpose(0, 1)  # (b, M, in)
        dw = torch.bmm(dyb.transpose(1, 2), xb).to(w.dtype)
    return dx, dw


class BlockdiagMatmul(torch.autograd.Function):
    """Autograd wrapper: Triton forward and dx, ``torch.bmm`` dw, float32 ``sum`` dbias."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None):  # noqa: D102
        ctx.save_for_backward(x, w)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return blockdiag_matmul_fwd(x, w, bias)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # noqa: D102
        x, w = ctx.saved_tensors
        with torch.autocast(device_type=dy.device.type, enabled=False):
            dy = dy.to(x.dtype)
            dx, dw = blockdiag_matmul_bwd(dy, x, w, *ctx.needs_input_grad[:2])
            dbias = None
            if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
                dbias = dy.float().sum(0).to(ctx.bias_dtype)
        return dx, dw, dbias


def blockdiag_matmul(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Block-diagonal product (plus bias) with the Triton kernel; same contract as the twin."""
    return BlockdiagMatmul.apply(x, w, bias)
