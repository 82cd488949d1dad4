"""Shared fixtures: a throwaway MLflow store and working folder per test, offline hub, markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_data = pytest.mark.skip(reason="needs ../shared beside the repository")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "needs_data" in item.keywords and not SHARED.is_dir():
            item.add_marker(skip_data)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` with MLflow's embedded store there (as a fresh user would)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def temp_model(monkeypatch: pytest.MonkeyPatch):
    """Register a model for one test only: ``temp_model(name, kind, builder)``."""
    from m2bench.registry import MODELS, load_plugins
    from m2bench.specs import ModelSpec

    load_plugins()

    def add(name: str, kind: str, builder, family: str = "baseline") -> None:
        spec = ModelSpec(
            name=name,
            kind=kind,
            family=family,
            params_m=None,
            builder=builder,
            description="test-only model",
        )
        monkeypatch.setitem(MODELS._entries, name, spec)

    return add
