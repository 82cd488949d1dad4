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

Deviations: TSLib appends 4 time-feature tokens (x_mark) to the N variates and drops them after
the projection; m2bench's forecast models receive only x (B, L, C), so there are exactly N tokens.
The JustDense wrapper's unused in_proj/LayerNorm/out_proj are not built. Attention maps are never
returned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from baselines.patchtst import SelfAttention
from m2bench.errors import ConfigError
from m2bench.layers.dense_mixer import DenseMixer
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.registry import register_model

MIXERS = ("attention", "dense", "monarch")


@dataclass(frozen=True)
class ITransformerConfig:
    """iTransformer's settings (TSLib ETTh 96 -> 96); the task sets seq_len, pred_len, enc_in."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C = variate tokens N
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


def build_mixer(c: ITransformerConfig) -> nn.Module:
    """The mixer over the ``c.enc_in`` variate tokens named by ``c.mixer``."""
    if c.mixer == "dense":
        return DenseMixer(c.enc_in, c.d_model, c.n_heads)
    if c.mixer == "monarch":
        return M2SequenceMixer(c.d_model, c.enc_in, bidirectional=True, residual_long_conv=False)
    return SelfAttention(c.d_model, c.n_heads, c.dropout)


class EncoderLayer(nn.Module):
    """TSLib encoder layer: mixer and position-wise FFN, each with residual, dropout and norm.

    Same computation as :class:`baselines.patchtst.EncoderLayer`, whose builder is tied to the
    patch count; this one takes the mixer's token count from ``enc_in``.
    """

    def __init__(self, c: ITransformerConfig) -> None:
        super().__init__()
        self.mixer = build_mixer(c)
        self.norm1 = nn.LayerNorm(c.d_model)
        self.norm2 = nn.LayerNorm(c.d_model)
        self.conv1 = nn.Conv1d(c.d_model, c.d_ff, 1)
        self.conv2 = nn.Conv1d(c.d_ff, c.d_model, 1)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d)."""
        x = self.norm1(x + self.drop(self.mixer(x)))
        y = self.drop(F.gelu(self.conv1(x.transpose(1, 2))))
        y = self.drop(self.conv2(y).transpose(1, 2))
        return self.norm2(x + y)


class ITransformer(nn.Module):
    """iTransformer forecaster with a swappable variate mixer."""

    def __init__(self, config: ITransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Linear(c.seq_len, c.d_model)
        self.embed_drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.e_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.pred_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast (B, H, C) from the input window ``x`` (B, L, C)."""
        c = self.config
        _, length, ch = x.shape
        if length != c.seq_len or ch != c.enc_in:
            raise ValueError(
                f"iTransformer was built for (seq_len {c.seq_len}, enc_in {c.enc_in}), "
                f"got ({length}, {ch})"
            )
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).detach()
        h = self.embed_drop(self.embed(((x - mean) / std).transpose(1, 2)))  # (B, C, d)
        for layer in self.layers:
            h = layer(h)
        y = self.head(self.norm(h))  # (B, C, H)
        return y.transpose(1, 2) * std + mean


def _register(name: str, mixer: str, params_m: float, tiny: bool) -> None:
    size = dict(d_model=32, n_heads=2, d_ff=32, e_layers=1) if tiny else {}
    family = "m2" if mixer == "monarch" else "baseline"
    desc = f"iTransformer (Liu et al. 2024), {mixer} variate mixer, 96 -> 96{', tiny' * tiny}"

    @register_model(name, kind="forecast", family=family, params_m=params_m,
                    config_cls=ITransformerConfig, description=desc)  # fmt: skip
    def build(**overrides: object) -> ITransformer:
        return ITransformer(replace(ITransformerConfig(mixer=mixer, **size), **overrides))


# params_m: count_params at the default geometry (L 96, H 96, C 7).
_register("itransformer", "attention", 0.2242, tiny=False)
_register("itransformer_dense", "dense", 0.0929, tiny=False)
_register("itransformer_monarch", "monarch", 0.4286, tiny=False)
_register("itransformer_tiny", "attention", 0.0128, tiny=True)
_register("itransformer_dense_tiny", "dense", 0.0087, tiny=True)
_register("itransformer_monarch_tiny", "monarch", 0.0892, tiny=True)
