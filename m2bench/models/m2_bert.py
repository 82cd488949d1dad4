"""M2-BERT: a BERT-style encoder whose attention and MLP are replaced by Monarch Mixer layers.

Paper: Fu et al., "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture" (NeurIPS 2023,
https://arxiv.org/abs/2310.12109); long-context retrieval encoders from Saad-Falcon et al.,
"Benchmarking and Building Long-Context Retrieval Models with LoCo and M2-BERT" (ICML 2024,
https://arxiv.org/abs/2402.07440).

Computation (B batch, L length <= max_len, d width; eval mode):

- embeddings: LayerNorm(word + token_type + learned absolute position), (B, L, d);
- each layer: h = M2SequenceMixer(x) (no residual, no norm), out = LayerNorm(GLU(h) + h) with
  block-diagonal GLU weights (``m2bench.layers.mixer``); no final norm;
- pooler: tanh(Linear(h[:, 0])) -> (B, d), the retrieval embedding.

Fine-tuning with a task head (``m2bench.encoding.SequenceEncoder``): ``tokenize_pairs`` follows the
official GLUE recipe (bert-base-uncased WordPiece, ``truncation=True``, ``padding='max_length'``):
``[CLS] a [SEP] b [SEP]`` with token types 0/1, longest-first truncation that keeps both [SEP]s,
every row padded with id 0 to ``max_len``; ``hidden_states`` is the last layer (B, max_len, d).
``m2bench.tokenization.tokenize_wordpiece_pairs`` is shared with the BERT baselines, so all of
them see the same word pieces.

Reference: the official PyTorch path of HazyResearch/m2 (``bert/src/bert_layers.py``, commit
7d359e8, ``use_flash_fft=False``, ``use_flash_mm=False``). ``tests/test_m2_bert.py`` loads the
official-format oracle fixture (``tests/fixtures/m2_bert_oracle``) through
``m2bench.checkpoints.load_pretrained`` and reproduces its hidden states, per-layer outputs, filter
kernels and pooled output within 1e-4 in float32.

Deviations from the official code:

- ``padding="masked"`` (not the default) zeroes pad positions before every convolution, so the
  states of real tokens do not depend on the padding length. The official code, reproduced by
  ``padding="official"``, ignores ``attention_mask`` and lets pad tokens flow through the
  convolutions.
- Inputs may be shorter than ``max_len`` (the official classification forward asserts L ==
  max_len); the implicit kernels are then evaluated on the first L positions, as the official
  filter does.
- Parameter names differ from the official ones; ``m2bench.checkpoints`` maps them both ways.
- ``kernel="torch"`` (default) is plain PyTorch; ``kernel="triton"`` runs m2bench's Triton kernels
  (fused GLU MLP and add + LayerNorm, fused short conv + gating, the FFT convolution as Monarch
  matmuls: one program per row pair up to L = 8192, three passes beyond), see
  :func:`m2bench.layers.triton_coverage`. Under bf16 autocast its layer outputs stay bf16 (the
  torch path's LayerNorm returns float32).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from m2bench.errors import ConfigError
from m2bench.layers import check_kernel, triton_coverage
from m2bench.layers.heads import ClassificationHead, MLMHead, Pooler
from m2bench.layers.mixer import BlockdiagGLU, M2SequenceMixer
from m2bench.registry import register_model
from m2bench.tokenization import tokenize_wordpiece_pairs, wordpiece_tokenizer

PADDING_MODES = ("official", "masked")
_INIT_STD = 0.02  # BERT's initializer_range, as in the official M2-BERT configs


@dataclass(frozen=True)
class M2BertConfig:
    """Architecture and behaviour of an M2-BERT model; every field is a valid override."""

    d_model: int = 768  # hidden width d
    n_layers: int = 12
    d_intermediate: int = 3072  # width I of the GLU activation
    max_len: int = 128  # position table and implicit-filter length; longer inputs are refused
    vocab_size: int = 30528  # bert-base-uncased's 30522 padded to a multiple of 8
    type_vocab_size: int = 2
    mlp_blocks: int = 4  # blocks of the block-diagonal MLP weights
    hyena_order: int = 128  # hidden width of the implicit-filter MLPs
    hyena_emb_dim: int = 5  # positional features per position: t and 2 frequency bands
    hyena_freq_init: float = 10.0  # initial shared Sin frequency (official hyena_w)
    hyena_w_mod: float = 1.0  # fixed factor inside the Sin
    bidirectional: bool = True  # bidirectional long convolutions
    residual_long_conv: bool = True  # long conv of the layer input added inside the mixer
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # after the embeddings and inside the GLU
    pooler: bool = False  # tanh(Linear(h_CLS)) pooler, the retrieval embedding
    padding: str = "official"  # "official": pads flow through convs; "masked": zeroed before
    kernel: str = "torch"  # implementation of the Monarch and long-conv ops

    def __post_init__(self) -> None:
        if self.padding not in PADDING_MODES:
            raise ConfigError(f"padding {self.padding!r} is not one of {', '.join(PADDING_MODES)}")
        check_kernel(self.kernel)
        sizes = ("d_model", "n_layers", "d_intermediate", "max_len", "vocab_size", "mlp_blocks")
        bad = [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]
        if bad:
            raise ConfigError(f"M2BertConfig sizes must be positive: {', '.join(bad)}")
        if self.hyena_emb_dim < 3 or self.hyena_emb_dim % 2 == 0:
            raise ConfigError(f"hyena_emb_dim must be odd and >= 3, got {self.hyena_emb_dim}")


def _init_weights(module: nn.Module) -> None:
    """BERT initialisation of dense layers and embedding tables (official M2-BERT does the same)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=_INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=_INIT_STD)


class M2BertEmbeddings(nn.Module):
    """LayerNorm((word + token type) + position), then dropout: (B, L) ids -> (B, L, d)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embeddings = nn.Embedding(config.max_len, config.d_model)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed ``input_ids`` (B, L); ``token_type_ids`` default to zeros."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        h = h + self.position_embeddings(positions)[None]
        return self.dropout(self.norm(h))


class M2BertLayer(nn.Module):
    """Sequence mixer then block-diagonal GLU MLP: (B, L, d) -> (B, L, d)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.mixer = M2SequenceMixer(
            config.d_model,
            config.max_len,
            hyena_order=config.hyena_order,
            hyena_emb_dim=config.hyena_emb_dim,
            hyena_freq_init=config.hyena_freq_init,
            hyena_w_mod=config.hyena_w_mod,
            bidirectional=config.bidirectional,
            residual_long_conv=config.residual_long_conv,
            kernel=config.kernel,
        )
        self.mlp = BlockdiagGLU(
            config.d_model,
            config.d_intermediate,
            nblocks=config.mlp_blocks,
            layer_norm_eps=config.layer_norm_eps,
            dropout=config.dropout,
            kernel=config.kernel,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layer; ``mask`` (B, L) bool, if given, zeroes pads before each convolution."""
        return self.mlp(self.mixer(x, mask))


@dataclass
class M2BertOutput:
    """What :class:`M2BertModel` returns.

    Attributes:
        last_hidden_state: output of the last layer (B, L, d).
        pooler_output: tanh(Linear(last_hidden_state[:, 0])) (B, d); ``None`` without a pooler.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None


class M2BertModel(nn.Module):
    """The M2-BERT encoder: embeddings, ``n_layers`` M2 layers and an optional pooler.

    Call as ``model(input_ids=, attention_mask=, token_type_ids=)`` -> :class:`M2BertOutput`.
    ``attention_mask`` is read only with ``padding="masked"``.
    """

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = M2BertEmbeddings(config)
        self.layers = nn.ModuleList(M2BertLayer(config) for _ in range(config.n_layers))
        self.pooler = Pooler(config.d_model) if config.pooler else None
        self.apply(_init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> M2BertOutput:
        """Encode ``input_ids`` (B, L) with L <= max_len."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(
                f"input length {input_ids.shape[1]} exceeds max_len {self.config.max_len}"
            )
        mask = None
        if self.config.padding == "masked" and attention_mask is not None:
            mask = attention_mask.bool()
        h = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            h = layer(h, mask)
        pooled = self.pooler(h) if self.pooler is not None else None
        return M2BertOutput(last_hidden_state=h, pooler_output=pooled)


def filter_param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Optimizer groups of the official M2 fine-tuning code (``create_param_groups.py``).

    The forward implicit-filter MLPs and the shared Sin frequency train with lr 1e-3 and weight
    decay 0.1, the filters' positional features ``z`` with lr 1e-5 and no decay; everything else
    (reverse-filter MLPs included) uses the task's ``lr``/``weight_decay``, left to the caller.
    """
    from m2bench.layers.long_conv import HyenaFilter

    fast, slow = [], []
    for f in (m for m in module.modules() if isinstance(m, HyenaFilter)):
        fast += [*f.mlp_fwd.parameters(), f.freq]
        slow.append(f.z)
    del lr, weight_decay  # the official groups are absolute
    return [
        {"params": fast, "lr": 1e-3, "weight_decay": 0.1},
        {"params": slow, "lr": 1e-5, "weight_decay": 0.0},
    ]


class M2BertForMaskedLM(nn.Module):
    """M2-BERT with the masked-LM head (decoder tied to the word embeddings), as pretrained.

    ``forward`` follows the ``encoder`` model kind: (input_ids, attention_mask) -> hidden
    (B, L, d). :meth:`mlm_logits` gives the (B, L, vocab) predictions.
    """

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = M2BertModel(config)
        self.mlm_head = MLMHead(
            config.d_model, config.vocab_size, layer_norm_eps=config.layer_norm_eps
        )
        self.mlm_head.apply(_init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, L, d) of the last layer."""
        return self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state

    def mlm_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked-LM logits (B, L, vocab_size)."""
        hidden = self(input_ids, attention_mask, token_type_ids)
        return self.mlm_head(hidden, self.bert.embeddings.word_embeddings.weight)

    @property
    def hidden_size(self) -> int:
        """Width d of the hidden states (``SequenceEncoder``)."""
        return self.config.d_model

    @property
    def max_length(self) -> int:
        """The most tokens of an input, ``max_len`` (``SequenceEncoder``)."""
        return self.config.max_len

    def tokenize_pairs(
        self, first: list[str], second: list[str] | None = None, *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Texts or pairs as the official GLUE recipe: truncated, padded to ``max_len``.

        See :func:`tokenize_wordpiece_pairs`; ``max_length`` (default ``max_len``) only truncates.
        """
        return tokenize_wordpiece_pairs(
            first, second, max_length=max_length, limit=self.config.max_len, pad_to_limit=True
        )

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The official filter groups (see :func:`filter_param_groups`)."""
        return filter_param_groups(self, lr, weight_decay)

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states (B, L, d) of a batch from :meth:`tokenize_pairs`."""
        return self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    def run_tags(self) -> dict[str, str]:
        """How inputs are cut and padded, and which implementation runs (run tags)."""
        return {
            "padding": self.config.padding,
            "kernel": self.config.kernel,
            "kernel_impl": "torch" if self.config.kernel == "torch" else triton_coverage(),
            "max_length": str(self.config.max_len),
            "truncation": "longest first, [SEP]s kept, padded to max_len (official GLUE)",
        }


class M2BertForSequenceClassification(nn.Module):
    """M2-BERT with pooler and a classification head on the pooled output.

    Args:
        config: model config; the pooler is always built.
        num_labels: classes (1 for regression).
    """

    def __init__(self, config: M2BertConfig, num_labels: int = 2) -> None:
        super().__init__()
        self.config = replace(config, pooler=True)
        self.num_labels = num_labels
        self.bert = M2BertModel(self.config)
        self.classifier = ClassificationHead(config.d_model, num_labels, dropout=config.dropout)
        self.classifier.apply(_init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_labels)."""
        return self.classifier(self.bert(input_ids, attention_mask, token_type_ids).pooler_output)


class M2BertTextEncoder(nn.Module):
    """M2-BERT retrieval encoder (``text_encoder`` kind): the pooled output embeds a text.

    Tokenisation reproduces the official evaluation (``embeddings_inference.py``): each text is
    tokenised alone with [CLS]/[SEP] and without truncation, right-padded with id 0 to
    ``max_len`` and cut to its first ``max_len`` ids (a cut text loses its [SEP]). Calling the
    module returns :class:`M2BertOutput`.
    """

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.config = config
        self.max_length = config.max_len
        self.bert = M2BertModel(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> M2BertOutput:
        """Encode a batch; see :class:`M2BertModel`."""
        return self.bert(input_ids, attention_mask, token_type_ids)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask`` (B, max_len) and ``n_truncated`` (texts cut)."""
        rows = [enc.ids for enc in wordpiece_tokenizer().encode_batch(list(texts))]
        input_ids = torch.zeros(len(rows), self.max_length, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, row in enumerate(rows):
            row = row[: self.max_length]
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        n_truncated = sum(len(row) > self.max_length for row in rows)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "n_truncated": torch.tensor(n_truncated),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write this encoder in the official layout (``m2bench.checkpoints.save_pretrained``)."""
        from m2bench.checkpoints import save_pretrained

        return save_pretrained(self, directory)

    def run_tags(self) -> dict[str, str]:
        """How texts are cut and padded, and which implementation runs (run tags)."""
        return {
            "padding": self.config.padding,
            "kernel": self.config.kernel,
            "kernel_impl": "torch" if self.config.kernel == "torch" else triton_coverage(),
            "max_length": str(self.max_length),
            "truncation": "first max_len tokens, padded to max_len (official: a cut text loses "
            "[SEP])",
        }

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled output (B, d) of a tokenized batch: the official retrieval embedding."""
        if self.bert.pooler is None:
            raise ConfigError("this M2-BERT has no pooler (pooler=False), so it cannot embed texts")
        out = self.bert(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")
        )
        return out.pooler_output

    @property
    def hidden_size(self) -> int:
        """Width d of the hidden states (``SequenceEncoder``)."""
        return self.config.d_model

    def tokenize_pairs(
        self, first: list[str], second: list[str] | None = None, *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Texts or pairs for fine-tuning: truncated longest first, padded to ``max_len``.

        Unlike :meth:`tokenize`, this keeps [SEP] on cut texts (:func:`tokenize_wordpiece_pairs`).
        """
        return tokenize_wordpiece_pairs(
            first, second, max_length=max_length, limit=self.max_length, pad_to_limit=True
        )

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states (B, L, d) of a batch from :meth:`tokenize_pairs`."""
        out = self.bert(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")
        )
        return out.last_hidden_state


# --- registered variants -----------------------------------------------------------------------

_SIZES = {  # (d_model, d_intermediate): the four GLUE-era M2-BERT sizes, 12 layers each
    "80m": (768, 3072),
    "110m": (960, 3840),
    "260m": (1536, 6144),
    "341m": (1792, 7168),
}
_TINY = dict(d_model=32, n_layers=2, d_intermediate=128, hyena_order=16)
# Default weights. Retrieval: the LoCoV1 encoders the LoCo paper evaluates (Table 13); the 2024-01
# release fine-tuned on LoCo V0 is `togethercomputer/m2-bert-80M-{2k,8k,32k}-retrieval`
# (`--checkpoint` takes it). GLUE-era MLM checkpoints: danfu09/m2-bert-*.
_HUB_V1 = "hazyresearch/M2-BERT-%s-Retrieval-Encoder-V1"
_HUB_MLM = "danfu09/m2-bert-%s"
_PRETRAINED_OVERRIDES = ("padding", "kernel")


def _load(source: str, name: str, **overrides: object) -> nn.Module:
    """Registry loader: the registered model ``name`` with official weights from ``source``."""
    from m2bench.checkpoints import load_pretrained

    bad = sorted(set(overrides) - set(_PRETRAINED_OVERRIDES))
    if bad:
        raise ConfigError(
            f"{name} with pretrained weights takes only {', '.join(_PRETRAINED_OVERRIDES)} "
            f"overrides (got {', '.join(bad)}); use --init random to change the architecture"
        )
    return load_pretrained(source, model_name=name, **overrides)


def _config(overrides: dict, **defaults: object) -> M2BertConfig:
    return replace(M2BertConfig(**defaults), **overrides)


def _mlm(size: str, overrides: dict) -> M2BertForMaskedLM:
    d_model, d_intermediate = _SIZES[size]
    return M2BertForMaskedLM(_config(overrides, d_model=d_model, d_intermediate=d_intermediate))


def _retrieval(max_len: int, overrides: dict) -> M2BertTextEncoder:
    # Retrieval fine-tuning runs with dropout 0 (official embedding_training.yaml).
    return M2BertTextEncoder(_config(overrides, max_len=max_len, pooler=True, dropout=0.0))


# The first docstring line of each builder is its `m2bench list models` description.
_ENCODER = dict(kind="encoder", family="m2", config_cls=M2BertConfig, loader=_load)
_V1_NOTE = (
    "LoCoV1 V1 encoders were fine-tuned on LoCoV1 itself (in-domain; the released training script "
    "reads the test split)"
)
_TEXT_ENCODER = dict(
    kind="text_encoder", family="m2", config_cls=M2BertConfig, loader=_load, weights_note=_V1_NOTE
)


@register_model("m2_bert_80m", weights=_HUB_MLM % "80M", params_m=80.27, max_len=128, **_ENCODER)
def m2_bert_80m(**overrides: object) -> M2BertForMaskedLM:
    """M2-BERT 80M (d 768, 12 layers) with tied MLM head, max_len 128."""
    return _mlm("80m", overrides)


@register_model("m2_bert_110m", weights=_HUB_MLM % "110M", params_m=115.6, max_len=128, **_ENCODER)
def m2_bert_110m(**overrides: object) -> M2BertForMaskedLM:
    """M2-BERT 110M (d 960, 12 layers) with tied MLM head, max_len 128."""
    return _mlm("110m", overrides)


@register_model("m2_bert_260m", weights=_HUB_MLM % "260m", params_m=259.1, max_len=128, **_ENCODER)
def m2_bert_260m(**overrides: object) -> M2BertForMaskedLM:
    """M2-BERT 260M (d 1536, 12 layers) with tied MLM head, max_len 128."""
    return _mlm("260m", overrides)


@register_model("m2_bert_341m", weights=_HUB_MLM % "341m", params_m=341.0, max_len=128, **_ENCODER)
def m2_bert_341m(**overrides: object) -> M2BertForMaskedLM:
    """M2-BERT 341M (d 1792, 12 layers) with tied MLM head, max_len 128."""
    return _mlm("341m", overrides)


@register_model(
    "m2_bert_80m_128_retrieval",
    params_m=80.24,
    max_len=128,
    weights=_HUB_V1 % "128",
    **_TEXT_ENCODER,
)
def m2_bert_80m_128_retrieval(**overrides: object) -> M2BertTextEncoder:
    """M2-BERT 80M retrieval encoder; texts cut to their first 128 tokens, padded to 128."""
    return _retrieval(128, overrides)


@register_model(
    "m2_bert_80m_2k_retrieval",
    params_m=81.94,
    max_len=2048,
    weights=_HUB_V1 % "2k",
    **_TEXT_ENCODER,
)
def m2_bert_80m_2k_retrieval(**overrides: object) -> M2BertTextEncoder:
    """M2-BERT 80M retrieval encoder; texts cut to their first 2048 tokens, padded to 2048."""
    return _retrieval(2048, overrides)


@register_model(
    "m2_bert_80m_8k_retrieval",
    params_m=87.40,
    max_len=8192,
    weights=_HUB_V1 % "8k",
    **_TEXT_ENCODER,
)
def m2_bert_80m_8k_retrieval(**overrides: object) -> M2BertTextEncoder:
    """M2-BERT 80M retrieval encoder; texts cut to their first 8192 tokens, padded to 8192."""
    return _retrieval(8192, overrides)


@register_model(
    "m2_bert_80m_32k_retrieval",
    params_m=109.22,
    max_len=32768,
    weights=_HUB_V1 % "32K",
    **_TEXT_ENCODER,
)
def m2_bert_80m_32k_retrieval(**overrides: object) -> M2BertTextEncoder:
    """M2-BERT 80M retrieval encoder; texts cut to their first 32768 tokens, padded to 32768."""
    return _retrieval(32768, overrides)


@register_model("m2_bert_tiny", params_m=1.04, max_len=128, **_ENCODER)
def m2_bert_tiny(**overrides: object) -> M2BertForMaskedLM:
    """Tiny M2-BERT (d 32, 2 layers, real WordPiece vocabulary) for tests and sample runs."""
    return M2BertForMaskedLM(_config(overrides, **_TINY))


@register_model("m2_bert_tiny_retrieval", params_m=1.01, max_len=128, **_TEXT_ENCODER)
def m2_bert_tiny_retrieval(**overrides: object) -> M2BertTextEncoder:
    """Tiny M2-BERT text encoder (d 32, 2 layers, pooler) for tests and sample runs."""
    return M2BertTextEncoder(_config(overrides, pooler=True, **_TINY))
