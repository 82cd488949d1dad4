"""Comparators for M2 models: same registry and contracts; importing this package registers them."""

from baselines import bm25, sentence_encoders  # noqa: F401
