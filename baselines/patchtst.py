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

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.errors import ConfigError
from m2bench.layers.dense_mixer import DenseMixer
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.registry import register_model

MIXERS = ("attention", "dense", "monarch")


@dataclass(frozen=True)
class PatchTSTConfig:
    """PatchTST's settings (TSLib ETTh1 96 -> 96); the task sets seq_len, pred_len, enc_in."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C
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
        if self.seq_len < self.patch_len:
            raise ConfigError(f"seq_len ({self.seq_len}) must be >= patch_len ({self.patch_len})")
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


class SelfAttention(nn.Module):
    """Multi-head self-attention with TSLib AttentionLayer's Q/K/V/O projections."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the tokens of ``x`` (B, N, d); returns (B, N, d)."""
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.n_heads, -1).transpose(1, 2)
                   for p in (self.query, self.key, self.value))  # fmt: skip
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # scale 1/sqrt(d / H)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


def build_mixer(c: PatchTSTConfig) -> nn.Module:
    """The sequence mixer over ``c.patch_num`` patches named by ``c.mixer``."""
    if c.mixer == "dense":
        return DenseMixer(c.patch_num, c.d_model, c.n_heads)
    if c.mixer == "monarch":
        return M2SequenceMixer(c.d_model, c.patch_num, bidirectional=True, residual_long_conv=False)
    return SelfAttention(c.d_model, c.n_heads, c.dropout)


class EncoderLayer(nn.Module):
    """TSLib encoder layer: mixer and position-wise FFN, each with residual, dropout and norm."""

    def __init__(self, c: PatchTSTConfig) -> None:
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


def _sinusoid(n: int, d: int) -> torch.Tensor:
    """Transformer position table: sin at even, cos at odd features (TSLib PositionalEmbedding)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(
        torch.arange(0, d, 2, dtype=torch.float32) * (-torch.log(torch.tensor(1e4)) / d)
    )
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return table


class PatchTST(nn.Module):
    """PatchTST forecaster with a swappable patch mixer."""

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.pad = nn.ReplicationPad1d((0, c.stride))
        self.patch_embed = nn.Linear(c.patch_len, c.d_model, bias=False)
        self.register_buffer("pos", _sinusoid(c.patch_num, c.d_model), persistent=False)
        self.embed_drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.e_layers))
        self.norm = nn.BatchNorm1d(c.d_model)
        self.head = nn.Linear(c.d_model * c.patch_num, c.pred_len)
        self.head_drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast (B, H, C) from the input window ``x`` (B, L, C)."""
        c = self.config
        b, length, ch = x.shape
        if length != c.seq_len or ch != c.enc_in:
            raise ValueError(
                f"PatchTST was built for (seq_len {c.seq_len}, enc_in {c.enc_in}), "
                f"got ({length}, {ch})"
            )
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).detach()
        z = self.pad(((x - mean) / std).transpose(1, 2))  # (B, C, L + stride)
        z = z.unfold(-1, c.patch_len, c.stride).reshape(b * ch, c.patch_num, c.patch_len)
        h = self.embed_drop(self.patch_embed(z) + self.pos)
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h.transpose(1, 2))  # (B*C, d, N): flattened d-major, as TSLib's head
        y = self.head_drop(self.head(h.reshape(b, ch, -1)))  # (B, C, H)
        return y.transpose(1, 2) * std + mean


def _register(name: str, mixer: str, params_m: float, tiny: bool) -> None:
    size = dict(d_model=32, n_heads=2, d_ff=64, e_layers=1) if tiny else {}
    family = "m2" if mixer == "monarch" else "baseline"
    desc = f"PatchTST (Nie et al. 2023), {mixer} patch mixer, 96 -> 96{', tiny' if tiny else ''}"

    @register_model(name, kind="forecast", family=family, params_m=params_m,
                    config_cls=PatchTSTConfig, description=desc)  # fmt: skip
    def build(**overrides: object) -> PatchTST:
        return PatchTST(replace(PatchTSTConfig(mixer=mixer, **size), **overrides))


# params_m: count_params at the default geometry (L 96, H 96, C 7).
_register("patchtst", "attention", 3.7515, tiny=False)
_register("patchtst_dense", "dense", 2.7012, tiny=False)
_register("patchtst_monarch", "monarch", 3.957, tiny=False)
_register("patchtst_tiny", "attention", 0.0461, tiny=True)
_register("patchtst_dense_tiny", "dense", 0.0421, tiny=True)
_register("patchtst_monarch_tiny", "monarch", 0.1225, tiny=True)
