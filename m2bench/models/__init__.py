"""Monarch Mixer model families; importing this package registers them.

``count_params`` is m2bench's only parameter counter.
"""

from __future__ import annotations

import torch


def count_params(model: torch.nn.Module, *, non_embedding: bool = False) -> int:
    """Number of distinct trainable parameters (tied weights counted once).

    Args:
        model: any module.
        non_embedding: leave out ``nn.Embedding`` weights (token, position, type tables).
    """
    skip: set[int] = set()
    if non_embedding:
        skip = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


from m2bench.models import m2_bert, m2_gpt, m2_vit  # noqa: E402,F401  (import = registration)
