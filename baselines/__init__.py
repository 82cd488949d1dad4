"""Comparators for M2 models: same registry and contracts; importing this package registers them."""

from baselines import bert, bm25, dense_bert, dlinear, gpt, patchtst, sentence_encoders, vit  # noqa: F401
