"""Comparators for M2 models: same registry and contracts; importing this package registers them."""

from baselines import (  # noqa: F401
    autoformer,
    bert,
    bm25,
    dense_bert,
    dlinear,
    gpt,
    informer,
    itransformer,
    mamba_ts,
    patchtst,
    s_mamba,
    sentence_encoders,
    ts_transformer,
    vit,
)
