"""Training losses. Pure functions of embeddings and labels; no model or task knowledge."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def orthogonal_projection_loss(
    q: torch.Tensor, d: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """OPL of the LoCo paper (arXiv 2402.07440, section 4.3): mean of (cos(q_i, d_i) - y_i)^2.

    Args:
        q: query embeddings (B, D).
        d: passage embeddings (B, D), paired with ``q`` row by row.
        labels: (B,) 1.0 for a relevant passage, 0.0 for a sampled negative.
    """
    cos = F.cosine_similarity(q.float(), d.float(), dim=-1)
    return F.mse_loss(cos, labels.float())


def multiple_negatives_ranking_loss(
    q: torch.Tensor, d: torch.Tensor, scale: float = 20.0
) -> torch.Tensor:
    """MNRL (Henderson et al. 2017; sentence-transformers): cross-entropy over scaled cosines.

    Args:
        q: query embeddings (B, D).
        d: passages (N, D) with N >= B: row i < B is query i's positive; every other row (the
            other positives and any extra negatives) is a negative for query i.
        scale: inverse temperature applied to the cosines (sentence-transformers' default 20).
    """
    scores = scale * F.normalize(q.float(), dim=-1) @ F.normalize(d.float(), dim=-1).T
    return F.cross_entropy(scores, torch.arange(q.shape[0], device=q.device))
