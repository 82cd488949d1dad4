"""Transformer: the vanilla encoder-decoder as a long-term forecaster (TSLib's ``Transformer``).

Paper: Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser and Polosukhin, "Attention Is
All You Need" (NeurIPS 2017, https://arxiv.org/abs/1706.03762), used for forecasting as in the
Time-Series-Library (TSLib). Implemented from ``shared/specs/timeseries_protocol.md`` §1, §2,
§9.1, §9.3 and §10, following the model contract of :mod:`baselines.ts_common`:

1. no normalisation; x is multiplied by ``mask`` (1 = observed) when one is given;
2. encoder: :class:`~baselines.ts_common.DataEmbedding` of x (value conv + sinusoid + x_mark),
   ``e_layers`` TSLib encoder layers (x = LN(x + Dropout(mixer(x))); x = LN(x + FFN(x))), a
   final LayerNorm;
3. decoder input: the last ``label_len`` steps of x (at most ``seq_len``) followed by
   ``pred_len`` zero rows, its marks the matching rows of x_mark followed by y_mark (only when
   both are given); DataEmbedding, ``d_layers`` TSLib decoder layers (causal self-attention,
   cross-attention to the encoder output, FFN; each residual + dropout + LayerNorm), final
   LayerNorm, Linear(d_model -> c_out = enc_in); the last ``pred_len`` steps are the forecast;
4. ``features`` = the encoder output (B, seq_len, d_model), flattened.

Hyperparameters (§9.1, TSLib ETTh1 script): e_layers 2, d_layers 1, factor 3 (unused by full
attention, as in TSLib), d_model 512, n_heads 8, d_ff 2048, dropout 0.1, GELU, label_len 48.

``mixer`` picks the ENCODER's self-attention only; the decoder's attentions are always full
multi-head attention (TSLib's AttentionLayer with scale 1/sqrt(d_model/H)):

- ``"attention"``: :class:`~baselines.ts_common.SelfAttention` (dropout on the weights);
- ``"dense"``: JustDense's JDTransformer (spec §10): a
  :class:`~m2bench.layers.dense_mixer.DenseMixer` over the ``seq_len`` time steps, ``n_heads``
  heads (the HEAD placement); its residual is inside the mixer, so the host layer applies the
  residual twice, as the fork does;
- ``"monarch"``: :class:`~m2bench.layers.mixer.M2SequenceMixer` (bidirectional) over the
  ``seq_len`` steps.

Deviations: the JustDense wrapper's unused in_proj/LayerNorm/out_proj are not built; attention
maps are never returned; marks of the decoder are used only when both x_mark and y_mark are
given (with x_mark alone only the encoder sees marks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.ts_common import (
    MIXERS,
    DataEmbedding,
    EncoderLayer,
    SelfAttention,
    build_mixer,
    check_input,
    check_marks,
    register_family,
)
from m2bench.errors import ConfigError

ACTIVATIONS = ("gelu", "relu")


def check_config(c) -> None:
    """Validate the fields the encoder-decoder forecasters share; raise ConfigError."""
    for name in ("seq_len", "pred_len", "enc_in", "d_model", "n_heads", "e_layers", "d_layers",
                 "d_ff", "factor"):  # fmt: skip
        if getattr(c, name) < 1:
            raise ConfigError(f"{name} must be positive, got {getattr(c, name)}")
    for name in ("label_len", "mark_dim"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.d_model % c.n_heads:
        raise ConfigError(f"d_model ({c.d_model}) must be divisible by n_heads ({c.n_heads})")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {c.dropout}")
    if c.activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                          f"got {c.activation!r}")  # fmt: skip
    if c.mixer not in MIXERS:
        raise ConfigError(f"mixer must be one of {', '.join(MIXERS)}, got {c.mixer!r}")


@dataclass(frozen=True)
class TransformerConfig:
    """Transformer's settings (TSLib ETTh1 96 -> 96); the task sets the geometry fields."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C (c_out = enc_in)
    mark_dim: int = 0  # time-feature columns of x_mark / y_mark (0 = none)
    label_len: int = 48  # known steps at the start of the decoder input (at most seq_len used)
    d_model: int = 512
    n_heads: int = 8
    e_layers: int = 2
    d_layers: int = 1
    d_ff: int = 2048
    factor: int = 3  # ProbSparse / AutoCorrelation sample factor; full attention ignores it
    dropout: float = 0.1  # embeddings, attention weights, residual branches, FFN
    activation: str = "gelu"  # FFN activation: "gelu" | "relu"
    mixer: str = "attention"  # encoder self-attention: "attention" | "dense" | "monarch"

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def c_out(self) -> int:
        """Output channels (= enc_in)."""
        return self.enc_in

    @property
    def dec_label(self) -> int:
        """Known steps of the decoder input: min(label_len, seq_len)."""
        return min(self.label_len, self.seq_len)


def decoder_inputs(x: torch.Tensor, x_mark, y_mark, label: int, pred_len: int):
    """TSLib's decoder input: the last ``label`` steps of x, then ``pred_len`` zero rows.

    Returns (x_dec (B, label + pred_len, C), marks or None): the marks are the last ``label``
    rows of x_mark followed by y_mark, only when both are given.
    """
    start = x.shape[1] - label
    zeros = x.new_zeros(x.shape[0], pred_len, x.shape[2])
    x_dec = torch.cat([x[:, start:], zeros], dim=1)
    if x_mark is None or y_mark is None:
        return x_dec, None
    return x_dec, torch.cat([x_mark[:, start:], y_mark.to(x_mark.dtype)], dim=1)


class DecoderLayer(nn.Module):
    """TSLib decoder layer: causal self-attention, cross-attention, FFN; residual + LN each.

    x = LN1(x + drop(self_attn(x, causal))); x = LN2(x + drop(cross_attn(x, memory)));
    x = LN3(x + FFN(x)) with FFN = Conv1d k1 d_model -> d_ff, activation, dropout, Conv1d k1
    back, dropout. The attentions take ``(x, memory=None, causal=False)``.
    """

    def __init__(self, self_attn: nn.Module, cross_attn: nn.Module, d_model: int, d_ff: int,
                 dropout: float, activation: str = "gelu") -> None:  # fmt: skip
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.conv1 = nn.Conv1d(d_model, d_ff, 1)
        self.conv2 = nn.Conv1d(d_ff, d_model, 1)
        self.drop = nn.Dropout(dropout)
        self.act = F.gelu if activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, d) decoder tokens attending to ``memory`` (B, S, d) -> (B, T, d)."""
        x = self.norm1(x + self.drop(self.self_attn(x, causal=True)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory)))
        y = self.drop(self.act(self.conv1(x.transpose(1, 2))))
        y = self.drop(self.conv2(y).transpose(1, 2))
        return self.norm3(x + y)


class Encoder(nn.Module):
    """Encoder layers, optional distilling layers between them (Informer), final norm."""

    def __init__(self, layers: list[nn.Module], norm: nn.Module,
                 convs: list[nn.Module] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.convs = nn.ModuleList(convs or [])
        self.norm = norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N', d); N' < N only with distilling layers."""
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.convs):
                h = self.convs[i](h)
        return self.norm(h)


class Transformer(nn.Module):
    """TSLib's Transformer forecaster; the encoder's self-attention is swappable."""

    name = "Transformer"

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        n_dec = c.dec_label + c.pred_len
        self.enc_embedding = DataEmbedding(c.enc_in, c.d_model, c.mark_dim, c.dropout,
                                           max_len=c.seq_len)  # fmt: skip
        self.dec_embedding = DataEmbedding(c.enc_in, c.d_model, c.mark_dim, c.dropout,
                                           max_len=n_dec)  # fmt: skip
        self.encoder = self.build_encoder(c)
        self.decoder = nn.ModuleList(
            DecoderLayer(self.decoder_attention(c), self.decoder_attention(c), c.d_model, c.d_ff,
                         c.dropout, c.activation) for _ in range(c.d_layers)
        )  # fmt: skip
        self.dec_norm = nn.LayerNorm(c.d_model)
        self.projection = nn.Linear(c.d_model, c.c_out)

    def build_encoder(self, c: TransformerConfig) -> Encoder:
        """``e_layers`` encoder layers over ``seq_len`` tokens with ``c.mixer``, final LN."""
        layers = [EncoderLayer(build_mixer(c.mixer, c.seq_len, c.d_model, c.n_heads, c.dropout),
                               c.d_model, c.d_ff, c.dropout, c.activation)
                  for _ in range(c.e_layers)]  # fmt: skip
        return Encoder(layers, nn.LayerNorm(c.d_model))

    def decoder_attention(self, c: TransformerConfig) -> nn.Module:
        """One decoder attention (self or cross): full multi-head attention."""
        return SelfAttention(c.d_model, c.n_heads, c.dropout)

    def encode(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        """Encoder output (B, N_enc, d_model) of the input window."""
        return self.encoder(self.enc_embedding(x, x_mark))

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder output flattened per sample: (B, N_enc * d_model)."""
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
        memory = self.encode(x, x_mark)
        x_dec, dec_mark = decoder_inputs(x, x_mark, y_mark, c.dec_label, c.pred_len)
        h = self.dec_embedding(x_dec, dec_mark)
        for layer in self.decoder:
            h = layer(h, memory)
        return self.projection(self.dec_norm(h))[:, -c.pred_len :]


TINY = dict(d_model=32, n_heads=2, d_ff=32, e_layers=1, d_layers=1)


register_family(
    "transformer",
    Transformer,
    TransformerConfig,
    describe="Transformer (Vaswani et al. 2017, TSLib), {mixer} encoder mixer",
    original="attention",
    tiny=TINY,
    params_m={
        "transformer": 10.5359,
        "transformer_dense": 8.5822,
        "transformer_monarch": 10.9478,
        "transformer_tiny": 0.0189,
        "transformer_dense_tiny": 0.0331,
        "transformer_monarch_tiny": 0.0957,
    },
)
