"""Plain-PyTorch twins of the Triton kernels: same signatures, the definition of what they compute.

- :func:`blockdiag_matmul`: x (M, nblocks * in_block), w (nblocks, out_block, in_block) ->
  y (M, nblocks * out_block) with ``y[:, b*out:(b+1)*out] = x[:, b*in:(b+1)*in] @ w[b].T``.
"""

from __future__ import annotations

import torch


def blockdiag_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Block-diagonal product; shapes in the module docstring."""
    nblocks, out_block, in_block = w.shape
    xb = x.reshape(x.shape[0], nblocks, in_block)
    return torch.einsum("mbi,boi->mbo", xb, w).reshape(x.shape[0], nblocks * out_block)
