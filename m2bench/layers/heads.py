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
- :class:`ImageClassifier`: images (B, C, H, W) -> logits (B, num_classes): an image model's pooled
  features through one Linear layer, as timm's ViT head (weights truncated-normal std 0.02, bias 0).
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


POOLINGS = ("cls", "mean")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, d) over the positions where ``mask`` (B, L) is nonzero."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class SequenceClassifier(nn.Module):
    """A task head on any ``SequenceEncoder``: pool, Linear(d, d), tanh, dropout, Linear.

    This is the head of the official M2-BERT GLUE code (CLS state or masked mean, then BERT's
    pooler and classifier); it is attached by the task, freshly initialised (std 0.02).

    Args:
        encoder: a model implementing ``m2bench.encoding.SequenceEncoder``.
        num_labels: classes (1 for regression).
        pooling: ``cls`` (first position) or ``mean`` (masked mean).
        dropout: before the output layer.
    """

    def __init__(
        self, encoder: nn.Module, num_labels: int, *, pooling: str = "cls", dropout: float = 0.1
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.encoder, self.pooling = encoder, pooling
        self.dense = nn.Linear(encoder.hidden_size, encoder.hidden_size)
        self.head = ClassificationHead(encoder.hidden_size, num_labels, dropout=dropout)
        for layer in (self.dense, self.head.out):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The encoder's own optimizer groups, if it has any (M2's filters do)."""
        groups = getattr(self.encoder, "optimizer_groups", None)
        return groups(lr, weight_decay) if groups is not None else []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, num_labels) of a tokenized batch (``SequenceEncoder.tokenize_pairs``)."""
        hidden = self.encoder.hidden_states(batch)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = masked_mean(hidden, batch["attention_mask"])
        return self.head(torch.tanh(self.dense(pooled)))


class ImageClassifier(nn.Module):
    """A linear classifier on any ``image`` model (images -> pooled features (B, num_features)).

    Args:
        backbone: an image model with ``num_features``.
        num_classes: classes.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The backbone's own optimizer groups, if it has any (M2's filters do)."""
        groups = getattr(self.backbone, "optimizer_groups", None)
        return groups(lr, weight_decay) if groups is not None else []

    def no_weight_decay(self) -> set[str]:
        """Parameter names the backbone exempts from weight decay (timm's convention)."""
        names = getattr(self.backbone, "no_weight_decay", set)()
        return {f"backbone.{n}" for n in names}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.head(self.backbone(images))
