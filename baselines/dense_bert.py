"""Dense BERT: BERT with each self-attention replaced by a learned, input-independent L x L mixer.

Papers: the idea of replacing a sequence mixer by a plain dense mixing matrix is JustDense (Park et
al., "JustDense: Just using Dense instead of Sequence Mixer for Time Series analysis", 2025,
https://arxiv.org/abs/2508.09153); for text it is the "Random Synthesizer" of Tay et al.,
"Synthesizer: Rethinking Self-Attention for Transformer Models" (ICML 2021,
https://arxiv.org/abs/2005.00743), and the token-mixing MLP of MLP-Mixer (Tolstikhin et al.,
2021, https://arxiv.org/abs/2105.01601) reduced to one linear map. BERT itself: Devlin et al., 2019,
https://arxiv.org/abs/1810.04805. Implemented here from those descriptions.

Computation (B batch, L = ``max_len``, d width):

- embeddings: LayerNorm(word + learned absolute position + token type), dropout;
- each layer, with M an (L, L) parameter (Xavier-uniform init) and pad positions of x zeroed:
  ``x = LayerNorm(x + Dropout(M @ x_masked / sqrt(L)))``, then BERT's FFN
  ``x = LayerNorm(x + Dropout(Linear(GELU(Linear(x)))))`` (d -> d_intermediate -> d);
- output: the last layer's states (B, L, d); no pooler (task heads pool).

L is fixed when the model is built: :meth:`DenseBert.tokenize_pairs` pads every input to
``max_len``, so a forward pass always costs an L x L mix. A shorter input (L' < L) is also
accepted and mixed with ``M[:L', :L']``; since pads are zeroed before mixing this gives exactly
the real positions of the padded input. Pads never reach real positions, so real outputs do not
depend on the padding.

Matched against M2-BERT and BERT: ``dense_bert_base`` has M2-BERT-80M's and BERT-base's width and
depth (d 768, 12 layers, FFN 3072) and M2-BERT's GLUE length 128; its size (80.4M) happens to be
close to M2-BERT-80M's. Tokenisation is the bundled bert-base-uncased WordPiece shared with M2-BERT
(``m2bench.tokenization.tokenize_wordpiece_pairs``). Dense and embedding weights use BERT's
initialisation (normal, std 0.02). No pretrained weights exist: random init only.

Deviations: the Random Synthesizer uses a softmax-normalised random matrix per head and JustDense
a plain dense layer; here M is one unnormalised matrix per layer shared by all channels, scaled by
1/sqrt(L), and pad positions are masked (neither paper pads text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.errors import ConfigError
from m2bench.registry import register_model
from m2bench.tokenization import tokenize_wordpiece_pairs

_INIT_STD = 0.02  # BERT's initializer_range


@dataclass(frozen=True)
class DenseBertConfig:
    """Architecture of a dense BERT; every field is a valid override."""

    d_model: int = 768  # hidden width d
    n_layers: int = 12
    d_intermediate: int = 3072  # FFN width
    max_len: int = 128  # L: size of the mixing matrices; every input is padded to it
    vocab_size: int = 30522  # bert-base-uncased WordPiece ids
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # after the embeddings, the mixer and the FFN

    def __post_init__(self) -> None:
        sizes = ("d_model", "n_layers", "d_intermediate", "max_len", "vocab_size")
        bad = [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]
        if bad:
            raise ConfigError(f"DenseBertConfig sizes must be positive: {', '.join(bad)}")


class DenseBertEmbeddings(nn.Module):
    """LayerNorm(word + position + token type), then dropout: (B, L) ids -> (B, L, d)."""

    def __init__(self, config: DenseBertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.max_len, config.d_model)
        self.token_type = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """Embed ``input_ids`` (B, L) with their ``token_type_ids`` (B, L)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids)
        return self.dropout(self.norm(h))


class DenseTokenMixer(nn.Module):
    """``M @ x / sqrt(L)`` with one learned (L, L) matrix M: (B, L', d) -> (B, L', d), L' <= L."""

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, max_len))
        self.scale = 1.0 / math.sqrt(max_len)
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix the positions of ``x`` (B, L', d); pads must already be zero."""
        n = x.shape[1]
        return torch.matmul(self.weight[:n, :n], x) * self.scale


class DenseBertLayer(nn.Module):
    """Dense token mixing then BERT's FFN, each with residual and post-LayerNorm."""

    def __init__(self, config: DenseBertConfig) -> None:
        super().__init__()
        self.mixer = DenseTokenMixer(config.max_len)
        self.mix_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.d_model, config.d_intermediate)
        self.ffn_out = nn.Linear(config.d_intermediate, config.d_model)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Apply the layer to ``x`` (B, L, d); ``keep`` (B, L, 1) is 0 at pads, or ``None``."""
        mixed = self.mixer(x if keep is None else x * keep)
        x = self.mix_norm(x + self.dropout(mixed))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class DenseBert(nn.Module):
    """Dense BERT encoder implementing ``SequenceEncoder``.

    Calling the module (``input_ids``, ``attention_mask``, ``token_type_ids``) returns the last
    hidden states (B, L, d), the ``encoder`` model kind.
    """

    def __init__(self, config: DenseBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = DenseBertEmbeddings(config)
        self.layers = nn.ModuleList(DenseBertLayer(config) for _ in range(config.n_layers))
        self.apply(_init_weights)

    @property
    def hidden_size(self) -> int:
        """Width d of the hidden states."""
        return self.config.d_model

    @property
    def max_length(self) -> int:
        """The most tokens of an input, ``max_len`` (the size of the mixing matrices)."""
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
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        keep = None if attention_mask is None else attention_mask[..., None].to(h.dtype)
        for layer in self.layers:
            h = layer(h, keep)
        return h

    def tokenize_pairs(
        self, first: list[str], second: list[str] | None = None, *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Texts or pairs, truncated longest first, padded to ``max_len`` (the mixer's L)."""
        return tokenize_wordpiece_pairs(
            first, second, max_length=max_length, limit=self.config.max_len, pad_to_limit=True
        )

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states (B, L, d) of a batch from :meth:`tokenize_pairs`."""
        return self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    def run_tags(self) -> dict[str, str]:
        """How inputs are cut and padded (run tags)."""
        return {
            "max_length": str(self.config.max_len),
            "truncation": "longest first, [SEP]s kept, padded to max_len (the mixer's L)",
        }


def _init_weights(module: nn.Module) -> None:
    """BERT initialisation of dense layers and embedding tables; mixers keep their Xavier init."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=_INIT_STD)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=_INIT_STD)


# --- registered variants -----------------------------------------------------------------------

_ENCODER = dict(kind="encoder", family="baseline", config_cls=DenseBertConfig)


@register_model("dense_bert_base", params_m=80.44, max_len=128, **_ENCODER)
def dense_bert_base(**overrides: object) -> DenseBert:
    """Dense BERT (d 768, 12 layers, 128 x 128 mixers); inputs truncated and padded to 128."""
    return DenseBert(replace(DenseBertConfig(), **overrides))


@register_model("dense_bert_tiny", params_m=1.03, max_len=128, **_ENCODER)
def dense_bert_tiny(**overrides: object) -> DenseBert:
    """Tiny dense BERT (d 32, 2 layers, 128 x 128 mixers) for tests and sample runs."""
    defaults = DenseBertConfig(d_model=32, n_layers=2, d_intermediate=128)
    return DenseBert(replace(defaults, **overrides))
