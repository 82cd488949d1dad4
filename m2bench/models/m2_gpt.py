"""M2-GPT: an exactly causal Monarch Mixer language model (GPT-style blocks, no attention).

Paper: Fu et al., "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture" (NeurIPS 2023,
https://arxiv.org/abs/2310.12109): M2-GPT "matches GPT-style Transformers at 360M parameters in
pretraining perplexity on The PILE". No M2-GPT code, layer description or weights were released
(HazyResearch/m2 issue #7), so this file implements the m2bench proposal of
``shared/specs/m2_recipes.md`` section 4.2: the M2-BERT sequence mixer made causal, in pre-LN GPT
blocks. The LM recipe around it (tokenizer, tied head, init) is the lab's Hyena PILE setup
(HazyResearch/safari@02220c6 ``configs/experiment/pile/hyena.yaml``, ``src/models/sequence/
long_conv_lm.py``).

Computation (B batch, L <= max_len tokens, d width, V vocab):

- token embedding (V, d) with V = GPT-2's 50257 padded to 50264 (a multiple of 8); no position
  embedding (the convolutions see order); embedding dropout;
- ``n_layers`` pre-LN residual blocks, ``x = x + drop(mixer(ln1(x)))`` then
  ``x = x + drop(glu(ln2(x)))``:

  - mixer = :class:`~m2bench.layers.mixer.M2SequenceMixer` with ``bidirectional=False`` and
    ``residual_long_conv=False``: in-proj d -> 3d, causal depthwise short conv (width 3, t sees
    t-2..t), split x1, x2, v; ``v <- v * x1``; ``y = causal_conv(v, k) + D * v`` with one implicit
    Hyena filter per channel (positional features of ``hyena_emb_dim`` 5, MLP width
    ``hyena_order`` 128, Sin frequency 10, exponential decay: M2-BERT's filter without its reverse
    kernel), ``y <- y * x2``; out-proj d -> d;
  - glu = ``fc_out(GELU(g) * v)`` with ``[g, v] = fc_in(h)``, both block-diagonal with
    ``monarch_blocks`` 4 blocks (fc_in d -> 2·I without bias, fc_out I -> d with bias,
    I = ``mlp_ratio`` · d): M2-BERT's GLU without its internal residual and post-LayerNorm, which
    the pre-LN block provides;

- final LayerNorm; LM head tied to the token embedding -> logits (B, L, V).

Causality. The long convolution (``m2bench.layers.long_conv.fft_conv`` without reverse kernel)
zero-pads the input and the length-L kernel to an FFT of size 2L, so the circular convolution
equals the linear one and ``y[t] = sum_{s<=t} k[t-s] v[s] + D v[t]`` exactly (up to FFT rounding);
the short conv pads both sides and keeps its first L outputs; everything else acts per position.
Filter values at position j do not depend on L, so a prefix of an input gets the logits of the
first positions of the whole input. ``tests/test_m2_gpt.py`` checks both, and that a
bidirectional mixer fails the same checks. "Exactly" holds up to rounding: the FFT's rounding
error is spread over all positions, so future tokens move earlier outputs by ~1e-7 of max|logits|
in float32 (~1e-17 of the Jacobian in float64). Under bf16 autocast such a change can flip a bf16
rounding: on an H200 (d 256, 4 layers, L 1024) changing the tokens after t moved the logits at
positions <= t by up to 3e-3 of max|logits| (one bf16 step), against 5e-7 in float32.

Initialisation (GPT-2 / safari LM): every ``nn.Linear`` (the implicit-filter MLPs included, as
safari's LM and M2-BERT do), every block-diagonal weight and the embedding N(0, 0.02), biases 0;
the output projection of each residual branch (``mixer.out_proj`` and ``glu.fc_out``) N(0,
0.02 / sqrt(2 · n_layers)) (GPT-2's scaled init of the residual projections, safari's
``rescale_prenorm_residual``). LayerNorms, the short conv, the skip D (randn) and the filters'
positional features keep their own inits.

Training FLOPs (:meth:`M2GPT.flops_per_token`, used for MFU): see :func:`flops_per_token`.

Deviations and open points (there is no official code to match):

- The proposal's Monarch (four-step FFT) factorisation of the causal convolution is not
  implemented; the convolution runs ``torch.fft`` (the proposal's reference twin), in float32 for
  half-precision inputs. The implicit filters are always computed in float32.
- One filter per channel (the proposal's ``heads`` option, H3-style filter sharing, is absent).
- Optimizer groups (:meth:`M2GPT.optimizer_groups`): filter MLPs and Sin frequency at the base lr
  without weight decay (safari HyenaFilter ``wd=0``, PILE ``lr: ${optimizer.lr}``); positional
  features ``z`` at lr 1e-5 without decay (HyenaFilter's ``lr_pos_emb`` default and M2-BERT; the
  safari PILE config sets it to the base lr instead).
- Filter: ``hyena_emb_dim`` 5, order 128 and Sin frequency 10 as M2-BERT (two inner order x order
  layers, as safari's default), not safari's PILE Hyena (emb_dim 33, order 64, w 14).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.errors import ConfigError
from m2bench.layers import check_kernel, triton_coverage
from m2bench.layers.long_conv import hyena_param_groups
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.layers.monarch import BlockdiagLinear
from m2bench.registry import register_model

__all__ = ["M2GPT", "M2GPTConfig", "flops_per_token"]

_INIT_STD = 0.02  # GPT-2 / safari initializer_range
_POS_EMB_LR = 1e-5  # lr of the filters' positional features z (Hyena lr_pos_emb default)


@dataclass(frozen=True)
class M2GPTConfig:
    """Architecture of an M2-GPT language model; every field is a valid override."""

    vocab_size: int = 50264  # GPT-2's 50257 padded to a multiple of 8
    d_model: int = 1024  # width d
    n_layers: int = 12
    max_len: int = 2048  # context length = implicit-filter length; longer inputs are refused
    mlp_ratio: float = 4.0  # GLU activation width I = int(d_model * mlp_ratio)
    monarch_blocks: int = 4  # blocks of the block-diagonal GLU weights
    dropout: float = 0.0  # after the embedding and on each residual branch
    hyena_order: int = 128  # hidden width of the implicit-filter MLP
    hyena_emb_dim: int = 5  # positional features per position: t and 2 frequency bands
    hyena_freq_init: float = 10.0  # initial shared Sin frequency (M2-BERT's hyena_w)
    short_conv_size: int = 3  # taps of the causal depthwise short conv
    kernel: str = "torch"  # "torch" | "triton", passed to the layers
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_kernel(self.kernel)
        sizes = ("vocab_size", "d_model", "n_layers", "max_len", "monarch_blocks", "hyena_order")
        sizes += ("short_conv_size",)
        bad = [f"{n}={getattr(self, n)}" for n in sizes if getattr(self, n) < 1]
        if bad:
            raise ConfigError(f"M2GPTConfig sizes must be positive: {', '.join(bad)}")
        if self.d_model % self.monarch_blocks:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by monarch_blocks={self.monarch_blocks}"
            )
        if self.mlp_ratio <= 0 or self.d_intermediate % self.monarch_blocks:
            raise ConfigError(
                f"mlp_ratio={self.mlp_ratio}: the GLU width int(d_model * mlp_ratio)="
                f"{self.d_intermediate} must be positive and divisible by "
                f"monarch_blocks={self.monarch_blocks}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.hyena_emb_dim < 3 or self.hyena_emb_dim % 2 == 0:
            raise ConfigError(f"hyena_emb_dim must be odd and >= 3, got {self.hyena_emb_dim}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @property
    def d_intermediate(self) -> int:
        """Width I of the gated GLU activation."""
        return int(self.d_model * self.mlp_ratio)


def _make_config(defaults: M2GPTConfig, overrides: dict) -> M2GPTConfig:
    """``replace(defaults, **overrides)``; unknown keys raise listing the valid fields."""
    valid = [f.name for f in fields(M2GPTConfig)]
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ConfigError(f"M2-GPT has no setting {', '.join(bad)}; valid: {', '.join(valid)}")
    return replace(defaults, **overrides)


class BlockdiagGatedMlp(nn.Module):
    """``fc_out(GELU(g) * v)``, ``[g, v] = fc_in(h)``; block-diagonal, no norm or residual.

    Shapes: (..., d) -> (..., d). fc_in d -> 2I (the first I outputs gate), fc_out I -> d.
    """

    def __init__(self, config: M2GPTConfig) -> None:
        super().__init__()
        d, inner, nblocks = config.d_model, config.d_intermediate, config.monarch_blocks
        self.d_intermediate = inner
        self.fc_in = BlockdiagLinear(d, 2 * inner, nblocks, bias=False, kernel=config.kernel)
        self.fc_out = BlockdiagLinear(inner, d, nblocks, bias=True, kernel=config.kernel)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to the last dimension of ``h``."""
        gate, value = self.fc_in(h).split(self.d_intermediate, dim=-1)
        return self.fc_out(F.gelu(gate) * value)


class M2GPTBlock(nn.Module):
    """Pre-LN residual block: causal M2 mixer, then block-diagonal GLU; (B, L, d) -> same."""

    def __init__(self, config: M2GPTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mixer = M2SequenceMixer(
            d,
            config.max_len,
            hyena_order=config.hyena_order,
            hyena_emb_dim=config.hyena_emb_dim,
            hyena_freq_init=config.hyena_freq_init,
            bidirectional=False,
            residual_long_conv=False,
            short_conv_size=config.short_conv_size,
            kernel=config.kernel,
        )
        self.ln2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.glu = BlockdiagGatedMlp(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, L, d)."""
        x = x + self.drop(self.mixer(self.ln1(x)))
        return x + self.drop(self.glu(self.ln2(x)))


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) dense, block-diagonal and embedding weights; zero biases."""
    if isinstance(module, (nn.Linear, BlockdiagLinear, nn.Embedding)):
        nn.init.normal_(module.weight, std=_INIT_STD)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def flops_per_token(model: M2GPT, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of ``model`` at context ``seq_len``.

    ``6 · (P_matmul + d · V) + 3 · n_layers · d · (10 · log2(2L) + 6)``, L = ``seq_len``:

    - ``P_matmul``: weights of the per-token matmuls of the blocks (in-proj 3d², out-proj d²,
      block-diagonal fc_in and fc_out, 2·I·d/blocks + I·d/blocks = 3d² at I = 4d, 4 blocks;
      about 7d² per layer), ``d · V`` the tied LM head (the embedding lookup is free); 2 FLOPs per
      weight forward, backward twice the forward (the usual ``6 N``).
    - Long convolution, per layer and channel: a real FFT of size N = 2L costs ``2.5 N log2 N``
      (half of the complex FFT's ``5 N log2 N``); forward = rfft of the input + irfft of the
      product + the complex product (6 FLOPs at N/2 + 1 frequencies), ``≈ 5 N log2 N + 3 N`` per
      sequence, i.e. ``10 log2(2L) + 6`` per token and channel; backward (gradients of the input
      and of the kernel, reusing the forward spectra) counted as twice the forward.

    Left out: the implicit-filter MLP and the kernel's FFT (computed once per forward for the
    whole batch, ``O(L · (order² + order · d))``, i.e. a share of 1/B of the matmul term's
    order-²/d² fraction), the short conv (18d per layer), norms, gates, GELU and the skip D.

    Raises:
        ValueError: ``seq_len`` outside 1..max_len.
    """
    c = model.config
    if not 1 <= seq_len <= c.max_len:
        raise ValueError(f"seq_len must be in 1..max_len={c.max_len}, got {seq_len}")
    matmul = sum(
        layer.weight.numel()
        for block in model.blocks
        for layer in (block.mixer.in_proj, block.mixer.out_proj, block.glu.fc_in, block.glu.fc_out)
    )
    head = c.d_model * c.vocab_size
    fft = 3 * c.n_layers * c.d_model * (10 * math.log2(2 * seq_len) + 6)
    return float(6 * (matmul + head) + fft)


class M2GPT(nn.Module):
    """M2-GPT (``causal_lm`` kind): ``input_ids`` (B, L) -> logits (B, L, vocab_size)."""

    def __init__(self, config: M2GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(M2GPTBlock(config) for _ in range(config.n_layers))
        self.norm_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(_init_weights)
        residual_std = _INIT_STD / math.sqrt(2 * config.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.mixer.out_proj.weight, std=residual_std)
            nn.init.normal_(block.glu.fc_out.weight, std=residual_std)
        self.lm_head.weight = self.embed.weight  # tied

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, vocab_size) of ``input_ids`` (B, L), 1 <= L <= max_len."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        if not 1 <= input_ids.shape[1] <= self.config.max_len:
            raise ValueError(
                f"input length {input_ids.shape[1]} is outside 1..max_len={self.config.max_len} "
                "(the context length the implicit filters were built for); cut the input or "
                "rebuild with a larger max_len"
            )
        x = self.drop(self.embed(input_ids))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))

    @property
    def max_length(self) -> int:
        """The context length, ``max_len``."""
        return self.config.max_len

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token at context ``seq_len`` (see :func:`flops_per_token`)."""
        return flops_per_token(self, seq_len)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The implicit filters' groups; the caller places every other parameter.

        Filter MLPs and their Sin frequency train at ``lr`` without weight decay (safari Hyena
        LM), the filters' positional features ``z`` at lr 1e-5 without decay. The skip D of the
        long convolution (1-D) is left to the caller's no-decay rule.
        """
        del weight_decay  # filter weight decay is 0 whatever the base value
        return hyena_param_groups(self, lr, pos_lr=_POS_EMB_LR)

    def run_tags(self) -> dict[str, str]:
        """Which implementation and mixer run, and the context length (run tags)."""
        c = self.config
        return {
            "kernel": c.kernel,
            "kernel_impl": "torch" if c.kernel == "torch" else triton_coverage(),
            "mixer": "m2 causal",
            "max_length": str(c.max_len),
        }


# --- registered variants -----------------------------------------------------------------------

# Sizes (count_params, tied head counted once; ~7d² per layer + filters + 50264·d embedding):
# 145m: d 1024 is the multiple of 64 closest to 145M (141.9M; d 1088 gives 156.6M);
# 360m: d 1312 x 24 (spec 4.2) = 360.9M; 20m: d 256 x 12 = 19.30M against gpt_20m's 19.45M
# (13 layers give 19.84M, +2.0%); tiny: 3.36M, of which 0.15M outside the embedding.
_LM = dict(kind="causal_lm", family="m2", config_cls=M2GPTConfig)
_145M = M2GPTConfig(d_model=1024, n_layers=12, max_len=2048)
_360M = M2GPTConfig(d_model=1312, n_layers=24, max_len=2048)
_20M = M2GPTConfig(d_model=256, n_layers=12, max_len=1024)
_TINY = M2GPTConfig(d_model=64, n_layers=2, max_len=256)


@register_model("m2_gpt_145m", params_m=141.93, max_len=2048, **_LM)
def m2_gpt_145m(**overrides: object) -> M2GPT:
    """M2-GPT, the paper's ~145M class (d 1024, 12 layers, context 2048)."""
    return M2GPT(_make_config(_145M, overrides))


@register_model("m2_gpt_360m", params_m=360.92, max_len=2048, **_LM)
def m2_gpt_360m(**overrides: object) -> M2GPT:
    """M2-GPT, the paper's 360M class (d 1312, 24 layers, context 2048)."""
    return M2GPT(_make_config(_360M, overrides))


@register_model("m2_gpt_20m", params_m=19.30, max_len=1024, **_LM)
def m2_gpt_20m(**overrides: object) -> M2GPT:
    """M2-GPT matched in parameters to the GPT-2-style gpt_20m (d 256, 12 layers, context 1024)."""
    return M2GPT(_make_config(_20M, overrides))


@register_model("m2_gpt_tiny", params_m=3.36, max_len=256, **_LM)
def m2_gpt_tiny(**overrides: object) -> M2GPT:
    """Tiny M2-GPT (d 64, 2 layers, context 256) for tests and sample runs."""
    return M2GPT(_make_config(_TINY, overrides))
