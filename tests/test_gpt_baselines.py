"""The causal-LM baselines: logits, causality, the causal dense mixer, tied head, FLOPs, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.gpt import PADDED_VOCAB, CausalDenseMixer, DenseGPTConfig, GPTConfig
from m2bench.errors import ConfigError
from m2bench.models import count_params
from m2bench.registry import create_model, load_plugins

TINY = ["gpt_tiny", "dense_gpt_tiny"]
load_plugins()


def _relative(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a - b).abs().max() / scale.abs().max())


@pytest.mark.parametrize("name", TINY)
def test_logits_shape_and_length_limit(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randint(0, 50257, (3, 10)))
    assert type(logits) is torch.Tensor
    assert logits.shape == (3, 10, PADDED_VOCAB) and torch.isfinite(logits).all()
    full = model.config.max_len
    with torch.no_grad():
        assert model(torch.zeros(1, full, dtype=torch.long)).shape == (1, full, PADDED_VOCAB)
    with pytest.raises(ValueError, match=f"max_len {full}"):
        model(torch.zeros(1, full + 1, dtype=torch.long))


@pytest.mark.parametrize("name", TINY)
def test_causal_future_tokens_do_not_change_past_logits(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    ids = torch.randint(0, 50257, (2, 24))
    t = 10
    changed = ids.clone()
    changed[:, t + 1 :] = torch.randint(0, 50257, (2, 24 - t - 1))
    assert (changed[:, t + 1 :] != ids[:, t + 1 :]).any()
    with torch.no_grad():
        base, after = model(ids), model(changed)
    assert _relative(base[:, : t + 1], after[:, : t + 1], base) < 1e-5
    assert _relative(base[:, t + 1 :], after[:, t + 1 :], base) > 1e-3  # the change is seen later


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("t_changed", [0, 3, 10])
def test_a_past_token_changes_its_own_and_every_later_logit(name, t_changed):
    torch.manual_seed(0)
    model = create_model(name).eval()
    ids = torch.randint(0, 50257, (2, 16))
    changed = ids.clone()
    changed[:, t_changed] = (ids[:, t_changed] + 1) % 50257
    with torch.no_grad():
        base, after = model(ids), model(changed)
    per_position = (base - after).abs().amax(dim=(0, 2)) / base.abs().max()
    assert (per_position[:t_changed] < 1e-5).all()
    assert (per_position[t_changed:] > 1e-4).all(), per_position


def test_dense_mixer_equals_hand_computed_masked_matmul():
    torch.manual_seed(0)
    mixer = CausalDenseMixer(max_len=6)
    x = torch.randn(2, 4, 3)  # an input shorter than max_len uses the top-left 4 x 4 block
    w = mixer.weight.detach()
    expected = torch.zeros(2, 4, 3)
    for i in range(4):
        for j in range(i + 1):  # position i mixes positions j <= i only
            expected[:, i] += w[i, j] * x[:, j]
    torch.testing.assert_close(mixer(x), expected / math.sqrt(6))


def test_dense_mixer_upper_triangle_is_zero_has_no_effect_and_gets_zero_gradient():
    torch.manual_seed(0)
    mixer = CausalDenseMixer(max_len=5)
    upper = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    assert (mixer.weight[upper] == 0).all() and (mixer.weight[~upper] != 0).all()
    x = torch.randn(2, 5, 4)
    before = mixer(x).detach()
    with torch.no_grad():
        mixer.weight[upper] = torch.randn(int(upper.sum())) * 100
    torch.testing.assert_close(mixer(x), before)
    mixer(x).pow(2).sum().backward()
    assert (mixer.weight.grad[upper] == 0).all()
    assert (mixer.weight.grad[~upper] != 0).all()


def test_dense_gpt_uses_one_lower_triangular_mixer_per_layer_and_no_attention():
    with torch.device("meta"):
        model = create_model("dense_gpt_20m")
    mixers = [m for m in model.modules() if isinstance(m, CausalDenseMixer)]
    assert len(mixers) == 8 and all(m.weight.shape == (1024, 1024) for m in mixers)
    assert not any("attn" in n or "qkv" in n for n, _ in model.named_parameters())
    assert model.run_tags()["mixer"] == "dense_causal"


@pytest.mark.parametrize("name", TINY)
def test_lm_head_is_tied_to_the_token_embedding(name):
    model = create_model(name)
    if name.startswith("dense"):
        head, table = model.lm_head.weight, model.wte.weight
    else:
        head, table = model.gpt.lm_head.weight, model.gpt.transformer.wte.weight
    assert head is table
    c = model.config
    embeddings = count_params(model) - count_params(model, non_embedding=True)
    assert embeddings == (c.vocab_size + c.max_len) * c.d_model  # the head is not counted twice


@pytest.mark.parametrize("name", ["gpt_tiny", "dense_gpt_tiny", "gpt_20m", "gpt_125m"])
def test_flops_per_token_follow_the_stated_formula_and_grow_with_length(name):
    with torch.device("meta"):
        model = create_model(name)
    c = model.config
    # the formula's matmul count is every 2-D weight outside embeddings and mixing matrices
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    mixers = {id(m.weight) for m in model.modules() if isinstance(m, CausalDenseMixer)}
    matmul = sum(p.numel() for p in model.parameters()
                 if p.dim() == 2 and id(p) not in tables | mixers)  # fmt: skip
    per_layer = 8 if name.startswith("dense") else 12
    assert matmul == per_layer * c.n_layers * c.d_model**2
    flops = [model.flops_per_token(s) for s in (1, 128, c.max_len)]
    assert 0 < flops[0] < flops[1] < flops[2]
    d, v, n = c.d_model, c.vocab_size, c.n_layers
    assert flops[1] == pytest.approx(6 * (matmul + d * v) + 6 * n * 128 * d)
    with pytest.raises(ValueError, match="max_len"):
        model.flops_per_token(c.max_len + 1)


def test_gpt_20m_is_the_proof_size():
    with torch.device("meta"):
        model = create_model("gpt_20m")
    assert count_params(model) / 1e6 == pytest.approx(19.6, rel=0.03)
    assert model.gpt.config.n_positions == 1024 and model.gpt.config.n_embd == 256


def test_gpt_is_transformers_gpt2_with_sdpa_and_matches_eager():
    torch.manual_seed(0)
    sdpa = create_model("gpt_tiny").eval()
    eager = create_model("gpt_tiny", attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.gpt.config._attn_implementation == "sdpa"
    assert sdpa.run_tags()["attn_implementation"] == "sdpa"
    ids = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids), eager(ids), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "overrides", "field"),
    [
        ("gpt_tiny", dict(n_heads=3), "n_heads"),
        ("gpt_tiny", dict(d_model=0), "d_model"),
        ("gpt_tiny", dict(attn_implementation="flash"), "attn_implementation"),
        ("gpt_tiny", dict(dropout=1.0), "dropout"),
        ("dense_gpt_tiny", dict(n_heads=2), "n_heads"),
        ("dense_gpt_tiny", dict(max_len=-1), "max_len"),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(name, overrides, field):
    with pytest.raises(ConfigError, match=field):
        create_model(name, **overrides)


def test_configs_are_frozen_and_carry_the_lm_contract_fields():
    for config in (GPTConfig(), DenseGPTConfig()):
        assert config.vocab_size == 50264 and config.dropout == 0.0
        for field in ("d_model", "n_layers", "n_heads", "max_len"):
            assert getattr(config, field) > 0
        with pytest.raises(AttributeError):
            config.d_model = 1
