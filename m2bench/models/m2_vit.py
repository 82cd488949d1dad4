"""M2-ViT: a patch-token image backbone mixed by Monarch Mixer layers (Hyena ViT with M2 blocks).

Paper: Fu et al., "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture" (NeurIPS 2023,
https://arxiv.org/abs/2310.12109): M2-ViT-b, 45M parameters, 79.5% ImageNet-1k top-1 (ViT-b 78.5).
No M2-ViT code or weights were released. The paper describes it as Hyena ViT-b with block-diagonal
MLPs; the base is Hyena ViT-b of HazyResearch/safari@02220c6 (``configs/experiment/imagenet/
hyena-vit.yaml``, ``configs/model/vit.yaml``, ``src/models/baselines/vit_all.py``,
``src/models/sequence/hyena.py``), as summarised in ``shared/specs/m2_recipes.md`` section 5.

Computation (B batch, N = (img_size / patch_size)**2 tokens, d width):

- patch embedding: Conv2d(in_chans, d, kernel = stride = patch_size), tokens in raster order
  (B, N, d); no class token, no position embedding;
- ``depth`` pre-norm blocks: ``x = x + drop_path(mixer(norm1(x)))``, ``x = x +
  drop_path(mlp(norm2(x)))``; mixer = :class:`~m2bench.layers.mixer.M2SequenceMixer` over the N
  tokens as a 1-D sequence; mlp = block-diagonal fc1 (d -> r·d), GELU, block-diagonal fc2; drop-path
  rate of block i is ``drop_path * i / (depth - 1)`` (timm);
- final LayerNorm; ``forward`` mean-pools the tokens -> (B, d). No classifier: tasks attach heads,
  and :class:`M2ViTClassifier` adds one for timm (:func:`register_timm_models`).

Deviations (there is no official code to match, so these are m2bench's choices):

- MLPs are 4-block block-diagonal (fc1 and fc2, no channel shuffle), the paper's one stated change.
- The mixer is the M2 gated long convolution (bidirectional, 2N-tap kernel, by default;
  ``bidirectional=False`` gives Hyena ViT's causal convolution over the raster order).
- ``residual_long_conv`` is off: Hyena ViT has no residual long convolution and the paper does not
  say whether M2-ViT used one (an open question in HazyResearch/m2 issue #21).
- Short depthwise conv of 5 taps, filter ``emb_dim`` 33 and order 128, as Hyena ViT. The filter
  MLP is m2bench's (two inner Sin layers, fixed in ``m2bench.layers.long_conv``; safari's ViT config
  has one); its Sin frequency starts at 1 as in safari's ViT config (``w: 1``; M2-BERT uses 10).
- Mean pooling over tokens, as Hyena ViT (no class token).
- Init: trunc-normal(0.02) dense weights with zero bias, LayerNorm ones/zeros (timm ViT); the
  block-diagonal weights keep :class:`BlockdiagLinear`'s uniform fan-in-of-one-block init (the M2
  structured linears are not ``nn.Linear`` and so escape a ViT-style ``apply(init)``), and the
  patch conv, short conv and implicit filters keep their own inits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.errors import ConfigError, M2BenchError, WeightsUnavailable
from m2bench.layers import check_kernel, triton_coverage
from m2bench.layers.long_conv import HyenaFilter, hyena_param_groups
from m2bench.layers.mixer import M2SequenceMixer
from m2bench.layers.monarch import BlockdiagLinear
from m2bench.registry import register_model

__all__ = [
    "M2ViT",
    "M2ViTClassifier",
    "M2ViTConfig",
    "m2_vit_b16",
    "m2_vit_tiny",
    "register_timm_models",
]

_INIT_STD = 0.02  # timm ViT
_POS_EMB_LR = 1e-5  # Hyena ViT lr_pos_emb of the filters' positional features z


@dataclass(frozen=True)
class M2ViTConfig:
    """Architecture of an M2-ViT backbone; every field is a valid override."""

    img_size: int = 224  # square inputs only; the token count is fixed at build time
    patch_size: int = 16
    in_chans: int = 3
    d_model: int = 768
    depth: int = 12
    mlp_ratio: float = 4.0  # MLP hidden width = int(d_model * mlp_ratio)
    monarch_blocks: int = 4  # blocks of the block-diagonal MLP weights
    drop_path: float = 0.1  # stochastic depth of the last block; linear from 0 over depth
    bidirectional: bool = True  # False: causal long convolution over the raster order
    residual_long_conv: bool = False  # Hyena ViT has none; the paper leaves it open
    short_conv_size: int = 5  # Hyena ViT short_filter_order
    hyena_order: int = 128  # hidden width of the implicit-filter MLPs
    hyena_emb_dim: int = 33  # positional features per position (Hyena ViT)
    hyena_freq_init: float = 1.0  # initial Sin frequency (Hyena ViT's w: 1; M2-BERT: 10)
    hyena_w_mod: float = 1.0  # fixed factor inside the Sin
    layer_norm_eps: float = 1e-6
    kernel: str = "torch"  # "torch" | "triton", passed to the layers

    def __post_init__(self) -> None:
        check_kernel(self.kernel)
        sizes = ("img_size", "patch_size", "in_chans", "d_model", "depth", "monarch_blocks")
        sizes += ("short_conv_size", "hyena_order")
        bad = [f"{n}={getattr(self, n)}" for n in sizes if getattr(self, n) < 1]
        if bad:
            raise ConfigError(f"M2ViTConfig sizes must be positive: {', '.join(bad)}")
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}"
            )
        if self.mlp_ratio <= 0 or self.mlp_hidden % self.monarch_blocks:
            raise ConfigError(
                f"MLP width int(d_model * mlp_ratio)={self.mlp_hidden} must be positive and "
                f"divisible by monarch_blocks={self.monarch_blocks}"
            )
        if self.d_model % self.monarch_blocks:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by monarch_blocks={self.monarch_blocks}"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.hyena_emb_dim < 3 or self.hyena_emb_dim % 2 == 0:
            raise ConfigError(f"hyena_emb_dim must be odd and >= 3, got {self.hyena_emb_dim}")

    @property
    def num_patches(self) -> int:
        """Tokens per image, the mixer's fixed sequence length."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP."""
        return int(self.d_model * self.mlp_ratio)


def _make_config(defaults: M2ViTConfig, overrides: dict) -> M2ViTConfig:
    """``replace(defaults, **overrides)``; unknown keys raise listing the valid fields."""
    valid = [f.name for f in fields(M2ViTConfig)]
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ConfigError(f"M2-ViT has no setting {', '.join(bad)}; valid: {', '.join(valid)}")
    return replace(defaults, **overrides)


class DropPath(nn.Module):
    """Stochastic depth: zero whole samples with probability ``p`` in training, rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop samples of ``x`` (B, ...)."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class BlockdiagMlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with block-diagonal fc1 (d -> hidden) and fc2 (hidden -> d)."""

    def __init__(self, config: M2ViTConfig) -> None:
        super().__init__()
        d, hidden, nblocks = config.d_model, config.mlp_hidden, config.monarch_blocks
        self.fc1 = BlockdiagLinear(d, hidden, nblocks, bias=True, kernel=config.kernel)
        self.fc2 = BlockdiagLinear(hidden, d, nblocks, bias=True, kernel=config.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to the last dimension of ``x``."""
        return self.fc2(F.gelu(self.fc1(x)))


class M2ViTBlock(nn.Module):
    """Pre-norm residual block: M2 sequence mixer, then block-diagonal MLP; (B, N, d) -> same."""

    def __init__(self, config: M2ViTConfig, drop_path: float) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mixer = M2SequenceMixer(
            d,
            config.num_patches,
            hyena_order=config.hyena_order,
            hyena_emb_dim=config.hyena_emb_dim,
            hyena_freq_init=config.hyena_freq_init,
            hyena_w_mod=config.hyena_w_mod,
            bidirectional=config.bidirectional,
            residual_long_conv=config.residual_long_conv,
            short_conv_size=config.short_conv_size,
            kernel=config.kernel,
        )
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = BlockdiagMlp(config)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to tokens ``x`` (B, N, d)."""
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _init_weights(module: nn.Module) -> None:
    """timm ViT init of dense layers and norms (filters and block-diagonal layers excluded)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=_INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class M2ViT(nn.Module):
    """The M2-ViT backbone (``image`` kind): images (B, C, H, W) -> pooled features (B, d)."""

    def __init__(self, config: M2ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_features = config.d_model
        self.patch_embed = nn.Conv2d(
            config.in_chans, config.d_model, config.patch_size, stride=config.patch_size
        )
        rates = [config.drop_path * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(M2ViTBlock(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        filters = [m for m in self.modules() if isinstance(m, HyenaFilter)]
        inside_filters = {id(m) for f in filters for m in f.modules()}
        for m in self.modules():
            if id(m) not in inside_filters:
                _init_weights(m)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Token features (B, N, d) after the final norm, tokens in raster order."""
        c = self.config
        expected = (c.in_chans, c.img_size, c.img_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"M2-ViT was built for images (B, {c.in_chans}, {c.img_size}, {c.img_size}) "
                f"(in_chans={c.in_chans}, img_size={c.img_size}); got {tuple(images.shape)}. "
                "Its token count is fixed at build time: rebuild with img_size/in_chans to match"
            )
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mean-pooled features (B, num_features)."""
        return self.forward_features(images).mean(dim=1)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Hyena ViT's filter groups; the caller places every other parameter.

        Implicit-filter MLPs and their Sin frequency train at ``lr`` without weight decay, the
        filters' positional features ``z`` at lr 1e-5 without decay. The filters' skip ``D``
        (1-D, like safari's filter ``bias``) is left to the caller's no-decay rule.
        """
        del weight_decay  # filter weight decay is 0 whatever the base value
        return hyena_param_groups(self, lr, pos_lr=_POS_EMB_LR)

    def no_weight_decay(self) -> set[str]:
        """timm's hook: no class token or position table, so nothing is exempted by name."""
        return set()

    def run_tags(self) -> dict[str, str]:
        """Which implementation and mixer direction run (run tags)."""
        c = self.config
        return {
            "kernel": c.kernel,
            "kernel_impl": "torch" if c.kernel == "torch" else triton_coverage(),
            "mixer": "m2 bidirectional" if c.bidirectional else "m2 causal",
        }


# --- timm integration --------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN/STD
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _timm_cfg(config: M2ViTConfig, num_classes: int = 1000) -> dict:
    return {
        "url": "",  # no M2-ViT weights were released
        "num_classes": num_classes,
        "input_size": (config.in_chans, config.img_size, config.img_size),
        "fixed_input_size": True,
        "pool_size": None,
        "crop_pct": 0.9,  # Hyena ViT eval crop
        "interpolation": "bicubic",
        "mean": _IMAGENET_MEAN,
        "std": _IMAGENET_STD,
        "first_conv": "backbone.patch_embed",
        "classifier": "head",
        "paper_ids": "arXiv:2310.12109",
    }


class M2ViTClassifier(nn.Module):
    """An :class:`M2ViT` with a linear head, following timm's classifier conventions.

    Args:
        config: backbone config.
        num_classes: head outputs; 0 gives an identity head (pooled features).
        drop_rate: dropout before the head.
        global_pool: ``"avg"`` (or ``None``), the only pooling: token mean.
    """

    def __init__(
        self,
        config: M2ViTConfig,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        global_pool: str | None = "avg",
    ) -> None:
        super().__init__()
        self.backbone = M2ViT(config)
        self.config = config
        self.num_features = self.head_hidden_size = self.backbone.num_features
        self.global_pool = "avg"
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        self.pretrained_cfg = self.default_cfg = _timm_cfg(config, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Token features (B, N, d) after the final norm."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean-pool tokens (B, N, d); logits (B, num_classes), or pooled (B, d) if pre_logits."""
        x = self.head_drop(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of images (B, in_chans, img_size, img_size)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The head module."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised head with ``num_classes`` outputs (0: identity)."""
        if global_pool not in (None, "avg"):
            raise ConfigError(f"M2-ViT pools by token mean only ('avg'), got {global_pool!r}")
        self.num_classes = num_classes
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes)
            _init_weights(self.head)
        else:
            self.head = nn.Identity()
        if hasattr(self, "pretrained_cfg"):
            self.pretrained_cfg["num_classes"] = num_classes

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The backbone's filter groups (:meth:`M2ViT.optimizer_groups`)."""
        return self.backbone.optimizer_groups(lr, weight_decay)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (none)."""
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


def _create_timm(
    variant: str, defaults: M2ViTConfig, pretrained: bool, **kwargs: object
) -> M2ViTClassifier:
    """timm entrypoint body: timm's keyword arguments mapped onto :class:`M2ViTConfig`."""
    if pretrained:
        raise WeightsUnavailable(
            f"{variant}: no M2-ViT weights were ever released (Fu et al. 2023 published no "
            "ImageNet checkpoint); use pretrained=False, or checkpoint_path= for your own"
        )
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    kwargs.pop("cache_dir", None)
    if isinstance(pretrained_cfg, str) and pretrained_cfg:
        raise WeightsUnavailable(f"{variant} has no pretrained tag {pretrained_cfg!r}")
    num_classes = int(kwargs.pop("num_classes", 1000))
    drop_rate = float(kwargs.pop("drop_rate", 0.0))
    global_pool = kwargs.pop("global_pool", None)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if "drop_path_rate" in kwargs:
        kwargs["drop_path"] = kwargs.pop("drop_path_rate")
    model = M2ViTClassifier(_make_config(defaults, kwargs), num_classes, drop_rate, global_pool)
    if hasattr(pretrained_cfg, "to_dict"):
        pretrained_cfg = pretrained_cfg.to_dict()
    cfg = {**(pretrained_cfg or {}), **overlay, **_timm_cfg(model.config, num_classes)}
    model.pretrained_cfg = model.default_cfg = {**cfg, "architecture": variant}
    return model.to(device=device, dtype=dtype) if device or dtype else model


_B16 = M2ViTConfig()
_TINY = M2ViTConfig(d_model=128, depth=4, mlp_ratio=4.0, monarch_blocks=4, drop_path=0.0)
#: timm reads this module attribute when registering (pretrained cfgs of each architecture).
default_cfgs = {"m2_vit_b16": _timm_cfg(_B16), "m2_vit_tiny": _timm_cfg(_TINY)}


def m2_vit_b16(pretrained: bool = False, **kwargs: object) -> M2ViTClassifier:
    """timm entrypoint: M2-ViT-b/16 with a linear head (no pretrained weights exist)."""
    return _create_timm("m2_vit_b16", _B16, pretrained, **kwargs)


def m2_vit_tiny(pretrained: bool = False, **kwargs: object) -> M2ViTClassifier:
    """timm entrypoint: tiny M2-ViT (d 128, 4 blocks) with a linear head, for tests."""
    return _create_timm("m2_vit_tiny", _TINY, pretrained, **kwargs)


def register_timm_models() -> None:
    """Register ``m2_vit_b16`` and ``m2_vit_tiny`` in timm's model registry (idempotent).

    Raises:
        M2BenchError: timm already holds one of the names from another module.
    """
    from timm.models import is_model, model_entrypoint, register_model

    for fn in (m2_vit_b16, m2_vit_tiny):
        if is_model(fn.__name__):
            owner = getattr(model_entrypoint(fn.__name__), "__module__", "?")
            if owner == fn.__module__:
                continue  # already ours (a second call, or a reload of this module)
            raise M2BenchError(f"timm already has a model {fn.__name__!r} from {owner}")
        register_model(fn)


# --- registered variants -----------------------------------------------------------------------

_IMAGE = dict(kind="image", family="m2", config_cls=M2ViTConfig)


@register_model(
    "m2_vit_b16",
    params_m=46.7,
    description="M2-ViT-b/16 (d 768, 12 blocks, 224px): M2-ViT-b, ~45M params, Fu et al. 2023",
    **_IMAGE,
)
def m2_vit_b16_features(**overrides: object) -> M2ViT:
    """M2-ViT-b/16 backbone (d 768, 12 blocks, 224px, 196 tokens)."""
    return M2ViT(_make_config(_B16, overrides))


@register_model("m2_vit_tiny", params_m=0.96, **_IMAGE)
def m2_vit_tiny_features(**overrides: object) -> M2ViT:
    """Tiny M2-ViT backbone (d 128, 4 blocks, 224px) for tests and sample runs."""
    return M2ViT(_make_config(_TINY, overrides))


if "timm" in sys.modules:  # timm already loaded: registering costs nothing more
    register_timm_models()
