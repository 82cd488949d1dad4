"""M2-ViT: shapes, block-diagonal MLPs, mixer direction, optimizer groups, config, timm."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from m2bench.errors import ConfigError, M2BenchError
from m2bench.layers.long_conv import HyenaFilter
from m2bench.models import count_params
from m2bench.models.m2_vit import M2ViT, M2ViTConfig, register_timm_models
from m2bench.registry import MODELS, create_model

SMALL = dict(img_size=28, patch_size=4, in_chans=1)  # 49 tokens


def _tiny(**overrides: object) -> M2ViT:
    torch.manual_seed(0)
    return create_model("m2_vit_tiny", **overrides).eval()


def test_tiny_shapes_at_default_and_small_geometry():
    model = _tiny()
    assert model.num_features == 128
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 128)
    small = _tiny(**SMALL)
    assert small.config.num_patches == 49
    assert small.forward_features(torch.randn(3, 1, 28, 28)).shape == (3, 49, 128)
    assert small(torch.randn(3, 1, 28, 28)).shape == (3, small.num_features)


def test_drop_path_rates_increase_linearly_over_depth():
    model = M2ViT(M2ViTConfig(d_model=32, depth=5, hyena_order=8, drop_path=0.2, **SMALL))
    rates = [block.drop_path.p for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_mlp_is_block_diagonal_and_equals_its_dense_form():
    model = _tiny(**SMALL)
    mlp = model.blocks[0].mlp
    w1 = mlp.fc1.to_dense()
    assert w1.shape == (512, 128)
    ob, ib = 512 // 4, 128 // 4
    for i in range(4):
        for j in range(4):
            block = w1[i * ob : (i + 1) * ob, j * ib : (j + 1) * ib]
            if i == j:
                assert block.abs().sum() > 0
            else:
                assert torch.count_nonzero(block) == 0, (i, j)
    x = torch.randn(2, 7, 128)
    by_hand = F.linear(F.gelu(F.linear(x, w1, mlp.fc1.bias)), mlp.fc2.to_dense(), mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), by_hand, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_causal_mixer_hides_later_patches(bidirectional):
    # float64 so that the FFT convolution's rounding-level leakage is far below the tolerance;
    # the implicit filters always compute their kernels in float32, so they stay float32
    model = _tiny(bidirectional=bidirectional, **SMALL).double()
    for f in (m for m in model.modules() if isinstance(m, HyenaFilter)):
        f.float()
    assert model.run_tags()["mixer"] == ("m2 bidirectional" if bidirectional else "m2 causal")
    images = torch.randn(1, 1, 28, 28, dtype=torch.float64)
    changed = images.clone()
    changed[..., 24:, 24:] += 1.0  # the last patch in raster order
    with torch.no_grad():
        before, after = model.forward_features(images), model.forward_features(changed)
    earlier_shift = (after[:, :-1] - before[:, :-1]).abs().max().item()
    assert (after[:, -1] - before[:, -1]).abs().max() > 1e-3
    if bidirectional:
        assert earlier_shift > 1e-4  # measured ~4e-3: the mixer branch is small at init
    else:
        assert earlier_shift < 1e-9


def test_optimizer_groups_follow_hyena_vit():
    model = _tiny(**SMALL)
    groups = model.optimizer_groups(lr=2e-4, weight_decay=0.01)
    assert all(set(g) == {"params", "lr", "weight_decay"} for g in groups)
    filters = [m for m in model.modules() if isinstance(m, HyenaFilter)]
    assert len(filters) == 4
    z_ids = {id(f.z) for f in filters}
    mlp_ids = {id(p) for f in filters for m in (f.mlp_fwd, f.mlp_rev) for p in m.parameters()}
    (pos,) = [g for g in groups if {id(p) for p in g["params"]} == z_ids]
    assert pos["lr"] == 1e-5 and pos["weight_decay"] == 0.0
    for g in groups:
        if mlp_ids & {id(p) for p in g["params"]}:
            assert g["lr"] == 2e-4 and g["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    filter_ids = {id(p) for f in filters for p in f.parameters()}
    assert set(ids) == filter_ids  # every filter parameter, nothing else
    assert model.no_weight_decay() == set()


def test_bad_config_and_wrong_input_size_raise():
    with pytest.raises(ConfigError, match="patch_size"):
        M2ViTConfig(img_size=30, patch_size=4)
    with pytest.raises(ConfigError, match="patch_size"):
        create_model("m2_vit_tiny", img_size=30, patch_size=4, in_chans=1)
    with pytest.raises(ConfigError, match="monarch_blocks"):
        M2ViTConfig(d_model=130, monarch_blocks=4)
    with pytest.raises(ConfigError, match="kernel"):
        M2ViTConfig(kernel="cuda")
    model = _tiny(**SMALL)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="in_chans=1"):
        model(torch.randn(2, 3, 28, 28))


def test_registry_builds_and_claims_b16_size():
    spec = MODELS.get("m2_vit_b16")
    assert spec.kind == "image" and spec.family == "m2" and "Fu et al. 2023" in spec.description
    with torch.device("meta"):
        model = create_model("m2_vit_b16")
    assert (model.config.d_model, model.config.depth, model.config.num_patches) == (768, 12, 196)
    assert count_params(model) / 1e6 == pytest.approx(spec.params_m, rel=0.02)
    assert 44e6 < count_params(model) < 48e6  # the paper's "45M"
    small = create_model("m2_vit_tiny", **SMALL)
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 128)
    assert small.run_tags()["kernel"] == "torch" and small.run_tags()["kernel_impl"] == "torch"


def test_timm_registration_and_classifier():
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is overwritten
        register_timm_models()
        register_timm_models()
    assert {"m2_vit_b16", "m2_vit_tiny"} <= set(timm.list_models("m2_vit*"))
    torch.manual_seed(0)
    model = timm.create_model("m2_vit_tiny", num_classes=10, **SMALL).eval()
    images = torch.randn(2, 1, 28, 28)
    assert model(images).shape == (2, 10)
    assert model.num_classes == 10 and model.num_features == 128
    tokens = model.forward_features(images)
    assert tokens.shape == (2, 49, 128)
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens.mean(1))
    assert model.get_classifier().out_features == 10
    assert model.pretrained_cfg["input_size"] == (1, 28, 28)
    assert model.pretrained_cfg["num_classes"] == 10 and model.default_cfg["url"] == ""
    model.reset_classifier(5)
    assert model(images).shape == (2, 5) and model.pretrained_cfg["num_classes"] == 5
    model.reset_classifier(0)
    assert model(images).shape == (2, 128)
    with pytest.raises(ConfigError, match="avg"):
        model.reset_classifier(3, global_pool="token")
    with pytest.raises(M2BenchError, match="no M2-ViT weights"):
        timm.create_model("m2_vit_tiny", pretrained=True)
    deep = timm.create_model("m2_vit_tiny", drop_path_rate=0.3, **SMALL)
    assert deep.config.drop_path == 0.3 and deep.backbone.blocks[-1].drop_path.p == 0.3
    with pytest.raises(ConfigError, match="valid"):
        timm.create_model("m2_vit_tiny", no_such_field=1)
