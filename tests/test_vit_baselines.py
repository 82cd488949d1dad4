"""The timm ViT baselines: shapes, the dense token mixer, size match with M2-ViT, weights."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.vit import DenseTokenMixer
from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.models import count_params
from m2bench.registry import MODELS, create_model, load_plugins

MNIST = dict(img_size=28, patch_size=4, in_chans=1)
SMALL_GREY = dict(img_size=32, in_chans=1)
load_plugins()


@pytest.mark.parametrize("name", ["vit_tiny", "dense_vit_tiny"])
@pytest.mark.parametrize("geometry", [{}, MNIST], ids=["224", "mnist"])
def test_features_shape_at_default_and_mnist_geometry(name, geometry):
    torch.manual_seed(0)
    model = create_model(name, **geometry)
    c = model.config
    out = model(torch.randn(3, c.in_chans, c.img_size, c.img_size))
    assert out.shape == (3, model.num_features) == (3, c.embed_dim)
    assert torch.isfinite(out).all()
    assert model.run_tags()["mixer"] == ("dense" if name.startswith("dense") else "attention")


def test_timm_architectures_build_on_meta_with_their_widths():
    with torch.device("meta"):
        small = create_model("vit_small_patch16_224")
        base = create_model("vit_base_patch16_224", drop_path=0.1)
    assert (small.num_features, base.num_features) == (384, 768)
    assert small.run_tags()["timm_model"] == "vit_small_patch16_224"
    assert base.net.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_dense_mixer_matches_einsum_with_its_own_matrices():
    torch.manual_seed(0)
    mixer = DenseTokenMixer(num_tokens=5, dim=6, num_heads=3)
    x = torch.randn(2, 5, 6)
    expected = torch.zeros(2, 5, 6)
    for h in range(3):  # channels 2h, 2h+1 form head h
        xh = x[..., 2 * h : 2 * h + 2]
        expected[..., 2 * h : 2 * h + 2] = torch.einsum("nm,bmc->bnc", mixer.weight[h], xh)
    torch.testing.assert_close(mixer(x), expected / math.sqrt(5))


def test_dense_mixer_is_input_independent_one_hot_token_gives_a_column():
    torch.manual_seed(0)
    mixer = DenseTokenMixer(num_tokens=4, dim=4, num_heads=2)
    x = torch.zeros(1, 4, 4)
    x[0, 2, :] = 1.0  # token 2 is one-hot in every channel
    out = mixer(x) * math.sqrt(4)
    torch.testing.assert_close(out[0, :, 0], mixer.weight[0, :, 2].detach())
    torch.testing.assert_close(out[0, :, 3], mixer.weight[1, :, 2].detach())
    other = torch.randn(1, 4, 4)  # the map is linear: mixing a sum is the sum of the mixes
    torch.testing.assert_close(mixer(x + other), mixer(x) + mixer(other))


def test_dense_mixer_refuses_masks_and_other_token_counts():
    mixer = DenseTokenMixer(num_tokens=4, dim=4, num_heads=2)
    with pytest.raises(ValueError, match="mask"):
        mixer(torch.zeros(1, 4, 4), attn_mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match="built for 4 tokens"):
        mixer(torch.zeros(1, 5, 4))


def test_dense_vit_replaces_every_attention():
    with torch.device("meta"):
        model = create_model("dense_vit_small")
    mixers = [b.attn for b in model.net.blocks]
    assert all(isinstance(m, DenseTokenMixer) for m in mixers) and len(mixers) == 12
    assert mixers[0].weight.shape == (6, 197, 197)  # 196 patches + class token
    assert not any("qkv" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", ["vit_tiny", "dense_vit_tiny", "vit_small_patch16_224"])
def test_wrong_input_size_raises_naming_img_size(name):
    model = create_model(name, **MNIST)
    with pytest.raises(ValueError, match="img_size 28"):
        model(torch.randn(1, 1, 32, 32))


def test_patch_size_must_divide_img_size():
    with pytest.raises(ConfigError, match="img_size 30 .*patch_size 4"):
        create_model("vit_tiny", img_size=30, patch_size=4)


@pytest.mark.parametrize("geometry", [{}, MNIST], ids=["224", "mnist"])
def test_vit_tiny_has_the_parameters_of_m2_vit_tiny(geometry):
    if "m2_vit_tiny" not in MODELS:
        pytest.skip("m2_vit_tiny is not registered")
    with torch.device("meta"):
        ours = count_params(create_model("vit_tiny", **geometry))
        m2 = count_params(create_model("m2_vit_tiny", **geometry))
    assert ours == pytest.approx(m2, rel=0.05)


@pytest.mark.parametrize("name", ["vit_tiny", "dense_vit_small", "vit_base_patch16_224"])
def test_no_weight_decay_names_are_parameters(name):
    with torch.device("meta"):
        model = create_model(name)
    names = {n for n, _ in model.named_parameters()}
    assert "net.pos_embed" in model.no_weight_decay() <= names


def test_pretrained_offline_raises_weights_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hf_constants  # read the environment at import

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="could not be downloaded"):
        create_model("vit_small_patch16_224", init="pretrained")


def test_pretrained_from_local_checkpoints_loads_every_weight(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_model("vit_small_patch16_224", **SMALL_GREY)
    torch.save(source.state_dict(), tmp_path / "vit_s.pth")  # the wrapper's "net." keys
    folder = tmp_path / "hub_layout"  # timm's hub layout: model.safetensors of the timm model
    folder.mkdir()
    save_file(source.net.state_dict(), folder / "model.safetensors")
    want = source.state_dict()
    for path in (tmp_path / "vit_s.pth", folder):
        loaded = create_model(
            "vit_small_patch16_224", init="pretrained", checkpoint=str(path), **SMALL_GREY
        )
        assert loaded.run_tags()["weights_file"].startswith(str(path))
        got = loaded.state_dict()
        assert want.keys() == got.keys()
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, msg=f"{path.name}: {name}")


def test_pretrained_rejects_architecture_overrides_and_foreign_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="use --init random"):
        create_model("vit_small_patch16_224", init="pretrained", embed_dim=192)
    tiny = create_model("vit_tiny")
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit vit_small_patch16_224"):
        create_model("vit_small_patch16_224", init="pretrained", checkpoint=str(path))
    with pytest.raises(WeightsUnavailable, match="no checkpoint"):
        create_model("vit_small_patch16_224", init="pretrained", checkpoint=str(tmp_path / "x"))
