"""The tokenizers shipped with m2bench (``m2bench/assets``): the bert-base-uncased WordPiece
tokenizer with the one text-pair tokenisation that M2-BERT, BERT and the dense-mixer BERT share,
and the GPT-2 byte-level BPE that every causal language model of m2bench reads, so that every
model of a comparison sees the same tokens."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from m2bench.errors import ConfigError, DataError

#: bert-base-uncased WordPiece files shipped with m2bench (see SOURCE.md there).
VOCAB_DIR = Path(__file__).resolve().parent / "assets" / "bert-uncased-vocab"
#: OpenAI GPT-2 BPE files (encoder.json, vocab.bpe) shipped with m2bench (see SOURCE.md there).
GPT2_DIR = Path(__file__).resolve().parent / "assets" / "gpt2-bpe"
GPT2_VOCAB = 50257  # GPT-2 tokens; models pad their tables to a multiple of 8 (50264)
GPT2_EOS = 50256  # <|endoftext|>


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> object:
    """GPT-2's byte-level BPE (``tokenizers.Tokenizer``; 50,257 tokens, ``<|endoftext|>`` = 50256).

    ``encode(text).ids`` gives GPT-2's ids (e.g. "That's my beautiful and sweet string" ->
    [2504, 338, 616, 4950, 290, 6029, 4731]); ``decode(ids)`` the text.

    Raises:
        DataError: when the BPE files are not installed with m2bench.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = GPT2_DIR / "encoder.json", GPT2_DIR / "vocab.bpe"
    for path in (vocab, merges):
        if not path.is_file():
            raise DataError(f"GPT-2 BPE file {path} is missing; reinstall m2bench")
    tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


@functools.lru_cache(maxsize=1)
def wordpiece_tokenizer() -> object:
    """The bert-base-uncased WordPiece tokenizer (``tokenizers.Tokenizer``), no truncation/padding.

    Raises:
        DataError: when the vocabulary files are not installed with m2bench.
    """
    from tokenizers import Tokenizer

    path = VOCAB_DIR / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"WordPiece tokenizer file {path} is missing; reinstall m2bench")
    tokenizer = Tokenizer.from_file(str(path))
    # The file carries all-MiniLM's truncation/padding to 128; M2 tokenises without either.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@functools.lru_cache(maxsize=8)
def _truncating_tokenizer(max_length: int) -> object:
    # A copy: the cached tokenizer above must keep tokenising without truncation.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(wordpiece_tokenizer().to_str())
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    return tokenizer


def tokenize_wordpiece_pairs(
    first: list[str],
    second: list[str] | None = None,
    *,
    max_length: int | None,
    limit: int,
    pad_to_limit: bool,
) -> dict[str, torch.Tensor]:
    """bert-base-uncased WordPiece of texts or text pairs, as BERT's fine-tuning reads them.

    Each row is ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with token types 0 on the first
    segment (its [SEP] included) and 1 on the second; a row longer than ``max_length`` loses
    word pieces from its longer segment first (the special tokens stay); padding is id 0, type 0,
    mask 0 on the right.

    Args:
        first: first texts (B).
        second: second texts (B), or ``None`` for single texts.
        max_length: the most tokens per row; ``None`` means ``limit``.
        limit: the most tokens the model reads.
        pad_to_limit: pad every row to ``limit`` (M2-BERT, dense BERT) instead of to the longest
            row of the batch.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids``, each (B, L) int64.

    Raises:
        ConfigError: ``max_length`` exceeds ``limit``, or ``second`` differs in length.
    """
    max_length = limit if max_length is None else max_length
    if not 3 <= max_length <= limit:
        raise ConfigError(f"max_length {max_length} must be between 3 and the model's {limit}")
    if second is not None and len(second) != len(first):
        raise ConfigError(f"{len(first)} first texts but {len(second)} second texts")
    inputs = list(first) if second is None else list(zip(first, second, strict=True))
    encodings = _truncating_tokenizer(max_length).encode_batch(inputs)
    width = limit if pad_to_limit else max((len(e.ids) for e in encodings), default=0)
    out = {
        key: torch.zeros(len(encodings), width, dtype=torch.long)
        for key in ("input_ids", "attention_mask", "token_type_ids")
    }
    for i, enc in enumerate(encodings):
        n = len(enc.ids)
        out["input_ids"][i, :n] = torch.tensor(enc.ids, dtype=torch.long)
        out["token_type_ids"][i, :n] = torch.tensor(enc.type_ids, dtype=torch.long)
        out["attention_mask"][i, :n] = 1
    return out
