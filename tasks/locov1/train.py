"""Retrieval fine-tuning for ``m2bench train``: LoCo training examples, batches and losses.

Recipe: Saad-Falcon et al., arXiv 2402.07440, A.3, and the official training code (see
``shared/specs/m2_recipes.md`` section 3): orthogonal projection loss over (query, passage, label)
pairs with uniformly sampled same-subtask negatives; MNRL as the alternative. Deviation: batches
are tokenized as in evaluation (pad to the model length, cut to its first tokens), where the
official training code keeps [SEP] when cutting.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch

from m2bench.encoding import prepare
from m2bench.errors import ConfigError, DataError
from m2bench.losses import multiple_negatives_ranking_loss, orthogonal_projection_loss
from m2bench.specs import LoadedData

LOSSES = ("opl", "mnrl")


def training_examples(
    data: LoadedData, *, loss: str = "opl", negatives: int = 32, seed: int = 0
) -> list[dict[str, Any]]:
    """Training examples in the LoCo paper's format (arXiv 2402.07440, A.3; official code).

    Per query and relevant passage, ``negatives`` passages are drawn uniformly, without
    replacement, from the same subtask's other documents (``#docs - 2`` when the subtask has no
    more than ``negatives`` documents). OPL: each draw emits ``(q, d+, 1.0)`` and ``(q, d-, 0.0)``,
    so the positive pair appears once per negative. MNRL: each draw emits ``(q, d+, d-)``.
    """
    if loss not in LOSSES:
        raise DataError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1:
        raise ConfigError(f"negatives (--negatives) must be a whole number >= 1, got {negatives!r}")
    rng = random.Random(seed)
    docs = data.tables["documents"]
    by_pid = {d["pid"]: d["passage"] for d in docs}
    by_task: dict[str, list[str]] = {}
    for d in docs:
        by_task.setdefault(d["dataset"], []).append(d["pid"])
    out: list[dict[str, Any]] = []
    for q in data.tables["queries"]:
        pool = by_task[q["dataset"]]
        n = negatives if len(pool) > negatives else max(0, len(pool) - 2)
        candidates = [p for p in pool if p not in set(q["answer_pids"])]
        for pos in q["answer_pids"]:
            for neg in rng.sample(candidates, min(n, len(candidates))):
                if loss == "opl":
                    out.append({"query": q["query"], "passage": by_pid[pos], "label": 1.0})
                    out.append({"query": q["query"], "passage": by_pid[neg], "label": 0.0})
                else:
                    out.append(
                        {"query": q["query"], "passage": by_pid[pos], "negative": by_pid[neg]}
                    )
    return out


def batches(
    examples: list[dict[str, Any]],
    *,
    batch_size: int,
    model: Any,
    device: torch.device,
    epoch: int = 0,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Shuffled micro-batches of tokenized queries and passages (a new order each epoch)."""
    order = list(range(len(examples)))
    random.Random(seed + epoch).shuffle(order)
    for start in range(0, len(order), batch_size):
        rows = [examples[i] for i in order[start : start + batch_size]]
        batch = {
            "q": prepare(model, [r["query"] for r in rows], device),
            "d": prepare(model, [r["passage"] for r in rows], device),
            "n": len(rows),
        }
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows], device=device)
        else:
            batch["neg"] = prepare(model, [r["negative"] for r in rows], device)
        yield batch


def loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """OPL when the batch has labels, else MNRL over positives, in-batch and sampled negatives."""
    q, d = model.embed(batch["q"]), model.embed(batch["d"])
    if "labels" in batch:
        return orthogonal_projection_loss(q, d, batch["labels"])
    return multiple_negatives_ranking_loss(q, torch.cat([d, model.embed(batch["neg"])]))
