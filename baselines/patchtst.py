"""PatchTST: channel-independent patch Transformer for long-term forecasting.

Paper: Nie, Nguyen, Sinthong and Kalagnanam, "A Time Series is Worth 64 Words: Long-term
Forecasting with Transformers" (ICLR 2023, https://arxiv.org/abs/2211.14730). Implemented here
from the Time-Series-Library (TSLib) description in ``shared/specs/timeseries_protocol.md`` §9.3:

1. instance norm per window and channel (mean and std over time, eps 1e-5, no affine);
2. channels folded into the batch (B*C series);
3. ReplicationPad(0, stride) at the end, patches of ``patch_len`` with ``stride``:
   patch_num = floor((L - patch_len) / stride) + 2 (12 for L 96, 16/8);
4. Linear(patch_len -> d_model, no bias) + positional embedding, dropout;
5. ``e_layers`` encoder layers: x = LayerNorm(x + Dropout(mixer(x))); FFN = Conv1d k1
   d_model -> d_ff, GELU, dropout, Conv1d k1 back, dropout; x = LayerNorm(x + FFN(x));
   the encoder ends in BatchNorm over d_model (TSLib's PatchTST encoder norm);
6. flatten head: (d_model, patch_num) flattened, Linear(d_model * patch_num -> H), dropout;
7. de-normalise with the window's mean and std.

``forecast`` kind: x (B, L, C) -> y (B, H, C). Hyperparameters (§9.1, ETTh1, L 96): e_layers 1,
d_model 512, d_ff 2048, dropout 0.1, n_heads 2 / 8 / 8 / 16 for H 96 / 192 / 336 / 720 (the
registered models use 2, the H 96 value; pass ``n_heads`` for the other horizons).

``mixer`` picks the sequence mixer over patches, the only module that differs between arms:

- ``"attention"``: multi-head self-attention as TSLib's AttentionLayer (Q/K/V/O linear maps with
  bias, scale 1/sqrt(d_model/H), dropout on the attention weights);
- ``"dense"``: JustDense (Park et al. 2025, arXiv 2508.09153) as the paper frames it, the first
  commit's placement: :class:`~m2bench.layers.dense_mixer.DenseMixer` where attention was. Its
  residual is inside the mixer, so the layer computes LayerNorm(x + Dropout(x + M~x)): the residual
  is applied twice, as in JustDense's HEAD code;
- ``"monarch"``: :class:`~m2bench.layers.mixer.M2SequenceMixer` (bidirectional, no residual long
  conv) over the patch_num patches, plugged in the same place.

The positional embedding is TSLib's fixed sinusoid (the official PatchTST learns one).
Deviations: the JustDense wrapper's in_proj/LayerNorm/out_proj are
not built (its forward never uses them), so ``patchtst_dense`` counts fewer parameters than the
fork's JDPatchTST. Attention maps are never returned.
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
    sinusoid,
)
from m2bench.errors import ConfigError


@dataclass(frozen=True)
class PatchTSTConfig:
    """PatchTST's settings (TSLib ETTh1 96 -> 96); the task sets seq_len, pred_len, enc_in."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C
    mark_dim: int = 0  # time features: accepted and ignored (PatchTST uses none, as TSLib)
    d_model: int = 512
    n_heads: int = 2  # TSLib ETTh1: 2 / 8 / 8 / 16 for H 96 / 192 / 336 / 720
    e_layers: int = 1
    d_ff: int = 2048
    dropout: float = 0.1  # embedding, attention weights, residual branches, FFN, head
    patch_len: int = 16
    stride: int = 8
    mixer: str = "attention"  # "attention" | "dense" | "monarch": the mixer over patches

    def __post_init__(self) -> None:
        for name in ("seq_len", "pred_len", "enc_in", "d_model", "n_heads", "e_layers", "d_ff",
                     "patch_len", "stride"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.seq_len + self.stride < self.patch_len:  # the end padding makes up the rest
            raise ConfigError(
                f"seq_len + stride ({self.seq_len} + {self.stride}) must be >= patch_len "
                f"({self.patch_len})"
            )
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mixer not in MIXERS:
            raise ConfigError(f"mixer must be one of {', '.join(MIXERS)}, got {self.mixer!r}")

    @property
    def patch_num(self) -> int:
        """Patches per series after the end padding of ``stride`` steps."""
        return (self.seq_len - self.patch_len) // self.stride + 2


class PatchTST(nn.Module):
    """PatchTST forecaster with a swappable patch mixer."""

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.pad = nn.ReplicationPad1d((0, c.stride))
        self.patch_embed = nn.Linear(c.patch_len, c.d_model, bias=False)
        self.register_buffer("pos", sinusoid(c.patch_num, c.d_model), persistent=False)
        self.embed_drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(
                build_mixer(c.mixer, c.patch_num, c.d_model, c.n_heads, c.dropout),
                c.d_model,
                c.d_ff,
                c.dropout,
            )  # fmt: skip
            for _ in range(c.e_layers)
        )
        self.norm = nn.BatchNorm1d(c.d_model)
        self.head = nn.Linear(c.d_model * c.patch_num, c.pred_len)
        self.head_drop = nn.Dropout(c.dropout)

    def _encode(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """(B*C, d, N) encoder output, with the window statistics (mean, std)."""
        c = self.config
        check_input("PatchTST", c, x)
        b, _, ch = x.shape
        z, mean, std = instance_norm(x, mask)
        z = self.pad(z.transpose(1, 2))  # (B, C, L + stride)
        z = z.unfold(-1, c.patch_len, c.stride).reshape(b * ch, c.patch_num, c.patch_len)
        h = self.embed_drop(self.patch_embed(z) + self.pos)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h.transpose(1, 2)), mean, std  # flattened d-major, as TSLib's head

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C * d_model * patch_num): the encoder output, flattened per sample."""
        h, _, _ = self._encode(x)
        return h.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                y_mark: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Forecast (B, H, C) from ``x`` (B, L, C); ``mask`` (1 = observed) for the statistics."""
        b, _, ch = x.shape
        h, mean, std = self._encode(x, mask)
        y = self.head_drop(self.head(h.reshape(b, ch, -1)))  # (B, C, H)
        return y.transpose(1, 2) * std + mean


register_family(
    "patchtst",
    PatchTST,
    PatchTSTConfig,
    describe="PatchTST (Nie et al. 2023), {mixer} patch mixer",
    original="attention",
    tiny=dict(d_model=32, n_heads=2, d_ff=64, e_layers=1),
    params_m={
        "patchtst": 3.7515,
        "patchtst_dense": 2.7012,
        "patchtst_monarch": 3.957,
        "patchtst_tiny": 0.0461,
        "patchtst_dense_tiny": 0.0421,
        "patchtst_monarch_tiny": 0.1225,
    },
)
