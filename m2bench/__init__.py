"""m2bench: benchmark and evaluation harness for Monarch Mixer (M2) models.

Public API: ``create_model``, ``list_models``, ``get_task``, ``list_tasks``, ``run``,
``load_pretrained``, ``save_pretrained``, ``register_timm_models``.
"""

from __future__ import annotations

from typing import Any

from m2bench.registry import create_model, get_task, list_models, list_tasks

__all__ = [
    "create_model",
    "get_task",
    "list_models",
    "list_tasks",
    "load_pretrained",
    "register_timm_models",
    "run",
    "save_pretrained",
]
__version__ = "0.1.0"


def run(task: str, models: list[str] | tuple[str, ...] = (), **kwargs: Any) -> list:
    """Run models on a task; see :func:`m2bench.runner.run`."""
    from m2bench.runner import run as _run

    return _run(task, models, **kwargs)


def load_pretrained(name_or_dir: str, **kwargs: Any) -> Any:
    """Load an official M2-BERT checkpoint; see :func:`m2bench.checkpoints.load_pretrained`."""
    from m2bench.checkpoints import load_pretrained as _load

    return _load(name_or_dir, **kwargs)


def save_pretrained(model: Any, directory: str) -> Any:
    """Save an M2-BERT in the official layout; see :func:`m2bench.checkpoints.save_pretrained`."""
    from m2bench.checkpoints import save_pretrained as _save

    return _save(model, directory)


def register_timm_models() -> None:
    """Make M2-ViT creatable by timm: ``timm.create_model("m2_vit_tiny", num_classes=10)``."""
    from m2bench.models.m2_vit import register_timm_models as _register

    _register()
