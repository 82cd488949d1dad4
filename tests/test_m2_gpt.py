"""M2-GPT: exact causality (model, mixer, Jacobian), prefix consistency, tied head, optimizer
groups, FLOPs per token and config errors."""

from __future__ import annotations

import pytest
import torch

from m2bench.errors import ConfigError
from m2bench.layers.long_conv import HyenaFilter, fft_conv
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.loop import TrainConfig, param_groups
from m2bench.models import count_params
from m2bench.models.m2_gpt import M2GPT
from m2bench.registry import create_model

VOCAB = 50257  # GPT-2's real tokens; the table has 50264 rows


def _tiny(**overrides: object) -> M2GPT:
    torch.manual_seed(0)
    return create_model("m2_gpt_tiny", **overrides).eval()


def _future_changed(ids: torch.Tensor, t: int, vocab: int = VOCAB) -> torch.Tensor:
    """``ids`` with every token after position ``t`` replaced by a different one."""
    g = torch.Generator().manual_seed(t)
    shift = torch.randint(1, vocab, ids[:, t + 1 :].shape, generator=g)
    out = ids.clone()
    out[:, t + 1 :] = (ids[:, t + 1 :] + shift) % vocab
    return out


def _leakage(fn, x: torch.Tensor, x_changed: torch.Tensor, t: int) -> tuple[float, float]:
    """(max change of outputs at positions <= t, smallest max change at a position > t), both
    relative to max |output|; outputs are (B, L, ...)."""
    with torch.no_grad():
        y, y2 = fn(x), fn(x_changed)
    scale = y.abs().max().item()
    diff = (y - y2).abs().flatten(2).amax(dim=(0, 2))  # per position
    after = diff[t + 1 :].min().item() / scale if t + 1 < y.shape[1] else float("inf")
    return diff[: t + 1].max().item() / scale, after


# --- (a) exact causality through all layers -------------------------------------------------------


@pytest.mark.parametrize("t", [0, 7, 31, 62])
def test_logits_up_to_t_ignore_every_later_token(t):
    model = _tiny()
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))
    before, after = _leakage(model, ids, _future_changed(ids, t), t)
    assert before <= 1e-5, f"future tokens leak into positions <= {t}: {before:.2e}"
    assert after > 1e-3, f"positions after {t} did not react to their own tokens: {after:.2e}"


# --- (b) the same check catches a bidirectional mixer ---------------------------------------------


def test_causality_check_fails_for_a_bidirectional_mixer():
    model = _tiny()
    c = model.config
    torch.manual_seed(1)
    for block in model.blocks:  # the same model with M2-BERT's bidirectional (2L-kernel) mixer
        block.mixer = M2SequenceMixer(
            c.d_model, c.max_len, bidirectional=True, residual_long_conv=False
        ).eval()
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))
    t = 31
    before, _ = _leakage(model, ids, _future_changed(ids, t), t)
    assert before > 1e-3, f"the bidirectional model should leak, measured {before:.2e}"


@pytest.mark.parametrize("bidirectional", [False, True])
def test_mixer_alone_leaks_only_when_bidirectional(bidirectional):
    torch.manual_seed(0)
    mixer = M2SequenceMixer(32, 64, bidirectional=bidirectional, residual_long_conv=False).eval()
    u = torch.randn(2, 64, 32)
    t = 20
    u2 = u.clone()
    u2[:, t + 1 :] = torch.randn(2, 64 - t - 1, 32)
    before, after = _leakage(mixer, u, u2, t)
    assert after > 1e-3
    if bidirectional:
        assert before > 1e-3
    else:
        assert before <= 1e-6


# --- (c) fp64 Jacobian of the mixer ---------------------------------------------------------------


def _mixer_jacobian(bidirectional: bool, seqlen: int = 32, d: int = 8) -> torch.Tensor:
    """|d y_t / d u_s| maximised over channels, (L_out, L_in), of a float64 mixer."""
    torch.manual_seed(0)
    mixer = M2SequenceMixer(
        d, seqlen, hyena_order=16, bidirectional=bidirectional, residual_long_conv=False
    )
    mixer = mixer.double().eval()
    mixer.long_conv.filter.float()  # HyenaFilter evaluates its MLP in float32 only
    u = torch.randn(1, seqlen, d, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(mixer, u)  # (1, L, d, 1, L, d)
    return jac[0, :, :, 0].abs().amax(dim=(1, 3))


def test_mixer_jacobian_is_lower_triangular_in_float64():
    # Everything runs in float64 except the implicit kernel, which HyenaFilter always computes in
    # float32 (its MLP is kept float32; fft_conv casts the kernel to float64). That changes the
    # kernel's values, not where they act: the
    # kernel has L taps and the FFT is zero-padded to 2L, so a later input can only reach an
    # earlier output through float64 FFT rounding (~1e-16), far below the 1e-10 bound.
    jac = _mixer_jacobian(bidirectional=False)
    future = torch.triu(jac, diagonal=1)  # entry (t, s) with s > t
    assert future.max().item() <= 1e-10, future.max().item()
    past = torch.tril(jac, diagonal=-1)
    assert past.max().item() > 1e-3  # the mixer does use earlier positions
    assert torch.diagonal(jac).min().item() > 0


def test_bidirectional_mixer_jacobian_has_a_future_part():
    jac = _mixer_jacobian(bidirectional=True)
    assert torch.triu(jac, diagonal=1).max().item() > 1e-3


def test_causal_fft_conv_equals_direct_convolution_in_float64():
    torch.manual_seed(0)
    seqlen, channels = 24, 3
    x = torch.randn(2, channels, seqlen, dtype=torch.float64)
    k = torch.randn(channels, seqlen, dtype=torch.float64)
    skip = torch.randn(channels, dtype=torch.float64)
    direct = torch.zeros_like(x)
    for t in range(seqlen):
        for s in range(t + 1):
            direct[..., t] += k[:, t - s] * x[..., s]
    direct += skip[:, None] * x
    torch.testing.assert_close(fft_conv(x, k, None, skip), direct, rtol=1e-12, atol=1e-12)


# --- (d) prefix consistency -----------------------------------------------------------------------


def test_prefix_gets_the_logits_of_the_first_positions():
    model = _tiny()
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, prefix = model(ids), model(ids[:, :40])
    assert prefix.shape == (2, 40, model.config.vocab_size)
    scale = full.abs().max().item()
    assert (prefix - full[:, :40]).abs().max().item() <= 1e-5 * scale


# --- (e) tied LM head -----------------------------------------------------------------------------


def test_lm_head_is_the_token_embedding():
    model = _tiny()
    assert model.lm_head.weight is model.embed.weight
    c = model.config
    assert count_params(model) - count_params(model, non_embedding=True) == c.vocab_size * c.d_model
    assert not any(
        isinstance(m, torch.nn.Embedding) and m is not model.embed for m in model.modules()
    )  # no position table


# --- (f) optimizer groups -------------------------------------------------------------------------


def test_optimizer_groups_put_positional_features_at_1e_5_without_decay():
    model = _tiny()
    groups = model.optimizer_groups(6e-4, 0.1)
    filters = [m for m in model.modules() if isinstance(m, HyenaFilter)]
    assert len(filters) == model.config.n_layers
    (pos,) = [g for g in groups if any(p is filters[0].z for p in g["params"])]
    assert pos["lr"] == 1e-5 and pos["weight_decay"] == 0.0
    assert {id(p) for p in pos["params"]} == {id(f.z) for f in filters}
    (mlp,) = [g for g in groups if any(p is filters[0].freq for p in g["params"])]
    assert mlp["lr"] == 6e-4 and mlp["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"
    # Combined with the loop's rule, every parameter lands in exactly one optimizer group.
    all_ids = [id(p) for g in param_groups(model, TrainConfig(lr=6e-4)) for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())


# --- (g) FLOPs per token --------------------------------------------------------------------------


def test_flops_per_token_is_positive_and_grows_with_context():
    model = _tiny()
    c = model.config
    flops = [model.flops_per_token(n) for n in (16, 64, 256)]
    assert all(f > 0 for f in flops)
    assert flops[0] < flops[1] < flops[2]
    matmul = 6 * (7 * c.d_model**2 * c.n_layers + c.d_model * c.vocab_size)
    assert matmul < flops[0] < 1.05 * matmul  # the FFT term is small at this size
    with pytest.raises(ValueError, match="max_len"):
        model.flops_per_token(c.max_len + 1)


def test_flops_per_token_of_the_145m_model_is_about_6n():
    with torch.device("meta"):
        model = create_model("m2_gpt_145m")
    n = count_params(model)
    assert 5.5 * n < model.flops_per_token(2048) < 6.5 * n


# --- (h) configuration and input errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(d_model=102), "d_model"),  # 102 % 4 blocks
        (dict(d_model=100, monarch_blocks=8), "d_model"),
        (dict(mlp_ratio=4.1), "mlp_ratio"),  # int(64 * 4.1) = 262, not divisible by 4
        (dict(dropout=1.0), "dropout"),
        (dict(hyena_emb_dim=4), "hyena_emb_dim"),
        (dict(n_layers=0), "n_layers"),
        (dict(kernel="cuda"), "kernel"),
    ],
)
def test_bad_override_raises_config_error_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        create_model("m2_gpt_tiny", **overrides)


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ConfigError, match="valid:.*d_model"):
        create_model("m2_gpt_tiny", n_heads=4)


def test_input_longer_than_max_len_is_refused():
    model = _tiny(max_len=32)
    model(torch.zeros(1, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_registered_sizes():
    expected = {
        "m2_gpt_145m": (1024, 12, 2048),
        "m2_gpt_360m": (1312, 24, 2048),
        "m2_gpt_20m": (256, 12, 1024),
        "m2_gpt_tiny": (64, 2, 256),
    }
    for name, (d, layers, ctx) in expected.items():
        with torch.device("meta"):
            c = create_model(name).config
        assert (c.d_model, c.n_layers, c.max_len, c.vocab_size) == (d, layers, ctx, 50264), name
