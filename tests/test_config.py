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
    [
        ("device=tpu", "device"), ("precision=fp8", "precision"), ("batch_size=0", "batch_size"),
        ("batch_size=abc", "batch_size must be a number, got 'abc'"),
        ("limit=2.5", "limit must be a whole number, got 2.5"),
        ("seed=abc", "seed must be a number"), ("seed=-1", r"seed must be in \[0, 2\^32\)"),
        ("max_steps=abc", "max_steps must be a number"), ("max_steps=0", "max_steps must be >= 1"),
        ("epochs=0", "epochs must be > 0"), ("sample=maybe", "sample must be true or false"),
        ("seeds=1,-2", "seeds must be integers"), ("task=glue", "task is chosen with --task"),
    ],
)  # fmt: skip
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


def test_values_take_their_field_kind_and_out_follows_the_precedence(tmp_path):
    cfg = RunConfig.resolve("glue", "bm25", overrides=["limit=4.0", "epochs=2", "out=elsewhere"])
    assert cfg.limit == 4 and isinstance(cfg.limit, int) and cfg.epochs == 2.0
    assert cfg.out == "elsewhere"  # KEY=VALUE (or --config) sets the output folder too


def test_a_saved_config_yaml_runs_again(tmp_path):
    """The config.yaml every run saves can be passed back with --config (it names its task and
    model; another task or model is refused)."""
    import yaml

    saved = RunConfig.resolve("locov1", "bm25", overrides=["model.k1=1.2", "limit=7"], flags={
        "seeds": None, "sample": True})  # fmt: skip
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump(saved.to_dict(), sort_keys=False))
    again = RunConfig.resolve("locov1", "bm25", config_file=f)
    assert again == saved
    with pytest.raises(ConfigError, match=r"names model 'bm25', the command 'minilm_l6'"):
        RunConfig.resolve("locov1", "minilm_l6", config_file=f)
