"""Monarch matrices: block-diagonal factors interleaved with stride permutations.

Paper: Dao et al., "Monarch: Expressive Structured Matrices for Efficient and Accurate Training"
(ICML 2022, https://arxiv.org/abs/2204.00595) and Fu et al., "Monarch Mixer: A Simple
Sub-Quadratic GEMM-Based Architecture" (NeurIPS 2023, https://arxiv.org/abs/2310.12109).

Two layers:

- :class:`BlockdiagLinear`, the single block-diagonal factor that M2-BERT's MLP uses. Weight
  (nblocks, out_block, in_block); the input is cut into ``nblocks`` consecutive chunks, chunk b is
  multiplied by block b and the results are concatenated in block order (no channel shuffle). It
  equals the dense matrix ``block_diag(W_0, ..., W_{nblocks-1})``. Checked against the official
  M2-BERT computation through the oracle fixture (``tests/fixtures/m2_bert_oracle``).
- :class:`MonarchLinear`, the order-2 Monarch matrix ``M = P2 · BD2 · P1 · BD1``.

Sizes that ``nblocks`` does not divide are handled by zero-padding the input and truncating the
output, so both layers accept any ``in_features``/``out_features``.

Deviations: the rectangular Monarch shape convention (below) is this module's own; the papers
define the square case, which it reproduces exactly when ``in = out = nblocks**2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.layers import check_kernel


def _init_blocks(weight: torch.Tensor, fan_in: int) -> None:
    # The same range as nn.Linear's default, with the fan-in of one block.
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)


def _triton_blockdiag(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The Triton kernel, in the autocast dtype when autocast is on (as einsum would be)."""
    from m2bench.kernels.blockdiag_triton import blockdiag_matmul

    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, w = x.to(dtype), w.to(dtype)
    else:
        w = w.to(x.dtype)
    return blockdiag_matmul(x, w)


def _triton_monarch(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The Triton Monarch kernel, in the autocast dtype when autocast is on (as einsum would be)."""
    from m2bench.kernels.monarch_triton import monarch_matmul

    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, w1, w2 = x.to(dtype), w1.to(dtype), w2.to(dtype)
    else:
        w1, w2 = w1.to(x.dtype), w2.to(x.dtype)
    return monarch_matmul(x, w1, w2)


def _stride_permutation(nblocks: int, block: int) -> torch.Tensor:
    """``perm`` such that ``x[perm]`` turns a (nblocks, block) layout into (block, nblocks)."""
    return torch.arange(nblocks * block).view(nblocks, block).t().reshape(-1)


class BlockdiagLinear(nn.Module):
    """Block-diagonal linear map ``y = block_diag(W_0, ..., W_{b-1}) x + bias``.

    Shapes: input (..., in_features) -> output (..., out_features); ``weight`` is
    (nblocks, ceil(out/nblocks), ceil(in/nblocks)), stored as M2-BERT's checkpoints store it.

    Args:
        in_features: input width.
        out_features: output width.
        nblocks: number of diagonal blocks.
        bias: add a learned bias of shape (out_features,).
        kernel: ``"torch"`` or ``"triton"`` (:mod:`m2bench.kernels.blockdiag_triton`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nblocks: int = 4,
        *,
        bias: bool = True,
        kernel: str = "torch",
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.in_block = math.ceil(in_features / nblocks)
        self.out_block = math.ceil(out_features / nblocks)
        self.weight = nn.Parameter(torch.empty(nblocks, self.out_block, self.in_block))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init with the fan-in of one block."""
        _init_blocks(self.weight, self.in_block)
        if self.bias is not None:
            _init_blocks(self.bias, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map to the last dimension of ``x``."""
        lead = x.shape[:-1]
        x = F.pad(x, (0, self.nblocks * self.in_block - self.in_features))
        if self.kernel == "triton":
            y = _triton_blockdiag(x.reshape(-1, x.shape[-1]), self.weight)
        else:
            y = torch.einsum(
                "...bi,boi->...bo", x.reshape(*lead, self.nblocks, self.in_block), self.weight
            )
        y = y.reshape(*lead, self.nblocks * self.out_block)[..., : self.out_features]
        return y if self.bias is None else y + self.bias

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense weight, shape (out_features, in_features)."""
        return torch.block_diag(*self.weight)[: self.out_features, : self.in_features]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"nblocks={self.nblocks}, bias={self.bias is not None}"
        )


class MonarchLinear(nn.Module):
    """Order-2 Monarch matrix ``y = P2 · BD2 · P1 · BD1 · x + bias``.

    With b = nblocks, p = ceil(in/b), s = ceil(out/b) and r = max(p, s):

    - the input is zero-padded to b·p and cut into b chunks of p;
    - ``BD1`` (weight1, shape (b, r, p)) maps chunk i to r features, laid out (b, r) block-major;
    - ``P1`` is the stride permutation (b, r) -> (r, b): the j-th output of every first-stage
      block becomes adjacent, so each second-stage block mixes all first-stage blocks;
    - ``BD2`` (weight2, shape (b, s, r)) cuts that vector into b chunks of r and maps each to s;
    - ``P2`` is the stride permutation (b, s) -> (s, b); the result is truncated to ``out``.

    For in = out = b² this is the square Monarch matrix of the paper (p = r = s = b).
    Shapes: input (..., in_features) -> output (..., out_features).

    Args:
        in_features: input width.
        out_features: output width.
        nblocks: blocks per factor.
        bias: add a learned bias of shape (out_features,).
        kernel: ``"torch"`` (the einsums below) or ``"triton"``
            (:mod:`m2bench.kernels.monarch_triton`, the permutations folded into its loads and
            stores; padding, truncation and bias stay here).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nblocks: int = 4,
        *,
        bias: bool = True,
        kernel: str = "torch",
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.p = math.ceil(in_features / nblocks)
        self.s = math.ceil(out_features / nblocks)
        self.r = max(self.p, self.s)
        self.weight1 = nn.Parameter(torch.empty(nblocks, self.r, self.p))
        self.weight2 = nn.Parameter(torch.empty(nblocks, self.s, self.r))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init with the fan-in of one block of each factor."""
        _init_blocks(self.weight1, self.p)
        _init_blocks(self.weight2, self.r)
        if self.bias is not None:
            _init_blocks(self.bias, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map to the last dimension of ``x``."""
        lead, b = x.shape[:-1], self.nblocks
        x = F.pad(x, (0, b * self.p - self.in_features))
        if self.kernel == "triton":
            y = _triton_monarch(x.reshape(-1, b * self.p), self.weight1, self.weight2)
            y = y.reshape(*lead, b * self.s)
        else:
            x = x.reshape(*lead, b, self.p)
            h = torch.einsum("...bp,brp->...br", x, self.weight1)  # BD1
            h = h.transpose(-1, -2).reshape(*lead, b, self.r)  # P1, then b chunks of r
            y = torch.einsum("...br,bsr->...bs", h, self.weight2)  # BD2
            y = y.transpose(-1, -2).reshape(*lead, b * self.s)  # P2
        y = y[..., : self.out_features]
        return y if self.bias is None else y + self.bias

    def to_dense(self) -> torch.Tensor:
        """The product of the four factors as a dense matrix (out_features, in_features)."""
        b = self.nblocks
        bd1 = torch.block_diag(*self.weight1)
        bd2 = torch.block_diag(*self.weight2)
        p1 = torch.eye(b * self.r, dtype=bd1.dtype, device=bd1.device)[
            _stride_permutation(b, self.r)
        ]
        p2 = torch.eye(b * self.s, dtype=bd1.dtype, device=bd1.device)[
            _stride_permutation(b, self.s)
        ]
        return (p2 @ bd2 @ p1 @ bd1)[: self.out_features, : self.in_features]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"nblocks={self.nblocks}, bias={self.bias is not None}"
        )
