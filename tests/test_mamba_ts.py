"""Mamba block, selective scan, and the Mamba / S-Mamba forecasters with their mixer swaps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines import mamba_ts, s_mamba
from baselines.mamba_ts import HydraDense, MambaTS, MambaTSConfig
from m2bench.errors import ConfigError
from m2bench.layers.dense_mixer import DenseMixer
from m2bench.layers.selective_scan import MambaBlock, selective_scan, selective_scan_reference
from m2bench.models import count_params
from m2bench.registry import create_model, get_model_spec

MAMBA = ["mamba", "mamba_dense", "mamba_monarch"]
S_MAMBA = ["s_mamba", "s_mamba_dense", "s_mamba_monarch"]
FULL = MAMBA + S_MAMBA
NAMES = FULL + [f"{n}_tiny" for n in FULL]
TINY = [f"{n}_tiny" for n in FULL]
assert mamba_ts and s_mamba  # imported for registration


def _scan_inputs(b: int, length: int, d: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, length, d, generator=g)
    delta = F.softplus(torch.randn(b, length, d, generator=g))
    a = -torch.exp(torch.randn(d, n, generator=g))
    bb, cc = torch.randn(b, length, n, generator=g), torch.randn(b, length, n, generator=g)
    return u, delta, a, bb, cc, torch.randn(d, generator=g)


@pytest.mark.parametrize(
    ("b", "length", "d", "n", "chunk"),
    [(2, 37, 5, 3, 8), (1, 1, 4, 2, 32), (3, 64, 6, 16, 16), (2, 20, 3, 1, 1), (1, 9, 2, 4, 64)],
)
def test_chunked_scan_matches_reference(b, length, d, n, chunk):
    args = _scan_inputs(b, length, d, n)
    leaves = [t.clone().requires_grad_(True) for t in args]
    want = selective_scan_reference(*leaves)
    got = selective_scan(*args, chunk_size=chunk)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # gradients too (the training path): through the fast scan vs the reference
    fast = [t.clone().requires_grad_(True) for t in args]
    weight = torch.randn_like(want)
    (selective_scan(*fast, chunk_size=chunk) * weight).sum().backward()
    (want * weight).sum().backward()
    for f, r in zip(fast, leaves, strict=True):
        torch.testing.assert_close(f.grad, r.grad, rtol=1e-4, atol=1e-4)


def test_scan_equals_hand_computed_recurrence():
    u, delta, b, c = [1.0, 2.0, -1.0], [0.5, 1.0, 0.2], [1.0, 0.5, 2.0], [3.0, -1.0, 0.5]
    a, d = -2.0, 0.7
    h1 = 0.5 * 1.0 * 1.0  # exp(dt A) * 0 + dt * B * u
    h2 = math.exp(-2.0) * h1 + 1.0 * 0.5 * 2.0
    h3 = math.exp(-0.4) * h2 + 0.2 * 2.0 * -1.0
    want = torch.tensor([3.0 * h1 + d * 1.0, -1.0 * h2 + d * 2.0, 0.5 * h3 + d * -1.0])

    def t(v: list[float]) -> torch.Tensor:
        return torch.tensor(v).view(1, 3, 1)

    args = (t(u), t(delta), torch.tensor([[a]]), t(b), t(c), torch.tensor([d]))
    for fn in (selective_scan_reference, selective_scan):
        torch.testing.assert_close(fn(*args).flatten(), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(selective_scan(*args, chunk_size=2).flatten(), want)


def test_mamba_block_is_causal_and_initialised_as_the_paper():
    torch.manual_seed(0)
    block = MambaBlock(16, d_state=4, d_conv=4, expand=2, chunk_size=8).eval()
    assert block.dt_rank == 1 and block.x_proj.out_features == 1 + 2 * 4
    assert block.in_proj.bias is None and block.out_proj.bias is None
    torch.testing.assert_close(block.A_log.exp()[0], torch.arange(1.0, 5.0))
    dt = F.softplus(block.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    x = torch.randn(2, 30, 16)
    t = 17
    x2 = x.clone()
    x2[:, t] += 1.0
    with torch.no_grad():
        y, y2 = block(x), block(x2)
    assert y.shape == (2, 30, 16)
    torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=0)
    assert (y2[:, t] - y[:, t]).abs().max() > 1e-4
    assert (y2[:, -1] - y[:, -1]).abs().max() > 1e-6  # the state carries the change forward


def _geometry(name: str, mark_dim: int) -> dict:
    pred = 12 if name.startswith("mamba") else 20  # Mamba: pred_len <= seq_len
    return dict(seq_len=16, pred_len=pred, enc_in=3, mark_dim=mark_dim)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_maps_windows_with_and_without_marks(name):
    torch.manual_seed(0)
    for mark_dim in (0, 4):
        model = create_model(name, **_geometry(name, mark_dim)).eval()
        c = model.config
        x, marks = torch.randn(2, 16, 3), torch.randn(2, 16, 4)
        n_feat = 16 * c.d_model if name.startswith("mamba") else (3 + mark_dim) * c.d_model
        with torch.no_grad():
            for x_mark in (None, marks):
                y = model(x, x_mark=x_mark, y_mark=torch.randn(2, c.pred_len, 4))
                assert y.shape == (2, c.pred_len, 3) and torch.isfinite(y).all()
                assert model.features(x, x_mark).shape == (2, n_feat)
            if mark_dim:  # marks reach the output
                assert not torch.allclose(model(x, marks), model(x, marks + 1.0))


@pytest.mark.parametrize("name", NAMES)
def test_registered_params_match_the_build(name):
    assert abs(count_params(create_model(name)) / 1e6 - get_model_spec(name).params_m) < 1e-3


def test_dense_variants_use_hydra_wrapper_with_headdim_4():
    block = create_model("mamba_dense").blocks[0]
    assert isinstance(block, HydraDense) and isinstance(block.dense, DenseMixer)
    assert (block.dense.n_tokens, block.dense.d_model, block.dense.n_heads) == (96, 256, 64)
    assert block.conv.kernel_size == (7,) and block.conv.padding == (3,)
    model = create_model("s_mamba_dense", mark_dim=4)
    for mixer in (model.layers[0].mixer.forward_mixer, model.layers[0].mixer.backward_mixer):
        assert isinstance(mixer, HydraDense)
        assert (mixer.dense.n_tokens, mixer.dense.d_model, mixer.dense.n_heads) == (11, 512, 128)
        with pytest.raises(ValueError, match="11 tokens"):  # tied to enc_in + mark_dim
            mixer(torch.randn(1, 10, 256))


def test_mixer_choice_per_model():
    kinds = {n: type(create_model(n).blocks[0]).__name__ for n in ("mamba_tiny",
             "mamba_monarch_tiny")}  # fmt: skip
    assert kinds == {"mamba_tiny": "MambaBlock", "mamba_monarch_tiny": "M2SequenceMixer"}
    bi = create_model("s_mamba_tiny").layers[0].mixer
    assert isinstance(bi.forward_mixer, MambaBlock) and isinstance(bi.backward_mixer, MambaBlock)
    assert (bi.forward_mixer.d_state, bi.forward_mixer.d_inner) == (2, 16)  # d_state 2, expand 1
    mono = create_model("s_mamba_monarch_tiny").layers[0].mixer
    assert type(mono.forward_mixer).__name__ == "M2SequenceMixer" and mono.backward_mixer is None


def test_mamba_outputs_last_pred_len_steps_and_rejects_longer_horizons():
    torch.manual_seed(0)
    full = MambaTS(MambaTSConfig(seq_len=24, pred_len=24, enc_in=3, d_model=16, d_ff=4)).eval()
    part = MambaTS(MambaTSConfig(seq_len=24, pred_len=8, enc_in=3, d_model=16, d_ff=4)).eval()
    part.load_state_dict(full.state_dict())
    x = torch.randn(2, 24, 3)
    with torch.no_grad():
        torch.testing.assert_close(part(x), full(x)[:, -8:])
    for name in MAMBA:
        with pytest.raises(ConfigError, match="seq_len = pred_len"):
            create_model(f"{name}_tiny", seq_len=96, pred_len=192)


@pytest.mark.parametrize("name", ["mamba_tiny", "s_mamba_tiny"])
def test_instance_norm_makes_forecast_shift_equivariant(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 96, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x + 3.0), model(x) + 3.0, rtol=0, atol=1e-4)
        mask = torch.ones_like(x)
        torch.testing.assert_close(model(x, mask=mask), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "label"), [("mamba_tiny", "Mamba"), ("s_mamba_tiny", "S-Mamba"),
                                             ("mamba_dense_tiny", "Mamba")])  # fmt: skip
def test_wrong_input_shape_names_the_model(name, label):
    model = create_model(name)
    for bad in (torch.randn(2, 95, 7), torch.randn(2, 96, 6), torch.randn(96, 7)):
        with pytest.raises(ValueError, match=f"^{label} was built for"):
            model(bad)
        with pytest.raises(ValueError, match=f"^{label} was built for"):
            model.features(bad)
    marked = create_model(name, mark_dim=4)
    with pytest.raises(ValueError, match=f"^{label} was built for x_mark"):
        marked(torch.randn(2, 96, 7), torch.randn(2, 96, 3))


@pytest.fixture(scope="module")
def etth1_windows() -> tuple[torch.Tensor, ...]:
    from tasks import ts_data

    path, src, rev = ts_data.locate("ETTh1", None, True)
    s = ts_data.read_series("ETTh1", path, 96, src, rev)
    starts = range(0, 8 * 24, 24)
    x = np.stack([s.values[i : i + 96] for i in starts])
    y = np.stack([s.values[i + 96 : i + 192] for i in starts])
    marks = np.stack([s.marks[i : i + 96] for i in starts])
    return tuple(torch.from_numpy(a).float() for a in (x, y, marks))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("with_marks", [False, True])
def test_adam_step_on_etth1_is_finite(name, with_marks, etth1_windows):
    torch.manual_seed(0)
    x, y, marks = etth1_windows
    model = create_model(name, mark_dim=marks.shape[-1] if with_marks else 0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = F.mse_loss(model(x, marks if with_marks else None), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all()]  # fmt: skip
    assert not bad, bad
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        assert torch.isfinite(F.mse_loss(model(x, marks if with_marks else None), y))
