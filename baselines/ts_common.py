"""Building blocks and the model contract shared by m2bench's time-series models.

Every time-series model (registered with ``kind="forecast"``) is an ``nn.Module`` built from a
frozen config dataclass that has at least the geometry fields ``seq_len`` (L), ``pred_len`` (H),
``enc_in`` (C) and ``mark_dim`` (number of time-feature columns, 0 = none), and provides:

``forward(x, x_mark=None, y_mark=None, mask=None) -> (B, H, C)``
    x (B, L, C); x_mark (B, L, mark_dim) time features of the input steps or None; y_mark
    (B, H, mark_dim) time features of the output steps or None; mask (B, L, C) with 1 where x is
    observed and 0 where it is missing (imputation) or None. Forecasting builds the model with
    H = horizon; reconstruction tasks (imputation, anomaly detection) build it with H = L and pass
    y_mark = x_mark, so the output is the reconstructed input window.
``features(x, x_mark=None) -> (B, F)``
    the encoder's output before the model's own output head, flattened per sample; F is fixed at
    build time. The classification task puts its own head on it (:class:`ClassificationHead`).

Models never branch on the task: tasks choose the geometry and own any extra head. The sequence
mixer of each model is picked by ``mixer`` = ``"attention"`` (or the model's original mixer),
``"dense"`` (JustDense, :class:`~m2bench.layers.dense_mixer.DenseMixer`) or ``"monarch"``
(:class:`~m2bench.layers.mixer.M2SequenceMixer`).

The layers here follow the Time-Series-Library (TSLib) as described in
``shared/specs/timeseries_protocol.md`` §9.3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.layers.dense_mixer import DenseMixer
from m2bench.layers.mixer import M2SequenceMixer

MIXERS = ("attention", "dense", "monarch")


def sinusoid(n: int, d: int) -> torch.Tensor:
    """Transformer position table (n, d): sin at even, cos at odd features (TSLib)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(1e4) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return table


class DataEmbedding(nn.Module):
    """TSLib's DataEmbedding: value conv + sinusoidal position + time-feature linear, dropout.

    Value embedding: Conv1d(C -> d_model, kernel 3, circular padding, no bias, Kaiming-normal
    init); position: the fixed sinusoid; time features: Linear(mark_dim -> d_model, no bias),
    skipped when ``mark_dim`` is 0 or no marks are given.
    """

    def __init__(self, c_in: int, d_model: int, mark_dim: int = 0, dropout: float = 0.1,
                 max_len: int = 5000) -> None:  # fmt: skip
        super().__init__()
        self.value = nn.Conv1d(c_in, d_model, 3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.value.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("pos", sinusoid(max_len, d_model), persistent=False)
        self.mark = nn.Linear(mark_dim, d_model, bias=False) if mark_dim > 0 else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) values and optional (B, T, mark_dim) marks -> (B, T, d_model)."""
        h = self.value(x.transpose(1, 2)).transpose(1, 2) + self.pos[: x.shape[1]]
        if self.mark is not None and x_mark is not None:
            h = h + self.mark(x_mark)
        return self.drop(h)


def instance_norm(x: torch.Tensor, mask: torch.Tensor | None = None):
    """Per-window, per-channel (z, mean, std) over time, eps 1e-5, no affine (RevIN-style).

    With ``mask`` (1 = observed) the statistics use the observed entries only and the missing
    ones stay 0 in z, as TSLib's imputation models do.
    """
    if mask is None:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).detach()
        return (x - mean) / std, mean, std
    count = mask.sum(dim=1, keepdim=True).clamp_min(1)
    mean = ((x * mask).sum(dim=1, keepdim=True) / count).detach()
    centred = (x - mean) * mask
    std = torch.sqrt((centred * centred).sum(dim=1, keepdim=True) / count + 1e-5).detach()
    return centred / std, mean, std


def series_decomp(x: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(seasonal, trend) of ``x`` (B, L, C): trend = moving average with replicated ends."""
    pad = (kernel - 1) // 2
    padded = torch.cat([x[:, :1].expand(-1, pad, -1), x, x[:, -1:].expand(-1, pad, -1)], dim=1)
    trend = F.avg_pool1d(padded.transpose(1, 2), kernel, stride=1).transpose(1, 2)
    return x - trend, trend


class SelfAttention(nn.Module):
    """Multi-head attention with TSLib AttentionLayer's Q/K/V/O projections (with bias).

    ``forward(x)`` is self-attention; ``forward(x, memory)`` attends from x to memory
    (cross-attention); ``causal`` masks future keys (the decoder's self-attention).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:  # fmt: skip
        """Attend from the tokens of ``x`` (B, N, d) to ``memory`` (B, S, d; default x)."""
        mem = x if memory is None else memory
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.n_heads, -1).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(mem)), heads(self.value(mem))
        y = self.attend(q, k, v, causal)
        return self.out(y.transpose(1, 2).reshape(b, n, d))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               causal: bool) -> torch.Tensor:  # fmt: skip
        """Per-head attention (B, H, N, E): full softmax attention, scale 1/sqrt(E)."""
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)


def build_mixer(kind: str, n_tokens: int, d_model: int, n_heads: int, dropout: float) -> nn.Module:
    """A token mixer over ``n_tokens`` tokens: attention, JustDense's dense, or M2's Monarch.

    ``"dense"`` includes its own residual (JustDense's code), so a host layer computing
    norm(x + mixer(x)) applies the residual twice, as the reference does.
    """
    if kind == "dense":
        return DenseMixer(n_tokens, d_model, n_heads)
    if kind == "monarch":
        return M2SequenceMixer(d_model, n_tokens, bidirectional=True, residual_long_conv=False)
    if kind == "attention":
        return SelfAttention(d_model, n_heads, dropout)
    raise ValueError(f"mixer must be one of {', '.join(MIXERS)}, got {kind!r}")


class EncoderLayer(nn.Module):
    """TSLib encoder layer: x = norm1(x + drop(mixer(x))); x = norm2(x + FFN(x)).

    FFN = Conv1d k1 d_model -> d_ff, activation, dropout, Conv1d k1 back, dropout.
    """

    def __init__(self, mixer: nn.Module, d_model: int, d_ff: int, dropout: float,
                 activation: str = "gelu") -> None:  # fmt: skip
        super().__init__()
        self.mixer = mixer
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.conv1 = nn.Conv1d(d_model, d_ff, 1)
        self.conv2 = nn.Conv1d(d_ff, d_model, 1)
        self.drop = nn.Dropout(dropout)
        self.act = F.gelu if activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d)."""
        x = self.norm1(x + self.drop(self.mixer(x)))
        y = self.drop(self.act(self.conv1(x.transpose(1, 2))))
        y = self.drop(self.conv2(y).transpose(1, 2))
        return self.norm2(x + y)


class ClassificationHead(nn.Module):
    """TSLib's classification head on a model's flattened features: GELU, dropout, linear."""

    def __init__(self, n_features: int, n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(n_features, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, n_classes) logits."""
        return self.proj(self.drop(F.gelu(features)))


class Classifier(nn.Module):
    """A time-series model's ``features`` followed by a :class:`ClassificationHead`."""

    def __init__(self, backbone: nn.Module, n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        c = backbone.config
        with torch.no_grad():
            was = backbone.training
            backbone.eval()
            device = next(backbone.parameters()).device  # probe where the backbone lives
            probe = backbone.features(torch.zeros(2, c.seq_len, c.enc_in, device=device))
            backbone.train(was)
        self.head = ClassificationHead(probe.shape[1], n_classes, dropout).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, n_classes) logits."""
        return self.head(self.backbone.features(x))


def check_marks(name: str, config, x: torch.Tensor, x_mark: torch.Tensor | None,
                y_mark: torch.Tensor | None = None) -> None:  # fmt: skip
    """Raise a clear ValueError when given marks are not (B, seq_len / pred_len, mark_dim).

    Marks are optional (None is accepted); a model built with ``mark_dim`` 0 ignores them.
    """
    if config.mark_dim == 0:
        return
    for what, mark, steps in (("x_mark", x_mark, config.seq_len),
                              ("y_mark", y_mark, config.pred_len)):  # fmt: skip
        if mark is not None and tuple(mark.shape) != (x.shape[0], steps, config.mark_dim):
            raise ValueError(f"{name} was built for {what} (B {x.shape[0]}, {steps}, mark_dim "
                             f"{config.mark_dim}), got {tuple(mark.shape)}")  # fmt: skip


def check_input(name: str, config, x: torch.Tensor) -> None:
    """Raise a clear ValueError when ``x`` does not match the (seq_len, enc_in) built for."""
    if x.dim() != 3 or x.shape[1] != config.seq_len or x.shape[2] != config.enc_in:
        raise ValueError(f"{name} was built for (B, seq_len {config.seq_len}, enc_in "
                         f"{config.enc_in}), got {tuple(x.shape)}")  # fmt: skip


def register_family(prefix: str, model_cls: type, config_cls: type, *, describe: str,
                    original: str, tiny: dict, params_m: dict[str, float]) -> None:  # fmt: skip
    """Register ``prefix`` (the original mixer), ``prefix_dense``, ``prefix_monarch`` and the
    ``_tiny`` variant of each (``tiny``: the config overrides of the tiny size).

    ``describe`` is formatted with ``mixer``; ``params_m`` gives each name's parameter count in
    millions at the default geometry (L 96, H 96, C 7, mark_dim 0).
    """
    from dataclasses import replace

    from m2bench.registry import register_model

    def one(name: str, mixer: str, size: dict) -> None:
        desc = describe.format(mixer=mixer) + ", 96 -> 96" + (", tiny" if size else "")

        @register_model(name, kind="forecast", family="m2" if mixer == "monarch" else "baseline",
                        params_m=params_m[name], config_cls=config_cls,
                        description=desc)  # fmt: skip
        def build(**overrides: object) -> nn.Module:
            return model_cls(replace(config_cls(mixer=mixer, **size), **overrides))

    for arm, mixer in (("", original), ("_dense", "dense"), ("_monarch", "monarch")):
        one(prefix + arm, mixer, {})
        one(prefix + arm + "_tiny", mixer, tiny)
