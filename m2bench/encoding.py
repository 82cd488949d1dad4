"""The text-encoder interface used by retrieval tasks, and the one batched ``encode`` loop.

A model of kind ``text_encoder`` implements :class:`TextEncoder`: ``tokenize`` (truncation and
padding are the model's choice and are documented by it) and ``embed`` (one padded batch -> one
vector per text). :func:`encode` does the rest for every such model alike: length-sorted batching
(less padding for models that pad to the longest text), device placement, autocast dtype, NaN
checks, padded-token counting and restoring the input order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from m2bench.errors import ModelFailure


@runtime_checkable
class TextEncoder(Protocol):
    """What a retrieval model implements.

    Attributes:
        max_length: the most tokens of a text the model reads; longer texts are truncated.
    """

    max_length: int

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids ``input_ids`` (B, L) and ``attention_mask`` (B, L) of one batch of texts."""
        ...

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One embedding (B, D) per text of a tokenized batch already on the model's device."""
        ...


@dataclass(frozen=True)
class Encoded:
    """Result of :func:`encode`.

    Attributes:
        embeddings: (N, D) float32 on the CPU, in input order.
        tokens: tokens fed to the model, padding included (the throughput unit).
        real_tokens: non-padding tokens (after truncation).
        truncated: number of texts longer than ``max_length`` tokens.
    """

    embeddings: torch.Tensor
    tokens: int
    real_tokens: int
    truncated: int


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (``fp32`` | ``bf16`` | ``fp16``) on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def prepare(model: TextEncoder, texts: list[str], device: torch.device) -> dict[str, Any]:
    """Tokenize ``texts`` with ``model`` and move the tensors to ``device`` (drops bookkeeping)."""
    batch = model.tokenize(texts)
    batch.pop("n_truncated", None)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def encode(
    model: TextEncoder,
    texts: list[str],
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    progress: object | None = None,
) -> Encoded:
    """Embed ``texts`` with ``model`` in batches of ``batch_size``.

    Args:
        model: a :class:`TextEncoder` already on ``device``.
        texts: the texts, any order; the result keeps it.
        batch_size: texts per forward pass.
        device: where the batches go.
        precision: autocast precision of the forward pass.
        progress: optional tqdm-like object whose ``update(n)`` is called per batch.

    Raises:
        ModelFailure: when an embedding is NaN or infinite.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: list[torch.Tensor | None] = [None] * len(texts)
    tokens = real = truncated = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = model.tokenize([texts[i] for i in idx])
        truncated += int(batch.pop("n_truncated", torch.tensor(0)))
        mask = batch["attention_mask"]
        tokens += mask.numel()
        real += int(mask.sum())
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast(device, precision):
            emb = model.embed(batch)
        emb = emb.float().cpu()
        if not torch.isfinite(emb).all():
            raise ModelFailure(
                f"non-finite embeddings in a batch of {len(idx)} texts; "
                "try --config with precision: fp32 or a smaller --batch-size"
            )
        for j, i in enumerate(idx):
            out[i] = emb[j]
        if progress is not None:
            progress.update(len(idx))
    embeddings = torch.stack(out) if out else torch.empty(0, 0)
    return Encoded(embeddings, tokens, real, truncated)


@runtime_checkable
class SequenceEncoder(Protocol):
    """What a model fine-tuned with a task head implements (GLUE; kind ``encoder``).

    Attributes:
        hidden_size: width D of the hidden states.
        max_length: the most tokens of an input (a text or a text pair) the model reads.
    """

    hidden_size: int
    max_length: int

    def tokenize_pairs(
        self, first: list[str], second: list[str] | None = None, *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` (B, L) of texts or text pairs.

        Pairs are joined as ``[CLS] a [SEP] b [SEP]`` with token types 0/1, truncated (longest
        first) to ``max_length`` (default: the model's). Each model pads as it must (M2-BERT to
        its full length, others to the longest input of the batch).
        """
        ...

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states (B, L, D) of a tokenized batch on the model's device."""
        ...
