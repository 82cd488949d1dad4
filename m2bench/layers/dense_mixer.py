"""The dense (data-independent) matrix mixer of JustDense.

Papers: Park et al., "JustDense: Just using Dense instead of Sequence Mixer for Time Series
analysis" (2025, https://arxiv.org/abs/2508.09153), which takes the mixer from Hydra (Hwang et al.,
"Hydra: Bidirectional State Space Models Through Generalized Matrix Mixers", NeurIPS 2024,
https://arxiv.org/abs/2407.09941). Implemented from the description in
``shared/specs/timeseries_protocol.md`` §10.

:class:`DenseMixer`, input X (B, N, d) -> (B, N, d), d = H * h viewed as H heads of width h, with
one learned N x N matrix per head, shared over the batch and over the h features of the head:

    Y[b, l, n, :] = X[b, l, n, :] + (1 / sqrt(N)) * sum_t M[n, l, t] * X[b, t, n, :]

The residual is inside the mixer, as in the reference. ``M`` (H, N, N) is Xavier-normal
initialised on the 3-D tensor (fan_in N*N, fan_out H*N), i.e. std sqrt(2 / (N^2 + H*N)). The token
count N is fixed at build time; no bias, non-causal.

Deviation: only the mixer is built. JustDense's attention-style wrapper also builds in_proj,
LayerNorm and out_proj parameters that its forward never uses; they are left out here, so
parameter counts are smaller than the fork's.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DenseMixer(nn.Module):
    """Per-head learned N x N token mixing with an inner residual.

    Args:
        n_tokens: token count N the mixer is built for.
        d_model: width d of each token.
        n_heads: number of heads H; ``d_model`` must be divisible by it.
    """

    def __init__(self, n_tokens: int, d_model: int, n_heads: int) -> None:
        super().__init__()
        if n_tokens < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(
                f"DenseMixer needs n_tokens >= 1 and d_model divisible by n_heads, got "
                f"n_tokens={n_tokens}, d_model={d_model}, n_heads={n_heads}"
            )
        self.n_tokens = n_tokens
        self.d_model = d_model
        self.n_heads = n_heads
        self.scale = 1.0 / math.sqrt(n_tokens)
        self.M = nn.Parameter(torch.empty(n_heads, n_tokens, n_tokens))
        nn.init.xavier_normal_(self.M)  # 3-D: fan_in N*N, fan_out H*N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix ``x`` (B, N, d) over its N tokens; returns (B, N, d)."""
        b, n, d = x.shape
        if n != self.n_tokens or d != self.d_model:
            raise ValueError(
                f"DenseMixer was built for {self.n_tokens} tokens of width {self.d_model}, "
                f"got {n} tokens of width {d}"
            )
        heads = x.reshape(b, n, self.n_heads, d // self.n_heads)
        mixed = torch.einsum("hlt,bthe->blhe", self.M, heads) * self.scale
        return x + mixed.reshape(b, n, d)
