"""RunConfig precedence, validation and key=value parsing."""

from __future__ import annotations

import pytest

from m2bench.config import RunConfig, parse_overrides
from m2bench.errors import ConfigError


def test_precedence_defaults_model_yaml_overrides_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("batch_size: 8\nseed: 3\nmodel_overrides: {k1: 1.1}\n")
    cfg = RunConfig.resolve(
        "locov1", "bm25",
        task_defaults={"batch_size": 64, "limit": 5},
        model_defaults={"batch_size": 16},
        config_file=cfg_file,
        overrides=["seed=4", "model.b=0.5", "task.revision=abc"],
        flags={"seed": 7, "limit": None},
    )  # fmt: skip
    assert cfg.batch_size == 8  # yaml beats model and task defaults
    assert cfg.seed == 7  # explicit flag beats key=value beats yaml
    assert cfg.limit == 5  # a flag left unset (None) does not erase a default
    assert dict(cfg.model_overrides) == {"k1": 1.1, "b": 0.5}
    assert cfg.flat()["task.revision"] == "abc"


def test_unknown_key_is_an_error_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        RunConfig.resolve("locov1", "bm25", overrides=["batchsize=3"])


@pytest.mark.parametrize(
    "override,match",
    [("device=tpu", "device"), ("precision=fp8", "precision"), ("batch_size=0", "batch_size")],
)
def test_bad_values(override, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.resolve("locov1", "bm25", overrides=[override])


def test_parse_overrides_yaml_scalars_and_errors():
    assert parse_overrides(["a=3", "b=1e-4", "c=true", "d=x y"]) == {
        "a": 3, "b": 1e-4, "c": True, "d": "x y"
    }  # fmt: skip
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_missing_or_bad_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.resolve("locov1", "bm25", config_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.resolve("locov1", "bm25", config_file=bad)


def test_sample_and_data_dir_exclude_each_other():
    with pytest.raises(ConfigError, match="exclude"):
        RunConfig.resolve("locov1", "bm25", flags={"sample": True, "data_dir": "x"})


def test_provenance_takes_a_stated_commit_over_the_local_git(monkeypatch):
    """A copy sent to a GPU machine states its commit; a stale .git there must not win."""
    from m2bench import tracking

    tracking.provenance.cache_clear()
    local = tracking.provenance()["git_sha"]
    tracking.provenance.cache_clear()
    monkeypatch.setenv("M2BENCH_GIT_SHA", "0123abc")
    monkeypatch.setenv("M2BENCH_GIT_DIRTY", "false")
    assert tracking.provenance()["git_sha"] == "0123abc" != local
    assert tracking.provenance()["git_dirty"] == "false"
    tracking.provenance.cache_clear()


def test_task_options_apply_to_a_recipe_with_tuples_and_loud_unknowns():
    from dataclasses import dataclass

    from m2bench.config import apply_options

    @dataclass(frozen=True)
    class R:
        lr: float = 1e-3
        betas: tuple[float, float] = (0.9, 0.999)

    r = apply_options(R(), {"lr": 0.5, "betas": "0.8,0.95", "revision": "x"}, what="t",
                      extra=("revision",))  # fmt: skip
    assert r == R(lr=0.5, betas=(0.8, 0.95))
    with pytest.raises(ConfigError, match=r"unknown t option 'lrr'; did you mean 'lr'.*task.betas"):
        apply_options(R(), {"lrr": 1}, what="t")
