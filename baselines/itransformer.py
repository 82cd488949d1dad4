"""iTransformer: attention over variate tokens for long-term forecasting.

Paper: Liu, Hu, Zhang, Wu, Wang, Ma and Long, "iTransformer: Inverted Transformers Are Effective
for Time Series Forecasting" (ICLR 2024, https://arxiv.org/abs/2310.06625). Implemented here from
the Time-Series-Library (TSLib) description in ``shared/specs/timeseries_protocol.md`` §9.3:

1. instance norm per window and channel (mean and std over time, eps 1e-5, no affine);
2. inverted embedding: each of the N = ``enc_in`` variates is one token, its whole window of L
   steps embedded by Linear(L -> d_model), then dropout;
3. ``e_layers`` TSLib encoder layers over the N tokens (the same layer as
   :mod:`baselines.patchtst`): x = LayerNorm(x + Dropout(mixer(x))); FFN = Conv1d k1
   d_model -> d_ff, GELU, dropout, Conv1d k1 back, dropout; x = LayerNorm(x + FFN(x));
4. final LayerNorm, Linear(d_model -> H) per token, de-normalise with the window's mean and std.

``forecast`` kind: x (B, L, C) -> y (B, H, C). Hyperparameters (§9.1, ETTh, L 96): e_layers 2,
d_model 128, n_heads 8, d_ff 128, dropout 0.1.

``mixer`` picks the mixer over the variate tokens, the only module that differs between arms:

- ``"attention"``: full multi-head self-attention (:class:`~baselines.patchtst.SelfAttention`,
  TSLib's AttentionLayer); with no positional signal on the tokens the model is
  permutation-equivariant over variates;
- ``"dense"``: JustDense (Park et al. 2025, arXiv 2508.09153) as m2bench's binding decision
  (spec §10): :class:`~m2bench.layers.dense_mixer.DenseMixer` with N = ``enc_in`` tokens replaces
  the variate attention, i.e. the *sequence mixer* — the fork's first-commit placement. It is NOT
  the fork's HEAD JDiTransformer, which keeps attention and replaces the FFN with a dense mixer
  over the d_model axis. The residual is inside the mixer, so the layer computes
  LayerNorm(x + Dropout(x + M~x)). The mixer is tied to the variate positions, so this arm is
  not permutation-equivariant;
- ``"monarch"``: :class:`~m2bench.layers.mixer.M2SequenceMixer` (bidirectional, no residual long
  conv) over the N variate tokens. The variate axis has no natural order, so running a
  (short causal + long bidirectional) convolution over it, in the dataset's column order, is an
  m2bench choice, not something from the M2 or iTransformer papers.

Time features: built with ``mark_dim`` > 0 (the forecasting task passes TSLib's 4 ``timeF``
features), the marks' rows become ``mark_dim`` extra tokens after the N variates, as TSLib does;
they are dropped after the projection. The dense mixer then mixes N + mark_dim tokens (JustDense's
first commit: L = N + 4). The JustDense wrapper's unused in_proj/LayerNorm/out_proj are not
built. Attention maps are never returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from baselines.ts_common import (
    MIXERS,
    EncoderLayer,
    build_mixer,
    check_input,
    instance_norm,
    register_family,
)
from m2bench.errors import ConfigError


@dataclass(frozen=True)
class ITransformerConfig:
    """iTransformer's settings (TSLib ETTh 96 -> 96); the task sets seq_len, pred_len, enc_in."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C = variate tokens
    mark_dim: int = 0  # time-feature tokens appended to the C variates (TSLib: 4)
    d_model: int = 128
    n_heads: int = 8
    e_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1  # embedding, attention weights, residual branches, FFN
    mixer: str = "attention"  # "attention" | "dense" | "monarch": the mixer over variates

    def __post_init__(self) -> None:
        for name in ("seq_len", "pred_len", "enc_in", "d_model", "n_heads", "e_layers", "d_ff"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mixer not in MIXERS:
            raise ConfigError(f"mixer must be one of {', '.join(MIXERS)}, got {self.mixer!r}")


class ITransformer(nn.Module):
    """iTransformer forecaster with a swappable variate mixer."""

    def __init__(self, config: ITransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Linear(c.seq_len, c.d_model)
        self.embed_drop = nn.Dropout(c.dropout)
        n = c.enc_in + c.mark_dim  # tokens: variates, then time features
        self.layers = nn.ModuleList(
            EncoderLayer(
                build_mixer(c.mixer, n, c.d_model, c.n_heads, c.dropout),
                c.d_model,
                c.d_ff,
                c.dropout,
            )  # fmt: skip
            for _ in range(c.e_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.pred_len)

    def _encode(self, x: torch.Tensor, x_mark: torch.Tensor | None, mask=None):
        """(B, C + mark_dim, d) normalised encoder tokens, with the window (mean, std)."""
        c = self.config
        check_input("iTransformer", c, x)
        z, mean, std = instance_norm(x, mask)
        tokens = z.transpose(1, 2)  # (B, C, L)
        if c.mark_dim:
            if x_mark is None or x_mark.shape[-1] != c.mark_dim:
                raise ValueError(f"iTransformer was built for {c.mark_dim} time-feature tokens; "
                                 "pass x_mark (B, L, mark_dim)")  # fmt: skip
            tokens = torch.cat([tokens, x_mark.transpose(1, 2).to(z.dtype)], dim=1)
        h = self.embed_drop(self.embed(tokens))
        for layer in self.layers:
            h = layer(h)
        return self.norm(h), mean, std

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """(B, (C + mark_dim) * d_model): the encoder tokens, flattened per sample."""
        return self._encode(x, x_mark)[0].reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                y_mark: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Forecast (B, H, C) from ``x`` (B, L, C) and, when built with marks, ``x_mark``."""
        h, mean, std = self._encode(x, x_mark, mask)
        y = self.head(h[:, : self.config.enc_in])  # (B, C, H): the variate tokens only
        return y.transpose(1, 2) * std + mean


register_family(
    "itransformer",
    ITransformer,
    ITransformerConfig,
    describe="iTransformer (Liu et al. 2024), {mixer} variate mixer",
    original="attention",
    tiny=dict(d_model=32, n_heads=2, d_ff=32, e_layers=1),
    params_m={
        "itransformer": 0.2242,
        "itransformer_dense": 0.0929,
        "itransformer_monarch": 0.4286,
        "itransformer_tiny": 0.0128,
        "itransformer_dense_tiny": 0.0087,
        "itransformer_monarch_tiny": 0.0892,
    },
)
