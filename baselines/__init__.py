"""Comparators for M2 models: same registry and contracts; importing this package registers them."""

from baselines import (  # noqa: F401
    bert,
    bm25,
    dense_bert,
    dlinear,
    gpt,
    itransformer,
    patchtst,
    sentence_encoders,
    vit,
)
