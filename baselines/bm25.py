"""BM25 lexical retrieval baseline (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
BM25 and Beyond", 2009), through the bm25s library.

Matched against: nothing to match (no parameters); it is the LoCo paper's lexical reference (the
paper used Elasticsearch's BM25, i.e. Lucene scoring with k1=1.2, b=0.75 and its own analyzer).
m2bench uses bm25s with Lucene scoring, k1=1.5, b=0.75 (bm25s defaults), lowercasing, English
stopwords and no stemming (PyStemmer is optional and off so results do not depend on it). Whole
documents are indexed: no truncation. All settings are overridable (``model.k1=1.2``) and logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np

from m2bench.registry import register_model


@dataclass(frozen=True)
class BM25Config:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"  # bm25s scoring variant: robertson | lucene | atire | bm25l | bm25+
    stopwords: str = "en"  # "" for none
    lowercase: bool = True


class BM25Retriever:
    """``index(texts)`` then ``search(queries, k)``: the ``lexical`` model interface."""

    def __init__(self, config: BM25Config) -> None:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # bm25s imports jax; keep it off the GPU
        import bm25s  # here, not in index(): its import (seconds, with jax) is no indexing time

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at DEBUG
        self._lib = bm25s
        self.config = config
        self.n_docs = 0
        self._bm25 = None

    def _tokenize(self, texts: list[str]) -> object:
        return self._lib.tokenize(
            texts,
            lower=self.config.lowercase,
            stopwords=self.config.stopwords or None,
            show_progress=False,
        )

    def index(self, texts: list[str]) -> int:
        """Index ``texts``; returns the number of tokens indexed."""
        tokens = self._tokenize(texts)
        self._bm25 = self._lib.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._bm25.index(tokens, show_progress=False)
        self.n_docs = len(texts)
        return int(sum(len(ids) for ids in tokens.ids))

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, doc indices)``, each (Q, k), best first."""
        if self._bm25 is None:
            raise RuntimeError("BM25Retriever.search called before index")
        tokens = self._tokenize(queries)
        idx, scores = self._bm25.retrieve(
            tokens, k=min(k, self.n_docs), show_progress=False, n_threads=1
        )
        return np.asarray(scores, dtype=np.float32), np.asarray(idx, dtype=np.int64)

    def run_tags(self) -> dict[str, str]:
        """Settings worth a tag on the run."""
        return {
            "bm25_library": "bm25s",
            **{f"bm25_{k}": str(v) for k, v in asdict(self.config).items()},
        }


@register_model(
    "bm25",
    kind="lexical",
    family="baseline",
    params_m=None,
    config_cls=BM25Config,
    description="BM25 (bm25s, Lucene scoring, k1=1.5 b=0.75, en stopwords); no truncation",
)
def bm25(**overrides: object) -> BM25Retriever:
    return BM25Retriever(BM25Config(**overrides))
