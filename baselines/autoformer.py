"""Autoformer: decomposition and auto-correlation for long-term forecasting.

Paper: Wu, Xu, Wang and Long, "Autoformer: Decomposition Transformers with Auto-Correlation for
Long-Term Series Forecasting" (NeurIPS 2021, https://arxiv.org/abs/2106.13008). Implemented as
the Time-Series-Library (TSLib) ``Autoformer`` from ``shared/specs/timeseries_protocol.md`` §9.1
and §9.3, with the model contract of :mod:`baselines.ts_common`:

1. no normalisation; x is multiplied by ``mask`` (1 = observed) when one is given;
2. embedding without position (TSLib's DataEmbedding_wo_pos, :class:`DataEmbeddingWoPos`):
   value Conv1d k3 circular + Linear of the marks, dropout;
3. encoder: ``e_layers`` layers x = decomp(x + drop(mixer(x))); y = FFN(x) (Conv1d k1 without
   bias, activation, dropout, Conv1d k1 back, dropout); x = seasonal part of decomp(x + y);
   the encoder norm is TSLib's my_Layernorm (LayerNorm, then minus the time mean);
4. decoder initialisation from the decomposition (moving average ``moving_avg``, replicated
   ends, :func:`~baselines.ts_common.series_decomp`) of x: seasonal = [seasonal part of the
   last label_len steps, pred_len zeros]; trend = [trend part of the last label_len steps,
   mean of x over time repeated pred_len times]; label_len is at most seq_len; the decoder
   marks are the last label_len rows of x_mark then y_mark (only when both are given);
5. ``d_layers`` decoder layers: self auto-correlation, cross auto-correlation to the encoder
   output and FFN, each followed by a decomposition whose trends (t1 + t2 + t3) are projected
   by Conv1d(d_model -> c_out, k3 circular, no bias) and accumulated onto the trend;
   my_Layernorm, Linear(d_model -> c_out) of the seasonal part; output = trend + seasonal,
   the last ``pred_len`` steps;
6. ``features`` = the encoder output (B, seq_len, d_model), flattened.

Auto-correlation (:func:`auto_correlation`, inside TSLib's AutoCorrelationLayer with Q/K/V/O
linear maps with bias): keys and values are zero-padded or cut to the query length L; the
correlation R(tau) = irfft(rfft(q) * conj(rfft(k))) is averaged over heads and channels; the
top ``k = int(factor * ln L)`` delays are kept, their correlations softmax-normalised, and the
output is the weighted sum of V rolled by each delay (time-delay aggregation). As in the
original's two code paths: in training the delays are chosen from the batch-mean correlation
(one set for the batch, weights per sample), in eval per sample. The decoder's "masked"
self-correlation is not masked (the original ignores its mask too); no attention dropout.

Hyperparameters (§9.1): e_layers 2, d_layers 1, factor 3, d_model 512, n_heads 8, d_ff 2048,
moving_avg 25, dropout 0.1, GELU, label_len 48.

``mixer`` replaces the ENCODER's auto-correlation only (decomposition kept; decoder kept):
``"attention"`` = auto-correlation (the original), ``"dense"`` = JustDense's JDAutoformer with a
:class:`~m2bench.layers.dense_mixer.DenseMixer` over the ``seq_len`` steps (its inner residual
makes the layer decomp(x + drop(x + M~x)), as the fork), ``"monarch"`` =
:class:`~m2bench.layers.mixer.M2SequenceMixer` over the ``seq_len`` steps.

Deviations: JustDense's JDAutoformer uses d_model/2 dense heads (spec §10); m2bench uses the same
rule for every model, ``n_heads`` heads (8 here). The wrapper's unused projections are not built.
Attention maps are never returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.ts_common import (
    DataEmbedding,
    build_mixer,
    check_input,
    check_marks,
    register_family,
    series_decomp,
)
from baselines.ts_transformer import TINY, TransformerConfig, decoder_inputs
from m2bench.errors import ConfigError


@dataclass(frozen=True)
class AutoformerConfig(TransformerConfig):
    """Autoformer's settings (TSLib ETTh1 96 -> 96): the Transformer's plus ``moving_avg``."""

    moving_avg: int = 25  # odd kernel of the series decomposition

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.moving_avg < 1 or self.moving_avg % 2 == 0:
            raise ConfigError(f"moving_avg must be odd and positive, got {self.moving_avg}")


class DataEmbeddingWoPos(DataEmbedding):
    """TSLib's DataEmbedding_wo_pos: value conv + time-feature linear, dropout; no position."""

    def __init__(self, c_in: int, d_model: int, mark_dim: int = 0, dropout: float = 0.1) -> None:
        super().__init__(c_in, d_model, mark_dim, dropout, max_len=1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) values and optional (B, T, mark_dim) marks -> (B, T, d_model)."""
        h = self.value(x.transpose(1, 2)).transpose(1, 2)
        if self.mark is not None and x_mark is not None:
            h = h + self.mark(x_mark)
        return self.drop(h)


def auto_correlation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, factor: int,
                     batch_delays: bool) -> torch.Tensor:  # fmt: skip
    """Auto-correlation of (B, L, H, E) queries with (B, S, H, E) keys/values -> (B, L, H, E).

    ``batch_delays``: choose the top delays from the batch-mean correlation (the original's
    training path) instead of per sample (its inference path).
    """
    length = q.shape[1]
    if k.shape[1] < length:
        pad = (0, 0, 0, 0, 0, length - k.shape[1])
        k, v = F.pad(k, pad), F.pad(v, pad)
    k, v = k[:, :length], v[:, :length]
    qf = torch.fft.rfft(q.permute(0, 2, 3, 1).float(), dim=-1)  # cuFFT has no bfloat16
    kf = torch.fft.rfft(k.permute(0, 2, 3, 1).float(), dim=-1)
    corr = torch.fft.irfft(qf * torch.conj(kf), n=length, dim=-1)  # (B, H, E, L)
    mean_corr = corr.mean(dim=(1, 2))  # (B, L)
    top_k = max(1, min(length, int(factor * math.log(length))))
    if batch_delays:
        delays = mean_corr.mean(dim=0).topk(top_k).indices  # (k,)
        weights = mean_corr[:, delays]
        delays = delays.expand(q.shape[0], -1)
    else:
        weights, delays = mean_corr.topk(top_k, dim=-1)  # (B, k)
    weights = torch.softmax(weights, dim=-1)
    values = v.permute(0, 2, 3, 1).float()  # (B, H, E, L)
    doubled = torch.cat([values, values], dim=-1)
    steps = torch.arange(length, device=q.device)
    out = torch.zeros_like(values)
    for i in range(top_k):
        index = (steps + delays[:, i, None])[:, None, None, :].expand_as(values)
        out = out + torch.gather(doubled, -1, index) * weights[:, i, None, None, None]
    return out.permute(0, 3, 1, 2).to(v.dtype)


class AutoCorrelationLayer(nn.Module):
    """TSLib's AutoCorrelationLayer: Q/K/V/O linear maps (with bias) around auto-correlation.

    Same call signature as :class:`~baselines.ts_common.SelfAttention` (``causal`` is accepted
    and ignored, as the original ignores the decoder's mask).
    """

    def __init__(self, d_model: int, n_heads: int, factor: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.factor = factor
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:  # fmt: skip
        """Correlate the tokens of ``x`` (B, N, d) with ``memory`` (B, S, d; default x)."""
        mem = x if memory is None else memory
        b, n, d = x.shape
        q = self.query(x).view(b, n, self.n_heads, -1)
        k = self.key(mem).view(b, mem.shape[1], self.n_heads, -1)
        v = self.value(mem).view(b, mem.shape[1], self.n_heads, -1)
        y = auto_correlation(q, k, v, self.factor, batch_delays=self.training)
        return self.out(y.reshape(b, n, d))


class SeasonalNorm(nn.Module):
    """TSLib's my_Layernorm: LayerNorm over features, then minus the mean over time."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d)."""
        h = self.norm(x)
        return h - h.mean(dim=1, keepdim=True)


class _FFN(nn.Module):
    """Autoformer's FFN: Conv1d k1 (no bias), activation, dropout, Conv1d k1 back, dropout."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, d_ff, 1, bias=False)
        self.conv2 = nn.Conv1d(d_ff, d_model, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.act = F.gelu if activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d)."""
        y = self.drop(self.act(self.conv1(x.transpose(1, 2))))
        return self.drop(self.conv2(y).transpose(1, 2))


class AutoformerEncoderLayer(nn.Module):
    """x = decomp(x + drop(mixer(x))); x = decomp(x + FFN(x)); seasonal parts only."""

    def __init__(self, mixer: nn.Module, c: AutoformerConfig) -> None:
        super().__init__()
        self.mixer = mixer
        self.ffn = _FFN(c.d_model, c.d_ff, c.dropout, c.activation)
        self.drop = nn.Dropout(c.dropout)
        self.kernel = c.moving_avg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d)."""
        x, _ = series_decomp(x + self.drop(self.mixer(x)), self.kernel)
        x, _ = series_decomp(x + self.ffn(x), self.kernel)
        return x


class AutoformerDecoderLayer(nn.Module):
    """Self and cross auto-correlation and FFN, each then decomposed; returns the trend too."""

    def __init__(self, c: AutoformerConfig) -> None:
        super().__init__()
        self.self_attn = AutoCorrelationLayer(c.d_model, c.n_heads, c.factor)
        self.cross_attn = AutoCorrelationLayer(c.d_model, c.n_heads, c.factor)
        self.ffn = _FFN(c.d_model, c.d_ff, c.dropout, c.activation)
        self.drop = nn.Dropout(c.dropout)
        self.kernel = c.moving_avg
        self.trend_proj = nn.Conv1d(c.d_model, c.c_out, 3, padding=1, padding_mode="circular",
                                    bias=False)  # fmt: skip

    def forward(self, x: torch.Tensor, memory: torch.Tensor):
        """(seasonal (B, T, d), residual trend (B, T, c_out)) of ``x`` given ``memory``."""
        x, trend1 = series_decomp(x + self.drop(self.self_attn(x)), self.kernel)
        x, trend2 = series_decomp(x + self.drop(self.cross_attn(x, memory)), self.kernel)
        x, trend3 = series_decomp(x + self.ffn(x), self.kernel)
        trend = self.trend_proj((trend1 + trend2 + trend3).transpose(1, 2)).transpose(1, 2)
        return x, trend


class Autoformer(nn.Module):
    """TSLib's Autoformer forecaster; the encoder's auto-correlation is swappable."""

    name = "Autoformer"

    def __init__(self, config: AutoformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.enc_embedding = DataEmbeddingWoPos(c.enc_in, c.d_model, c.mark_dim, c.dropout)
        self.dec_embedding = DataEmbeddingWoPos(c.enc_in, c.d_model, c.mark_dim, c.dropout)
        self.encoder = nn.ModuleList(AutoformerEncoderLayer(self._mixer(c), c)
                                     for _ in range(c.e_layers))  # fmt: skip
        self.enc_norm = SeasonalNorm(c.d_model)
        self.decoder = nn.ModuleList(AutoformerDecoderLayer(c) for _ in range(c.d_layers))
        self.dec_norm = SeasonalNorm(c.d_model)
        self.projection = nn.Linear(c.d_model, c.c_out)

    @staticmethod
    def _mixer(c: AutoformerConfig) -> nn.Module:
        if c.mixer == "attention":
            return AutoCorrelationLayer(c.d_model, c.n_heads, c.factor)
        return build_mixer(c.mixer, c.seq_len, c.d_model, c.n_heads, c.dropout)

    def encode(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        """Encoder output (B, seq_len, d_model) of the input window."""
        h = self.enc_embedding(x, x_mark)
        for layer in self.encoder:
            h = layer(h)
        return self.enc_norm(h)

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder output flattened per sample: (B, seq_len * d_model)."""
        check_input(self.name, self.config, x)
        check_marks(self.name, self.config, x, x_mark, None)
        return self.encode(x, x_mark).flatten(1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                y_mark: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Forecast (B, pred_len, C) from x (B, seq_len, C); see the module docstring."""
        c = self.config
        check_input(self.name, c, x)
        check_marks(self.name, c, x, x_mark, y_mark)
        if mask is not None:
            x = x * mask
        label, horizon = c.dec_label, c.pred_len
        seasonal, trend = series_decomp(x, c.moving_avg)
        start = c.seq_len - label
        mean = x.mean(dim=1, keepdim=True).expand(-1, horizon, -1)
        trend = torch.cat([trend[:, start:], mean], dim=1)
        seasonal_in, dec_mark = decoder_inputs(seasonal, x_mark, y_mark, label, horizon)
        memory = self.encode(x, x_mark)
        h = self.dec_embedding(seasonal_in, dec_mark)
        for layer in self.decoder:
            h, residual_trend = layer(h, memory)
            trend = trend + residual_trend
        out = trend + self.projection(self.dec_norm(h))
        return out[:, -horizon:]


register_family(
    "autoformer",
    Autoformer,
    AutoformerConfig,
    describe="Autoformer (Wu et al. 2021, TSLib), {mixer} encoder mixer",
    original="attention",
    tiny=TINY,
    params_m={
        "autoformer": 10.5318,
        "autoformer_dense": 8.5781,
        "autoformer_monarch": 10.9437,
        "autoformer_tiny": 0.0191,
        "autoformer_dense_tiny": 0.0334,
        "autoformer_monarch_tiny": 0.0959,
    },
)
