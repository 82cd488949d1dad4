"""Heads attached to an encoder's hidden states: pooler, masked-LM head, classifier.

They follow BERT (Devlin et al., 2019, https://arxiv.org/abs/1810.04805) as M2-BERT uses it (Fu et
al., "Monarch Mixer", https://arxiv.org/abs/2310.12109); the pooler is checked against the official
M2-BERT code through the oracle fixture in ``tests/fixtures/m2_bert_oracle``.

Shapes (B batch, L length, d width, V vocabulary):

- :class:`Pooler`: hidden (B, L, d) -> tanh(Linear(hidden[:, 0])) (B, d). It is M2-BERT's
  ``pooled_output`` and its retrieval (text-encoding) embedding.
- :class:`MLMHead`: hidden (B, L, d), word-embedding table (V, d) -> logits (B, L, V):
  ``LayerNorm(GELU(Linear(h))) @ table.T + bias``. The decoder weight is the embedding table passed
  in at call time, so the tie needs no shared parameter.
- :class:`ClassificationHead`: pooled (B, d) -> logits (B, num_labels) through dropout and Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Pooler(nn.Module):
    """First-position pooling followed by Linear(d, d) and tanh."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Pool ``hidden`` (B, L, d) into (B, d)."""
        return torch.tanh(self.dense(hidden[:, 0]))


class MLMHead(nn.Module):
    """Masked-LM prediction head with a decoder tied to the word embeddings.

    Args:
        d_model: hidden width.
        vocab_size: rows of the word-embedding table.
        layer_norm_eps: epsilon of the transform's LayerNorm.
    """

    def __init__(self, d_model: int, vocab_size: int, *, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V) of ``hidden`` (B, L, d); decoder weight ``word_embeddings`` (V, d)."""
        h = self.norm(F.gelu(self.transform(hidden)))
        return F.linear(h, word_embeddings, self.bias)


class ClassificationHead(nn.Module):
    """Dropout then Linear(d, num_labels) on a pooled representation.

    Args:
        d_model: width of the pooled input.
        num_labels: classes (1 for regression).
        dropout: dropout probability before the linear layer.
    """

    def __init__(self, d_model: int, num_labels: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels) of ``pooled`` (B, d)."""
        return self.out(self.dropout(pooled))
