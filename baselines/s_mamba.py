"""S-Mamba: bidirectional Mamba over variate tokens for long-term forecasting.

Paper: Wang, Kong, Feng, Li, Lin, Li, Zhang and Song, "Is Mamba Effective for Time Series
Forecasting?" (2024, https://arxiv.org/abs/2403.11144). Implemented here from the JustDense fork's
S_Mamba as described in ``shared/specs/timeseries_protocol.md`` §9.3:

1. instance norm per window and channel (mean and std over time, eps 1e-5, no affine; with a
   ``mask`` the statistics use the observed entries only);
2. inverted embedding as iTransformer: N = ``enc_in`` variate tokens plus ``mark_dim`` time-feature
   tokens (the columns of x_mark), each a whole window of L steps embedded by
   Linear(L -> d_model), then dropout;
3. ``e_layers`` layers: new = Mamba_f(x) + flip(Mamba_b(flip(x))) over the tokens
   (:class:`~m2bench.layers.selective_scan.MambaBlock`, d_state ``d_state``, d_conv 2, expand 1),
   x = LayerNorm(x + new) (no dropout); FFN = Conv1d k1 d_model -> d_ff, GELU, dropout, Conv1d k1
   back, dropout; x = LayerNorm(x + FFN(x));
4. final LayerNorm, Linear(d_model -> H) per token, the first ``enc_in`` tokens kept,
   de-normalised with the window's mean and std.

``forecast`` kind: x (B, L, C) -> y (B, H, C). Hyperparameters (§9.1, ETTh1): d_model 256, d_ff
256, d_state 2, e_layers 2 (JustDense first-commit scripts), dropout 0.1.

``mixer`` picks what replaces the pair (Mamba_f, flipped Mamba_b) over the tokens:

- ``"mamba"``: the pair of Mamba blocks above;
- ``"dense"``: JustDense's JDS_Mamba (Park et al. 2025, arXiv 2508.09153): each of the two blocks
  becomes a Hydra-style dense wrapper (:class:`baselines.mamba_ts.HydraDense`, d_conv 7, expand
  2, heads of width 4) over the N = enc_in + mark_dim tokens, the flip kept; the token count is
  fixed at build time, so the model is tied to (enc_in, mark_dim);
- ``"monarch"``: ONE :class:`~m2bench.layers.mixer.M2SequenceMixer` (bidirectional, no residual
  long conv) replaces the pair, since its long convolution already runs both ways; new = M2(x).
  Mixing variates in column order is an m2bench choice, as for ``itransformer_monarch``.

Deviations: the fork's layers also build Mamba/attention modules of width 11 that are never used;
they are not built, so parameter counts are smaller than the fork's. When the model is built with
``mark_dim`` > 0 but called without x_mark (e.g. the classification probe), the time-feature
tokens are embedded from zeros, so the token count and the feature size stay fixed. The Mamba
block is the plain-PyTorch one (see its module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.mamba_ts import HydraDense
from baselines.ts_common import (
    build_mixer,
    check_input,
    check_marks,
    instance_norm,
    register_family,
)
from m2bench.errors import ConfigError
from m2bench.layers.selective_scan import MambaBlock

MIXERS = ("mamba", "dense", "monarch")


@dataclass(frozen=True)
class SMambaConfig:
    """S-Mamba's settings (ETTh1 96 -> 96); the task sets seq_len, pred_len, enc_in, mark_dim."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C; tokens N = enc_in + mark_dim
    mark_dim: int = 0  # time-feature columns, each one more token; 0 = none
    d_model: int = 256
    d_ff: int = 256
    d_state: int = 2
    d_conv: int = 2  # causal conv taps of each Mamba block
    expand: int = 1  # d_inner of each Mamba block = expand * d_model
    e_layers: int = 2
    dropout: float = 0.1  # embedding and FFN
    d_conv_dense: int = 7  # Hydra wrapper's non-causal conv taps (odd)
    expand_dense: int = 2  # Hydra wrapper's d_inner = expand_dense * d_model
    mixer: str = "mamba"  # "mamba" | "dense" | "monarch": the mixer over tokens

    def __post_init__(self) -> None:
        for name in ("seq_len", "pred_len", "enc_in", "d_model", "d_ff", "d_state", "d_conv",
                     "expand", "e_layers", "d_conv_dense", "expand_dense"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mark_dim < 0:
            raise ConfigError(f"mark_dim must be >= 0, got {self.mark_dim}")
        if self.d_conv_dense % 2 == 0:
            raise ConfigError(f"d_conv_dense must be odd, got {self.d_conv_dense}")
        if (self.expand_dense * self.d_model) % 4:
            raise ConfigError(
                f"expand_dense * d_model ({self.expand_dense * self.d_model}) must be divisible "
                "by 4 (the dense mixer's head width)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mixer not in MIXERS:
            raise ConfigError(f"mixer must be one of {', '.join(MIXERS)}, got {self.mixer!r}")

    @property
    def n_tokens(self) -> int:
        """Tokens per window: the variates and the time features."""
        return self.enc_in + self.mark_dim


class BiMixer(nn.Module):
    """new = forward(x) + flip(backward(flip(x))) over the tokens, or one bidirectional M2 mixer."""

    def __init__(self, c: SMambaConfig) -> None:
        super().__init__()
        if c.mixer == "monarch":
            self.forward_mixer = build_mixer("monarch", c.n_tokens, c.d_model, 1, c.dropout)
            self.backward_mixer = None
            return
        if c.mixer == "dense":
            pair = [HydraDense(c.n_tokens, c.d_model, c.expand_dense, c.d_conv_dense)
                    for _ in range(2)]  # fmt: skip
        else:
            pair = [MambaBlock(c.d_model, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)
                    for _ in range(2)]  # fmt: skip
        self.forward_mixer, self.backward_mixer = pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d)."""
        new = self.forward_mixer(x)
        if self.backward_mixer is not None:
            new = new + self.backward_mixer(x.flip(1)).flip(1)
        return new


class EncoderLayer(nn.Module):
    """S-Mamba layer: x = norm1(x + mixer(x)); x = norm2(x + FFN(x))."""

    def __init__(self, c: SMambaConfig) -> None:
        super().__init__()
        self.mixer = BiMixer(c)
        self.norm1 = nn.LayerNorm(c.d_model)
        self.norm2 = nn.LayerNorm(c.d_model)
        self.conv1 = nn.Conv1d(c.d_model, c.d_ff, 1)
        self.conv2 = nn.Conv1d(c.d_ff, c.d_model, 1)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d)."""
        x = self.norm1(x + self.mixer(x))
        y = self.drop(F.gelu(self.conv1(x.transpose(1, 2))))
        y = self.drop(self.conv2(y).transpose(1, 2))
        return self.norm2(x + y)


class SMamba(nn.Module):
    """S-Mamba forecaster with a swappable token mixer."""

    def __init__(self, config: SMambaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Linear(c.seq_len, c.d_model)
        self.embed_drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.e_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.pred_len)

    def _encode(self, z: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        c = self.config
        check_marks("S-Mamba", c, z, x_mark)
        tokens = z.transpose(1, 2)  # (B, C, L)
        if c.mark_dim:
            if x_mark is None:
                x_mark = z.new_zeros(z.shape[0], c.seq_len, c.mark_dim)
            tokens = torch.cat([tokens, x_mark.to(z.dtype).transpose(1, 2)], dim=1)
        h = self.embed_drop(self.embed(tokens))  # (B, N, d)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm outputs of all N tokens for ``x`` (B, L, C), as (B, N * d_model)."""
        check_input("S-Mamba", self.config, x)
        return self._encode(instance_norm(x)[0], x_mark).flatten(1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                y_mark: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Forecast (B, H, C) from ``x`` (B, L, C) and optional marks; y_mark unused."""
        c = self.config
        check_input("S-Mamba", c, x)
        z, mean, std = instance_norm(x, mask)
        y = self.head(self._encode(z, x_mark)[:, : c.enc_in])  # (B, C, H)
        return y.transpose(1, 2) * std + mean


register_family(
    "s_mamba",
    SMamba,
    SMambaConfig,
    describe="S-Mamba (Wang et al. 2024), {mixer} token mixer",
    original="mamba",
    tiny=dict(d_model=16, d_ff=16, e_layers=1),
    params_m={
        "s_mamba": 1.1457,
        "s_mamba_dense": 1.4053,
        "s_mamba_monarch": 1.1148,
        "s_mamba_tiny": 0.0058,
        "s_mamba_dense_tiny": 0.0072,
        "s_mamba_monarch_tiny": 0.077,
    },
)
