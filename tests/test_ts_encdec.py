"""Transformer, Informer, Autoformer (TSLib encoder-decoders): contract, mixers, attention, data."""

from __future__ import annotations

import math

import pytest
import torch

import baselines.autoformer as autoformer
import baselines.informer as informer
import baselines.ts_transformer as ts_transformer
from baselines.ts_common import Classifier, series_decomp
from m2bench.errors import ConfigError
from m2bench.layers.dense_mixer import DenseMixer
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.models import count_params
from m2bench.registry import create_model, get_model_spec

FAMILIES = ("transformer", "informer", "autoformer")
SUFFIXES = ("", "_dense", "_monarch")
NAMES = [f + s for f in FAMILIES for s in SUFFIXES]
TINY = [n + "_tiny" for n in NAMES]
CONFIGS = (ts_transformer.TransformerConfig, informer.InformerConfig, autoformer.AutoformerConfig)


def _enc_mixers(model) -> list[torch.nn.Module]:
    layers = model.encoder if isinstance(model, autoformer.Autoformer) else model.encoder.layers
    return [layer.mixer for layer in layers]


@pytest.mark.parametrize("name", NAMES + TINY)
def test_registered_params_match_built_model(name):
    spec = get_model_spec(name)
    assert spec.kind == "forecast"
    assert spec.family == ("m2" if "monarch" in name else "baseline")
    model = create_model(name)
    assert abs(count_params(model) / 1e6 - spec.params_m) < 1e-3


@pytest.mark.parametrize("name", TINY)
def test_shapes_with_and_without_marks(name):
    torch.manual_seed(0)
    model = create_model(name, seq_len=48, pred_len=24, enc_in=5, label_len=16, mark_dim=4)
    x, x_mark, y_mark = torch.randn(3, 48, 5), torch.randn(3, 48, 4), torch.randn(3, 24, 4)
    assert model(x).shape == (3, 24, 5)
    out = model(x, x_mark, y_mark, mask=torch.ones_like(x))
    assert out.shape == (3, 24, 5) and torch.isfinite(out).all()
    c = model.config
    n_enc = c.enc_lengths[-1] if isinstance(c, informer.InformerConfig) else c.seq_len
    assert model.features(x).shape == (3, n_enc * c.d_model)
    assert model.features(x, x_mark).shape == (3, n_enc * c.d_model)
    assert Classifier(model, 3)(x).shape == (3, 3)  # fixed F: a head can be built on it
    with pytest.raises(ValueError, match=model.name):
        model(torch.randn(3, 48, 4))
    with pytest.raises(ValueError, match="y_mark"):
        model(x, x_mark, torch.randn(3, 23, 4))


@pytest.mark.parametrize("name", ["transformer_tiny", "informer_tiny", "autoformer_tiny"])
def test_reconstruction_geometry_and_long_label(name):
    # H = L with y_mark = x_mark (imputation / anomaly detection) and label_len > seq_len.
    model = create_model(name, seq_len=32, pred_len=32, label_len=48, mark_dim=4).eval()
    x, mark = torch.randn(2, 32, 7), torch.randn(2, 32, 4)
    assert model.config.dec_label == 32
    assert model(x, mark, mark).shape == (2, 32, 7)


@pytest.mark.parametrize("name", ["transformer_tiny", "transformer_dense_tiny",
                                  "transformer_monarch_tiny"])  # fmt: skip
def test_transformer_decoder_is_causal(name):
    # y_mark enters the decoder pointwise (Linear of the marks), so with dropout off the
    # forecast at horizon step t must not change when y_mark changes at steps > t.
    torch.manual_seed(0)
    model = create_model(name, mark_dim=4).eval()
    x, x_mark, y_mark = torch.randn(2, 96, 7), torch.randn(2, 96, 4), torch.randn(2, 96, 4)
    t = 40
    later = y_mark.clone()
    later[:, t + 1 :] += torch.randn(2, 96 - t - 1, 4)
    with torch.no_grad():
        base, moved = model(x, x_mark, y_mark), model(x, x_mark, later)
    torch.testing.assert_close(moved[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
    assert (moved[:, t + 1 :] - base[:, t + 1 :]).abs().max() > 1e-3


def test_mask_multiplies_input():
    model = create_model("transformer_tiny").eval()
    x = torch.randn(2, 96, 7)
    mask = (torch.rand(2, 96, 7) > 0.3).float()
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask=mask), model(x * mask))


def test_dense_and_monarch_mixers_replace_the_encoder_mixer_only():
    for fam in FAMILIES:
        dense = create_model(f"{fam}_dense")  # default geometry: L 96, H 8
        assert [type(m) for m in _enc_mixers(dense)] == [DenseMixer, DenseMixer]
        expected = [96, 48] if fam == "informer" else [96, 96]
        assert [m.M.shape for m in _enc_mixers(dense)] == [(8, n, n) for n in expected]
        monarch = create_model(f"{fam}_monarch_tiny")
        assert all(isinstance(m, M2SequenceMixer) for m in _enc_mixers(monarch))
    dec = create_model("transformer_dense").decoder[0]
    assert type(dec.self_attn).__name__ == type(dec.cross_attn).__name__ == "SelfAttention"
    assert isinstance(create_model("informer").decoder[0].self_attn, informer.ProbSparseAttention)
    assert isinstance(_enc_mixers(create_model("autoformer_tiny"))[0],
                      autoformer.AutoCorrelationLayer)  # fmt: skip


@pytest.mark.parametrize("seq_len, lengths", [(96, [96, 48, 24]), (95, [95, 48, 24])])
def test_informer_dense_layers_follow_distilled_lengths(seq_len, lengths):
    model = create_model("informer_dense_tiny", seq_len=seq_len, e_layers=3)
    assert model.config.enc_lengths == lengths
    assert [m.n_tokens for m in _enc_mixers(model)] == lengths
    x = torch.randn(2, seq_len, 7)
    assert model(x).shape == (2, 96, 7)
    assert model.features(x).shape == (2, lengths[-1] * 32)
    undistilled = create_model("informer_dense_tiny", seq_len=seq_len, e_layers=3, distil=False)
    assert [m.n_tokens for m in _enc_mixers(undistilled)] == [seq_len] * 3


def _full_attention(q, k, v, causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[2]
        scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("causal", [False, True])
def test_probsparse_with_all_queries_is_full_attention(causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, 4) for _ in range(3))  # u = 3 * ceil(ln 8) = 9 >= 8
    out = informer.prob_attention(q, k, v, factor=3, causal=causal)
    torch.testing.assert_close(out, _full_attention(q, k, v, causal))


def test_probsparse_lazy_queries_and_seeded_sampling():
    q, k, v = (torch.randn(1, 2, 64, 4, generator=torch.Generator().manual_seed(i))
               for i in range(3))  # fmt: skip
    u = math.ceil(math.log(64))  # factor 1: 5 active queries of 64
    torch.manual_seed(1)
    out = informer.prob_attention(q, k, v, factor=1)
    torch.manual_seed(1)
    torch.testing.assert_close(informer.prob_attention(q, k, v, factor=1), out)
    lazy = (out - v.mean(dim=2, keepdim=True)).abs().amax(dim=-1) < 1e-6  # (1, 2, 64)
    assert (lazy.sum(dim=-1) == 64 - u).all()
    active = ~lazy[0, 0]
    torch.testing.assert_close(out[0, 0, active], _full_attention(q, k, v, False)[0, 0, active])
    causal = informer.prob_attention(q, k, v, factor=1, causal=True)
    lazy = (causal - v.cumsum(dim=2)).abs().amax(dim=-1) < 1e-5
    assert (lazy.sum(dim=-1) >= 64 - u).all()


@pytest.mark.parametrize("batch_delays", [False, True])
def test_auto_correlation_finds_the_delay(batch_delays):
    torch.manual_seed(0)
    k = torch.randn(2, 32, 2, 3)  # (B, S, H, E)
    s = 5
    q = torch.roll(k, s, dims=1)  # q[t] = k[t - s]: the correlation peaks at delay s
    out = autoformer.auto_correlation(q, k, k, factor=0.1, batch_delays=batch_delays)  # top-1
    torch.testing.assert_close(out, torch.roll(k, -s, dims=1))  # out[t] = v[t + s]
    short = autoformer.auto_correlation(q, k[:, :20], k[:, :20], factor=3, batch_delays=False)
    long = autoformer.auto_correlation(q[:, :20], k, k, factor=3, batch_delays=True)
    assert short.shape == (2, 32, 2, 3) and long.shape == (2, 20, 2, 3)


def test_series_decomp_and_autoformer_norm():
    x = torch.randn(2, 96, 7)
    seasonal, trend = series_decomp(x, 25)
    torch.testing.assert_close(seasonal + trend, x)
    h = autoformer.SeasonalNorm(7)(x)
    torch.testing.assert_close(h.mean(dim=1), torch.zeros(2, 7), rtol=0, atol=1e-5)
    emb = autoformer.DataEmbeddingWoPos(7, 16, 4, dropout=0.0)
    assert emb(x).shape == (2, 96, 16)
    # no position: a constant input embeds to the same vector at every step
    flat = emb(torch.ones(1, 96, 7))
    torch.testing.assert_close(flat, flat[:, :1].expand_as(flat))


def test_one_adam_step_on_real_etth1_windows():
    from tasks import ts_data

    path, src, rev = ts_data.locate("ETTh1", None, True)
    s = ts_data.read_series("ETTh1", path, 96, src, rev)
    values = torch.from_numpy(s.values)
    starts = [0, 500, 1000, 1500]
    x = torch.stack([values[i : i + 96] for i in starts])
    y = torch.stack([values[i + 96 : i + 192] for i in starts])
    for name in TINY:
        torch.manual_seed(0)
        model = create_model(name).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        before = [p.detach().clone() for p in model.parameters()]
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), name
        after = list(model.parameters())
        changed = sum(not torch.equal(a, p) for a, p in zip(before, after, strict=True))
        assert changed > 0, name


@pytest.mark.parametrize("cls", CONFIGS)
def test_bad_config_raises(cls):
    with pytest.raises(ConfigError, match="divisible"):
        cls(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="mixer"):
        cls(mixer="hyena")
    with pytest.raises(ConfigError, match="activation"):
        cls(activation="tanh")
    with pytest.raises(ConfigError, match="label_len"):
        cls(label_len=-1)
    c = cls()
    assert (c.seq_len, c.pred_len, c.label_len, c.e_layers, c.d_layers, c.factor) == (
        96, 96, 48, 2, 1, 3)  # fmt: skip
    assert (c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation, c.c_out) == (
        512, 8, 2048, 0.1, "gelu", 7)  # fmt: skip


def test_model_specific_config():
    assert informer.InformerConfig().distil is True
    assert autoformer.AutoformerConfig().moving_avg == 25
    with pytest.raises(ConfigError, match="moving_avg"):
        autoformer.AutoformerConfig(moving_avg=24)
    with pytest.raises(ConfigError):
        create_model("autoformer_tiny", d_model=31)
