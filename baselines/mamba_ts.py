"""Mamba as a time-series forecaster (TSLib's ``Mamba`` model).

Paper: Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023,
https://arxiv.org/abs/2312.00752); the block is :class:`~m2bench.layers.selective_scan.MambaBlock`.
The forecaster around it follows the Time-Series-Library (TSLib) description in
``shared/specs/timeseries_protocol.md`` §9.3:

1. instance norm per window and channel (mean and std over time, eps 1e-5, no affine; with a
   ``mask`` the statistics use the observed entries only);
2. TSLib's ``DataEmbedding`` (value conv, sinusoidal position, time-feature linear, dropout);
3. one mixer block, with no residual connection or norm around it (Mamba: d_state = ``d_ff``,
   ``d_conv``, ``expand``);
4. Linear(d_model -> C, no bias) at every step, the last H of the L steps kept, de-normalised.

``forecast`` kind: x (B, L, C) -> y (B, H, C). Hyperparameters (§9.1, ETTh): d_model 128, d_ff 16
(= d_state), d_conv 4, expand 2, dropout 0.1, **seq_len = H**.

``mixer`` picks the sequence mixer over time, the only module that differs between arms:

- ``"mamba"``: the Mamba block (causal);
- ``"dense"``: JustDense's JDMamba (Park et al. 2025, arXiv 2508.09153) with the Hydra-style
  wrapper (spec §10, :class:`HydraDense`): in_proj, non-causal depthwise conv (kernel 7, padding
  3) + SiLU, :class:`~m2bench.layers.dense_mixer.DenseMixer` over the L steps with d_inner / 4
  heads of width 4 (= d_model / 2 heads at expand 2), out_proj. It is tied to ``seq_len``;
- ``"monarch"``: :class:`~m2bench.layers.mixer.M2SequenceMixer` (bidirectional, no residual long
  conv) over the L steps, as in m2bench's other forecasters; unlike the Mamba block it sees the
  whole window at every step.

Deviations: TSLib's Mamba forecasts only with seq_len = pred_len (it keeps the last H of L
outputs); m2bench accepts any pred_len <= seq_len and raises ConfigError otherwise. ``e_layers``
(unused by TSLib, whose model has one block) stacks that many blocks back to back when > 1. The
Hydra wrapper follows JustDense's HEAD, whose forward ignores the gate z and the gated RMSNorm;
m2bench does not build them: in_proj maps d_model -> d_inner (the x half of the fork's
d_model -> 2 d_inner map; PyTorch's init depends only on fan-in, so the kept half is distributed
alike), so ``mamba_dense`` counts fewer parameters than the fork's JDMamba. The Mamba block is the
plain-PyTorch one (see its module for its own deviations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.ts_common import (
    DataEmbedding,
    build_mixer,
    check_input,
    check_marks,
    instance_norm,
    register_family,
)
from m2bench.errors import ConfigError
from m2bench.layers.dense_mixer import DenseMixer
from m2bench.layers.selective_scan import MambaBlock

MIXERS = ("mamba", "dense", "monarch")


@dataclass(frozen=True)
class MambaTSConfig:
    """TSLib Mamba's settings (ETTh 96 -> 96); the task sets seq_len, pred_len, enc_in, mark_dim."""

    seq_len: int = 96  # input steps L (TSLib: = pred_len)
    pred_len: int = 96  # forecast steps H <= L
    enc_in: int = 7  # channels C (= c_out)
    mark_dim: int = 0  # time-feature columns, 0 = none
    d_model: int = 128
    d_ff: int = 16  # the Mamba block's d_state, as TSLib passes it
    d_conv: int = 4  # causal conv taps of the Mamba block
    expand: int = 2  # d_inner = expand * d_model (Mamba block and Hydra wrapper)
    e_layers: int = 1  # blocks back to back; TSLib builds one
    dropout: float = 0.1  # embedding only
    d_conv_dense: int = 7  # non-causal conv taps of the Hydra wrapper (odd)
    mixer: str = "mamba"  # "mamba" | "dense" | "monarch": the mixer over time

    def __post_init__(self) -> None:
        for name in ("seq_len", "pred_len", "enc_in", "d_model", "d_ff", "d_conv", "expand",
                     "e_layers", "d_conv_dense"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mark_dim < 0:
            raise ConfigError(f"mark_dim must be >= 0, got {self.mark_dim}")
        if self.pred_len > self.seq_len:
            raise ConfigError(
                f"Mamba outputs the last pred_len of its seq_len steps, so pred_len "
                f"({self.pred_len}) must be <= seq_len ({self.seq_len}); TSLib runs Mamba with "
                f"seq_len = pred_len: pass task.seq_len={self.pred_len} (or the model setting "
                f"seq_len={self.pred_len})"
            )
        if self.d_conv_dense % 2 == 0:
            raise ConfigError(f"d_conv_dense must be odd, got {self.d_conv_dense}")
        if (self.expand * self.d_model) % 4:
            raise ConfigError(
                f"expand * d_model ({self.expand * self.d_model}) must be divisible by 4 "
                "(the dense mixer's head width)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mixer not in MIXERS:
            raise ConfigError(f"mixer must be one of {', '.join(MIXERS)}, got {self.mixer!r}")


class HydraDense(nn.Module):
    """JustDense's Hydra-style wrapper around the dense mixer, as run at the fork's HEAD.

    (B, N, d_model) -> (B, N, d_model): x = in_proj(u) (d_model -> d_inner, no bias);
    x = SiLU(depthwise Conv1d over the N tokens, kernel ``d_conv``, padding d_conv // 2, bias);
    y = DenseMixer(N, d_inner, d_inner // headdim)(x) (residual inside); out_proj (no bias).
    The gate half of the fork's in_proj and its gated RMSNorm are unused there and not built.

    Args:
        n_tokens: token count N, fixed at build time.
        d_model: token width.
        expand: d_inner = expand * d_model.
        d_conv: odd conv taps.
        headdim: width of each dense-mixer head.
    """

    def __init__(self, n_tokens: int, d_model: int, expand: int = 2, d_conv: int = 7,
                 headdim: int = 4) -> None:  # fmt: skip
        super().__init__()
        d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv // 2)
        self.dense = DenseMixer(n_tokens, d_inner, d_inner // headdim)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Mix ``u`` (B, N, d_model) over its N tokens; returns (B, N, d_model)."""
        x = self.in_proj(u).transpose(1, 2)
        x = F.silu(self.conv(x)).transpose(1, 2)
        return self.out_proj(self.dense(x))


def build_block(c: MambaTSConfig) -> nn.Module:
    """One sequence mixer over the ``c.seq_len`` steps named by ``c.mixer``."""
    if c.mixer == "dense":
        return HydraDense(c.seq_len, c.d_model, c.expand, c.d_conv_dense)
    if c.mixer == "monarch":
        return build_mixer("monarch", c.seq_len, c.d_model, 1, c.dropout)
    return MambaBlock(c.d_model, d_state=c.d_ff, d_conv=c.d_conv, expand=c.expand)


class MambaTS(nn.Module):
    """TSLib's Mamba forecaster with a swappable sequence mixer."""

    def __init__(self, config: MambaTSConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = DataEmbedding(c.enc_in, c.d_model, c.mark_dim, c.dropout)
        self.blocks = nn.ModuleList(build_block(c) for _ in range(c.e_layers))
        self.head = nn.Linear(c.d_model, c.enc_in, bias=False)

    def _encode(self, z: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        check_marks("Mamba", self.config, z, x_mark)
        h = self.embed(z, x_mark)
        for block in self.blocks:
            h = block(h)
        return h  # (B, L, d_model)

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """The mixer's output for the normalised window ``x`` (B, L, C), as (B, L * d_model)."""
        check_input("Mamba", self.config, x)
        return self._encode(instance_norm(x)[0], x_mark).flatten(1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                y_mark: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """(B, H, C) from ``x`` (B, L, C): the last H of the L projected steps; y_mark unused."""
        check_input("Mamba", self.config, x)
        z, mean, std = instance_norm(x, mask)
        y = self.head(self._encode(z, x_mark))[:, -self.config.pred_len :]
        return y * std + mean


register_family(
    "mamba",
    MambaTS,
    MambaTSConfig,
    describe="Mamba (Gu & Dao 2023, TSLib), {mixer} sequence mixer",
    original="mamba",
    tiny=dict(d_model=16, d_ff=8),
    params_m={
        "mamba": 0.1201,
        "mamba_dense": 0.661,
        "mamba_monarch": 0.1723,
        "mamba_tiny": 0.003,
        "mamba_dense_tiny": 0.0755,
        "mamba_monarch_tiny": 0.074,
    },
)
