"""m2bench: benchmark and evaluation harness for Monarch Mixer (M2) models.

Public API: ``create_model``, ``list_models``, ``get_task``, ``list_tasks``, ``run``.
"""

from __future__ import annotations

from typing import Any

from m2bench.registry import create_model, get_task, list_models, list_tasks

__all__ = ["create_model", "get_task", "list_models", "list_tasks", "run"]
__version__ = "0.1.0"


def run(task: str, models: list[str] | tuple[str, ...] = (), **kwargs: Any) -> list:
    """Run models on a task; see :func:`m2bench.runner.run`."""
    from m2bench.runner import run as _run

    return _run(task, models, **kwargs)
