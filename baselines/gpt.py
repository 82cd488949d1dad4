"""Causal-LM baselines for M2-GPT: GPT-2 through ``transformers`` and a causal dense-mixer GPT.

Papers: GPT-2, Radford et al., "Language Models are Unsupervised Multitask Learners" (OpenAI
2019, https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf);
the dense mixer is JustDense (Park et al., "JustDense: Just using Dense instead of Sequence Mixer
for Time Series analysis", 2025, https://arxiv.org/abs/2508.09153), made causal here. The GPT-2
network code is transformers' ``GPT2LMHeadModel``; the dense GPT is implemented here from the
papers' descriptions.

Contract (``causal_lm`` kind): ``forward(input_ids (B, L))`` returns logits (B, L, vocab_size) as
a plain tensor, L <= ``max_len``; ``flops_per_token(seq_len)`` and ``run_tags()``.

Both models are GPT-2 blocks: learned absolute position embeddings (``max_len`` of them), pre-LN
(``x + mix(ln1(x))``, ``x + mlp(ln2(x))``), GELU MLP d -> 4d -> d (GPT-2's tanh-approximated GELU,
``gelu_new``), final LayerNorm and an LM head tied to the token embedding. Vocabulary 50264 = the
50257 GPT-2 BPE ids (M2-GPT's tokenizer) padded to a multiple of 8. Dropout (embeddings, residual
branches, attention probabilities) defaults to 0. Random init only (no released weights have this
context length and vocabulary): GPT-2's normal(0.02), output projections of the residual branches
normal(0.02 / sqrt(2 n_layers)).

- ``gpt_*``: mixer = causal multi-head self-attention through ``sdpa`` (``attn_implementation``).
  ``gpt_125m`` is GPT-2 small (d 768, 12 layers, 12 heads), ``gpt_355m`` GPT-2 medium (d 1024, 24
  layers, 16 heads), both at M2-GPT's 2048 context (GPT-2 had 1024); ``gpt_20m`` (d 256, 8 layers,
  8 heads, 1024 context) is the 10-30M proof size, matched in parameters by ``m2_gpt_20m``.
- ``dense_gpt_*``: mixer = one learned (L, L) matrix M per layer, L = ``max_len``, shared by all
  channels and masked to its lower triangle: ``y = tril(M)[:L', :L'] @ x / sqrt(L)`` for an input of
  length L' <= L, so position t mixes positions <= t only. Xavier-uniform init, upper triangle
  zeroed (it gets zero gradient). No q/k/v, no output projection, no heads (``n_heads`` must be 1).

Training FLOPs per token (forward + backward = 3 x forward, multiply-add = 2 FLOPs), V vocab, d
width, n layers, S = ``seq_len``; embeddings and biases, norms and softmax are not counted:

- GPT: ``6 (12 n d^2 + d V) + 6 n S d``: the q/k/v/out and MLP matrices, the tied head, and
  Kaplan et al.'s (2020) attention term (QK^T and AV, causal so half of the S x S entries).
- dense GPT: ``6 (8 n d^2 + d V) + 6 n S d``: the MLP matrices, the tied head, and the S x S mixing
  matmul as executed (full, masked; half of it multiplies zeros).

Deviations: JustDense uses a plain (bidirectional, per-channel-shared) dense layer; here it is
masked causal, scaled by 1/sqrt(L) (as m2bench's dense BERT and dense ViT), inside a GPT-2 block.
``dense_gpt_20m`` keeps ``gpt_20m``'s width, depth and context, so its 8 1024 x 1024 mixers make it
larger than ``gpt_20m`` (25.7M vs 19.4M parameters): width/depth matched, not parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.errors import ConfigError
from m2bench.registry import register_model

GPT2_BPE_VOCAB = 50257  # ids of the GPT-2 byte-level BPE tokenizer
PADDED_VOCAB = 50264  # 50257 rounded up to a multiple of 8 (tensor-core friendly)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
_INIT_STD = 0.02  # GPT-2's initializer_range


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a GPT-2 style Transformer LM; every field is a valid override."""

    vocab_size: int = PADDED_VOCAB
    d_model: int = 768  # width d
    n_layers: int = 12
    n_heads: int = 12
    max_len: int = 2048  # context: the learned position table
    dropout: float = 0.0  # embeddings, residual branches, attention probabilities
    layer_norm_eps: float = 1e-5
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" (transformers' attention code path)

    def __post_init__(self) -> None:
        _check_common(self)
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation {self.attn_implementation!r} is not one of "
                f"{', '.join(ATTN_IMPLEMENTATIONS)}"
            )


@dataclass(frozen=True)
class DenseGPTConfig:
    """Architecture of a causal dense-mixer GPT; every field is a valid override."""

    vocab_size: int = PADDED_VOCAB
    d_model: int = 256  # width d
    n_layers: int = 8
    n_heads: int = 1  # the mixer is shared by all channels: one "head" (kept for the LM contract)
    max_len: int = 1024  # L: context and size of each mixing matrix
    dropout: float = 0.0  # embeddings and residual branches
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_common(self)
        if self.n_heads != 1:
            raise ConfigError(
                f"n_heads {self.n_heads}: the dense mixer has one matrix shared by all channels; "
                "n_heads must be 1"
            )


def _check_common(config: GPTConfig | DenseGPTConfig) -> None:
    """Positive sizes, whole heads, dropout in [0, 1): ``ConfigError`` naming the fields."""
    name = type(config).__name__
    sizes = ("vocab_size", "d_model", "n_layers", "n_heads", "max_len")
    bad = [f"{s}={getattr(config, s)}" for s in sizes if getattr(config, s) < 1]
    if bad:
        raise ConfigError(f"{name} sizes must be positive: {', '.join(bad)}")
    if config.d_model % config.n_heads:
        raise ConfigError(
            f"{name}: d_model {config.d_model} is not a multiple of n_heads {config.n_heads}"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"{name}: dropout {config.dropout} is not in [0, 1)")


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(f"input length {length} exceeds max_len {max_len} (the model's context)")


def _train_flops_per_token(
    config: GPTConfig | DenseGPTConfig, matmul_params: int, seq_len: int
) -> float:
    """``6 (matmul_params + d V) + 6 n_layers seq_len d`` (see the module docstring)."""
    if not 1 <= seq_len <= config.max_len:
        raise ValueError(f"seq_len {seq_len} is not in [1, max_len {config.max_len}]")
    d = config.d_model
    return 6.0 * (matmul_params + d * config.vocab_size) + 6.0 * config.n_layers * seq_len * d


# --- GPT-2 through transformers -----------------------------------------------------------------


def _hf_config(config: GPTConfig) -> object:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_len,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=4 * config.d_model,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        initializer_range=_INIT_STD,
        tie_word_embeddings=True,
        use_cache=False,
        attn_implementation=config.attn_implementation,
    )


class HFGPT(nn.Module):
    """A randomly initialised ``transformers.GPT2LMHeadModel`` behind the ``causal_lm`` contract.

    Args:
        config: architecture.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.config = config
        self.gpt = GPT2LMHeadModel(_hf_config(config))  # no download; follows torch.device(...)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, vocab_size) of ``input_ids`` (B, L), L <= max_len."""
        _check_length(input_ids.shape[1], self.config.max_len)
        return self.gpt(input_ids=input_ids, use_cache=False).logits

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: ``6 (12 n d^2 + d V) + 6 n seq_len d``."""
        c = self.config
        return _train_flops_per_token(c, 12 * c.n_layers * c.d_model**2, seq_len)

    def run_tags(self) -> dict[str, str]:
        """Mixer, attention code path and context (run tags; where the weights came from is the
        runner's and the task's ``init``/``weights_source``: a model tag would override them)."""
        return {
            "mixer": "attention",
            "attn_implementation": self.config.attn_implementation,
            "max_length": str(self.config.max_len),
        }


# --- causal dense-mixer GPT ---------------------------------------------------------------------


class CausalDenseMixer(nn.Module):
    """``tril(M)[:L', :L'] @ x / sqrt(L)`` with one learned (L, L) matrix M: (B, L', d) -> same."""

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, max_len))
        self.scale = 1.0 / math.sqrt(max_len)
        nn.init.xavier_uniform_(self.weight)
        with torch.no_grad():  # the upper triangle is never used; keep the parameter honest
            self.weight.copy_(torch.tril(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix the positions of ``x`` (B, L', d) causally: output t depends on inputs <= t."""
        n = x.shape[1]
        _check_length(n, self.weight.shape[0])
        return torch.matmul(torch.tril(self.weight[:n, :n]).to(x.dtype), x) * self.scale


class DenseGPTBlock(nn.Module):
    """Pre-LN GPT-2 block with the causal dense mixer in place of attention."""

    def __init__(self, config: DenseGPTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mixer = CausalDenseMixer(config.max_len)
        self.ln2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.fc_in = nn.Linear(d, 4 * d)
        self.fc_out = nn.Linear(4 * d, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, L, d)."""
        x = x + self.dropout(self.mixer(self.ln1(x)))
        return x + self.dropout(self.fc_out(F.gelu(self.fc_in(self.ln2(x)), approximate="tanh")))


class DenseGPT(nn.Module):
    """Causal dense-mixer GPT implementing the ``causal_lm`` contract; the head is tied to ``wte``.

    Args:
        config: architecture.
    """

    def __init__(self, config: DenseGPTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.max_len, d)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DenseGPTBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        self.lm_head.weight = self.wte.weight

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's init; mixers keep their Xavier init; ``fc_out`` scaled by 1/sqrt(2 n_layers)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=_INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=_INIT_STD)
        if isinstance(module, DenseGPTBlock):
            nn.init.normal_(
                module.fc_out.weight, std=_INIT_STD / math.sqrt(2 * self.config.n_layers)
            )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, vocab_size) of ``input_ids`` (B, L), L <= max_len."""
        _check_length(input_ids.shape[1], self.config.max_len)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.dropout(self.wte(input_ids) + self.wpe(positions)[None])
        for block in self.blocks:
            h = block(h)
        return self.lm_head(self.ln_f(h))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: ``6 (8 n d^2 + d V) + 6 n seq_len d``."""
        c = self.config
        return _train_flops_per_token(c, 8 * c.n_layers * c.d_model**2, seq_len)

    def run_tags(self) -> dict[str, str]:
        """Mixer and context (run tags; the weights' source is the runner's and the task's)."""
        return {"mixer": "dense_causal", "max_length": str(self.config.max_len)}


# --- registered variants ------------------------------------------------------------------------

_CONFIGS: dict[str, GPTConfig | DenseGPTConfig] = {
    "gpt_125m": GPTConfig(),
    "gpt_355m": GPTConfig(d_model=1024, n_layers=24, n_heads=16),
    "gpt_20m": GPTConfig(d_model=256, n_layers=8, n_heads=8, max_len=1024),
    "gpt_tiny": GPTConfig(d_model=64, n_layers=2, n_heads=2, max_len=256),
    "dense_gpt_20m": DenseGPTConfig(),
    "dense_gpt_tiny": DenseGPTConfig(d_model=64, n_layers=2, max_len=256),
}


def _build(name: str, overrides: dict) -> HFGPT | DenseGPT:
    config = replace(_CONFIGS[name], **overrides)
    return HFGPT(config) if isinstance(config, GPTConfig) else DenseGPT(config)


# The first docstring line of each builder is its `m2bench list models` description.
_GPT = dict(kind="causal_lm", family="baseline", config_cls=GPTConfig)
_DENSE = dict(kind="causal_lm", family="baseline", config_cls=DenseGPTConfig)


@register_model("gpt_125m", params_m=125.23, max_len=2048, **_GPT)
def gpt_125m(**overrides: object) -> HFGPT:
    """GPT-2 small (d 768, 12 layers, 12 heads, sdpa) at 2048 context; random init."""
    return _build("gpt_125m", overrides)


@register_model("gpt_355m", params_m=355.88, max_len=2048, **_GPT)
def gpt_355m(**overrides: object) -> HFGPT:
    """GPT-2 medium (d 1024, 24 layers, 16 heads, sdpa) at 2048 context; random init."""
    return _build("gpt_355m", overrides)


@register_model("gpt_20m", params_m=19.45, max_len=1024, **_GPT)
def gpt_20m(**overrides: object) -> HFGPT:
    """GPT-2 style LM (d 256, 8 layers, 8 heads, 1024 context), the size of m2_gpt_20m."""
    return _build("gpt_20m", overrides)


@register_model("gpt_tiny", params_m=3.33, max_len=256, **_GPT)
def gpt_tiny(**overrides: object) -> HFGPT:
    """Tiny GPT-2 style LM (d 64, 2 layers, 2 heads, 256 context) for tests and sample runs."""
    return _build("gpt_tiny", overrides)


@register_model("dense_gpt_20m", params_m=25.73, max_len=1024, **_DENSE)
def dense_gpt_20m(**overrides: object) -> DenseGPT:
    """Causal dense-mixer GPT (d 256, 8 layers, 1024 x 1024 lower-triangular mixers)."""
    return _build("dense_gpt_20m", overrides)


@register_model("dense_gpt_tiny", params_m=3.43, max_len=256, **_DENSE)
def dense_gpt_tiny(**overrides: object) -> DenseGPT:
    """Tiny causal dense-mixer GPT (d 64, 2 layers, 256 x 256 mixers) for tests and sample runs."""
    return _build("dense_gpt_tiny", overrides)
