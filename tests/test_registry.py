"""Registries are loud: duplicates raise, unknown names suggest, bad overrides list fields."""

from __future__ import annotations

import pytest

from m2bench.errors import ConfigError, M2BenchError, UnknownNameError
from m2bench.registry import (
    MODELS,
    Registry,
    create_model,
    get_model_spec,
    get_task,
    list_models,
    list_tasks,
)
from m2bench.specs import MODEL_KINDS, ModelSpec, TaskSpec


def test_duplicate_name_raises_and_keeps_the_first():
    reg = Registry("widget", "m2bench list widgets")
    reg.register("a", 1)
    with pytest.raises(M2BenchError, match="registered twice"):
        reg.register("a", 2)
    assert reg.get("a") == 1


def test_names_must_be_lowercase():
    with pytest.raises(M2BenchError, match="lowercase"):
        Registry("widget", "x").register("BigName", 1)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError) as err:
        get_model_spec("minilm_l5")
    assert "did you mean 'minilm_l6'" in str(err.value)
    assert "m2bench list models" in str(err.value)


def test_unknown_task_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean 'locov1'"):
        get_task("locov2")


def test_task_with_subtask_suffix_resolves():
    assert get_task("locov1:qmsum").spec.name == "locov1"


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ConfigError) as err:
        create_model("bm25", k3=1.0)
    msg = str(err.value)
    assert "'k3'" in msg and "k1" in msg and "b," in msg


def test_override_reaches_the_model():
    model = create_model("bm25", k1=1.2)
    assert model.config.k1 == 1.2
    assert model.spec.name == "bm25"


def test_every_registered_spec_is_well_formed():
    assert "locov1" in list_tasks()
    for name in list_models():
        spec = MODELS.get(name)
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert spec.kind in MODEL_KINDS and spec.description
    for name in list_tasks():
        spec = get_task(name).spec
        assert isinstance(spec, TaskSpec) and spec.metric in spec.metrics
        for model in spec.default_models:
            assert get_model_spec(model).kind in spec.model_kinds, (name, model)


def test_bad_spec_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        ModelSpec(name="x", kind="vision", family="m2", params_m=1, builder=dict)
