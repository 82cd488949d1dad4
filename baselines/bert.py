"""BERT encoders through Hugging Face ``transformers`` (``BertModel`` without its pooler).

Paper: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (NAACL 2019, https://arxiv.org/abs/1810.04805). The model code is transformers'
``BertModel``; m2bench only configures, tokenises and loads it.

Matched against M2-BERT: ``bert_base`` has M2-BERT-80M's width and depth (d 768, 12 layers, FFN
3072), as in the Monarch Mixer paper's GLUE comparison; ``bert_large`` is d 1024, 24 layers, 16
heads, FFN 4096. Parameters are not matched (attention adds 4d^2 per layer).
``bert_base_eager``, ``bert_base_sdpa`` and ``bert_base_fa2`` differ only in the attention
implementation (explicit softmax, ``torch.nn.functional.scaled_dot_product_attention``, or the
``flash-attn`` package's FlashAttention-2 kernels, CUDA with half-precision activations only), for
throughput comparisons. ``bert_base_fa2`` needs ``flash-attn`` installed; without it, building
the model raises a one-line :class:`~m2bench.errors.ConfigError` (``m2bench bench`` records it in
the row's ``error`` column).

Tokenisation: the bert-base-uncased WordPiece files bundled with m2bench, through the same
function as M2-BERT (``m2bench.tokenization.tokenize_wordpiece_pairs``): ``[CLS] a [SEP] b
[SEP]``, token types 0/1, longest-first truncation to ``max_length`` (default the model's
``max_len``, 512), padded to the longest input of the batch (M2-BERT pads to its full length).

Weights: ``init="pretrained"`` loads ``BertModel.from_pretrained`` from ``--checkpoint`` (a hub id
or a folder written by :meth:`HFBertEncoder.save_pretrained`) or else the variant's hub id
(``bert-base-uncased``, ``bert-large-uncased``), online or from the Hugging Face cache; the hub
checkpoints' pooler and pretraining heads are dropped. When the weights cannot be had the model is
skipped (``WeightsUnavailable``), never run with random weights. Random init is transformers' own
(normal, std 0.02).

Deviations from the paper: none in the model; the hub weights are the original release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.registry import register_model
from m2bench.tokenization import tokenize_wordpiece_pairs

log = logging.getLogger(__name__)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
WORDPIECE_VOCAB = 30522  # ids of the bundled bert-base-uncased vocabulary


@dataclass(frozen=True)
class HFBertConfig:
    """Architecture of a BERT encoder; every field is a valid override."""

    d_model: int = 768  # hidden width
    n_layers: int = 12
    n_heads: int = 12
    d_intermediate: int = 3072  # FFN width
    max_len: int = 512  # position table; the default truncation length
    vocab_size: int = WORDPIECE_VOCAB
    dropout: float = 0.1  # hidden and attention-probability dropout
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2" (transformers)

    def __post_init__(self) -> None:
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation {self.attn_implementation!r} is not one of "
                f"{', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        sizes = ("d_model", "n_layers", "n_heads", "d_intermediate", "max_len")
        bad = [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]
        if bad:
            raise ConfigError(f"HFBertConfig sizes must be positive: {', '.join(bad)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.vocab_size < WORDPIECE_VOCAB:
            raise ConfigError(
                f"vocab_size {self.vocab_size} is below the {WORDPIECE_VOCAB} WordPiece ids"
            )


def _hf_config(config: HFBertConfig) -> object:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.d_intermediate,
        max_position_embeddings=config.max_len,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        attn_implementation=config.attn_implementation,
    )


class HFBertEncoder(nn.Module):
    """A ``transformers.BertModel`` (no pooler) behind the ``SequenceEncoder`` interface.

    Calling the module (``input_ids``, ``attention_mask``, ``token_type_ids``) returns the last
    hidden states (B, L, d), the ``encoder`` model kind.

    Args:
        config: architecture; must describe ``bert`` when that is given.
        bert: an already built ``BertModel`` (pretrained); ``None`` builds one at random.
        weights_source: where the weights came from (a run tag).
    """

    def __init__(
        self, config: HFBertConfig, bert: nn.Module | None = None, *, weights_source: str = "random"
    ) -> None:
        super().__init__()
        from transformers import BertModel

        self.config = config
        self.weights_source = weights_source
        self.bert = (
            bert if bert is not None else BertModel(_hf_config(config), add_pooling_layer=False)
        )

    @property
    def hidden_size(self) -> int:
        """Width d of the hidden states."""
        return self.config.d_model

    @property
    def max_length(self) -> int:
        """The most tokens of an input, ``max_len``."""
        return self.config.max_len

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden states (B, L, d) of ``input_ids`` (B, L), L <= max_len."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(
                f"input length {input_ids.shape[1]} exceeds max_len {self.config.max_len}"
            )
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state

    def tokenize_pairs(
        self, first: list[str], second: list[str] | None = None, *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Texts or pairs, truncated longest first, padded to the longest row of the batch."""
        return tokenize_wordpiece_pairs(
            first, second, max_length=max_length, limit=self.config.max_len, pad_to_limit=False
        )

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states (B, L, d) of a batch from :meth:`tokenize_pairs`."""
        return self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (transformers' format) to ``directory``.

        ``create_model(name, init="pretrained", checkpoint=directory)`` loads it back.
        """
        directory = Path(directory)
        _quiet_transformers()
        self.bert.save_pretrained(str(directory))
        return directory

    def run_tags(self) -> dict[str, str]:
        """Weights, attention code path and how inputs are cut (run tags)."""
        return {
            "weights_source": self.weights_source,
            "attn_implementation": self.config.attn_implementation,
            "max_length": str(self.config.max_len),
            "truncation": "longest first, [SEP]s kept, padded to the longest row",
        }


# --- loading and registered variants -----------------------------------------------------------

_PRETRAINED_OVERRIDES = ("attn_implementation", "dropout", "max_len")
_CONFIGS = {
    "bert_base": HFBertConfig(),
    "bert_large": HFBertConfig(d_model=1024, n_layers=24, n_heads=16, d_intermediate=4096),
    "bert_base_eager": HFBertConfig(attn_implementation="eager"),
    "bert_base_sdpa": HFBertConfig(attn_implementation="sdpa"),
    "bert_base_fa2": HFBertConfig(attn_implementation="flash_attention_2"),
    "bert_tiny": HFBertConfig(d_model=32, n_layers=2, n_heads=2, d_intermediate=128, max_len=128),
}


def _check_flash_attn(config: HFBertConfig) -> None:
    """FlashAttention-2 needs the ``flash-attn`` package: refuse in one line when it is missing."""
    import importlib.util

    if config.attn_implementation == "flash_attention_2" and (
        importlib.util.find_spec("flash_attn") is None
    ):
        raise ConfigError(
            "attn_implementation 'flash_attention_2' needs the flash-attn package, which is not "
            "installed here (`pip install flash-attn` on a CUDA machine); use bert_base_sdpa"
        )


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "~", "/")) or "\\" in source or source.count("/") > 1


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # m2bench shows its own progress


def _load(source: str, name: str, **overrides: object) -> HFBertEncoder:
    """Registry loader: ``BertModel.from_pretrained(source)`` behind :class:`HFBertEncoder`."""
    from transformers import BertModel

    bad = sorted(set(overrides) - set(_PRETRAINED_OVERRIDES))
    if bad:
        raise ConfigError(
            f"{name} with pretrained weights takes only {', '.join(_PRETRAINED_OVERRIDES)} "
            f"overrides (got {', '.join(bad)}); use --init random to change the architecture"
        )
    wanted = replace(_CONFIGS[name], **overrides)  # validates the overrides
    _check_flash_attn(wanted)
    if _looks_like_path(source) and not Path(source).expanduser().is_dir():
        raise WeightsUnavailable(f"no checkpoint directory {source!r} for {name}")
    _quiet_transformers()
    dropout = {}
    if "dropout" in overrides:
        dropout = dict(
            hidden_dropout_prob=wanted.dropout, attention_probs_dropout_prob=wanted.dropout
        )
    try:
        bert = BertModel.from_pretrained(
            source,
            add_pooling_layer=False,
            attn_implementation=wanted.attn_implementation,
            **dropout,
        )
    except Exception as exc:  # hub/cache errors come in many types; the reason is what matters
        lines = str(exc).strip().splitlines()
        reason = lines[0][:160] if lines else type(exc).__name__
        raise WeightsUnavailable(
            f"BERT weights {source} are not available here ({reason}); download them where the "
            f"hub is reachable (`hf download {source} --local-dir DIR`) and pass --checkpoint DIR"
        ) from None
    hf = bert.config
    max_len = overrides.get("max_len", hf.max_position_embeddings)
    if max_len > hf.max_position_embeddings:
        raise ConfigError(f"max_len {max_len} exceeds the {hf.max_position_embeddings} positions")
    config = HFBertConfig(
        d_model=hf.hidden_size,
        n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads,
        d_intermediate=hf.intermediate_size,
        max_len=max_len,
        vocab_size=hf.vocab_size,
        dropout=hf.hidden_dropout_prob,
        attn_implementation=wanted.attn_implementation,
    )
    log.info("loaded %s weights from %s", name, source)
    return HFBertEncoder(config, bert, weights_source=source).eval()  # as m2bench.checkpoints


def _build(name: str, overrides: dict) -> HFBertEncoder:
    config = replace(_CONFIGS[name], **overrides)
    _check_flash_attn(config)
    return HFBertEncoder(config)


# The first docstring line of each builder is its `m2bench list models` description.
_ENCODER = dict(kind="encoder", family="baseline", config_cls=HFBertConfig, loader=_load)


@register_model("bert_base", params_m=108.89, max_len=512, weights="bert-base-uncased", **_ENCODER)
def bert_base(**overrides: object) -> HFBertEncoder:
    """BERT-base (d 768, 12 layers, sdpa attention); truncates longest first to 512."""
    return _build("bert_base", overrides)


@register_model(
    "bert_large", params_m=334.09, max_len=512, weights="bert-large-uncased", **_ENCODER
)
def bert_large(**overrides: object) -> HFBertEncoder:
    """BERT-large (d 1024, 24 layers, sdpa attention); truncates longest first to 512."""
    return _build("bert_large", overrides)


@register_model(
    "bert_base_eager", params_m=108.89, max_len=512, weights="bert-base-uncased", **_ENCODER
)
def bert_base_eager(**overrides: object) -> HFBertEncoder:
    """BERT-base with eager (explicit softmax) attention; truncates longest first to 512."""
    return _build("bert_base_eager", overrides)


@register_model(
    "bert_base_sdpa", params_m=108.89, max_len=512, weights="bert-base-uncased", **_ENCODER
)
def bert_base_sdpa(**overrides: object) -> HFBertEncoder:
    """BERT-base with PyTorch sdpa attention; truncates longest first to 512."""
    return _build("bert_base_sdpa", overrides)


@register_model(
    "bert_base_fa2", params_m=108.89, max_len=512, weights="bert-base-uncased", **_ENCODER
)
def bert_base_fa2(**overrides: object) -> HFBertEncoder:
    """BERT-base with FlashAttention-2 (needs flash-attn, CUDA); truncates longest first to 512."""
    return _build("bert_base_fa2", overrides)


@register_model("bert_tiny", params_m=1.01, max_len=128, **_ENCODER)
def bert_tiny(**overrides: object) -> HFBertEncoder:
    """Tiny BERT (d 32, 2 layers, 2 heads, real WordPiece vocabulary) for tests and sample runs."""
    return _build("bert_tiny", overrides)
