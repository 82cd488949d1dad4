"""Vision Transformer baselines through timm: attention ViTs and a dense-mixer ViT.

Papers: ViT, Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021,
https://arxiv.org/abs/2010.11929); the dense token mixer is the plain learned mixing matrix of
JustDense (Park et al., 2025, https://arxiv.org/abs/2508.09153), i.e. MLP-Mixer's token-mixing
MLP (Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601) reduced to one linear map per head.
The network code is timm's ``VisionTransformer``; m2bench configures it and, for the dense
variants, swaps each ``block.attn`` for :class:`DenseTokenMixer` (implemented here from the papers).

Contract (``image`` kind): ``forward(images (B, in_chans, img_size, img_size))`` returns the
pooled features (B, ``num_features``); timm's classifier is removed (``num_classes=0``).

Variants and what is matched:

- ``vit_small_patch16_224``, ``vit_base_patch16_224``: timm's own architectures (class token,
  token pooling). Random init by default; ``--init pretrained`` loads timm's default pretrained
  tag from the hub, or a local ``.safetensors``/``.pth`` file or folder via ``--checkpoint``.
- ``vit_tiny``: an attention ViT with the parameter count of ``m2_vit_tiny`` (same width 128,
  depth 4, patch 16, mean pooling, no class token; timm's learned position embedding kept). The
  attention's qkv and output projections have the size of M2's mixer in/out projections; the
  dense MLP is widened to ratio 4.375 (hidden 560) so that, with the position table, it takes the
  place of M2's block-diagonal MLP, long-convolution filters and short convolution. Measured:
  966,208 vs 964,752 (+0.15%) at 224/16/3 and 851,136 vs 849,092 (+0.24%) at 28/4/1 (MNIST).
- ``dense_vit_tiny``, ``dense_vit_small``: ``vit_tiny``'s and ``vit_small_patch16_224``'s
  geometry with each attention replaced by the dense mixer. Random init only.

Dense mixer, per block (B batch, N tokens incl. the class token, C channels in H heads): x is
split into heads x_h (B, N, C/H) and ``y_h = M_h @ x_h / sqrt(N)`` with a learned (N, N) matrix M_h
(Xavier-uniform init); no q/k/v and no output projection. N is fixed at build time by
``img_size``/``patch_size``, so other image sizes are refused.

Deviations: JustDense uses one dense layer per mixer shared by all channels, MLP-Mixer a two-layer
token MLP with GELU; here one unnormalised matrix per head, scaled by 1/sqrt(N) (as the dense BERT
baseline), inside an otherwise unchanged pre-norm ViT block.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.registry import register_model

log = logging.getLogger(__name__)
MIXERS = ("attention", "dense")
POOLS = ("token", "avg")


@dataclass(frozen=True)
class TimmViTConfig:
    """Architecture of a timm ViT; every field is a valid override."""

    timm_name: str = ""  # timm architecture of the pretrained weights; "" = plain VisionTransformer
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    mixer: str = "attention"  # "attention" | "dense" (learned N x N token mixing per head)
    class_token: bool = True
    global_pool: str = "token"  # "token" (class token) | "avg" (mean of the patch tokens)
    drop_path: float = 0.0  # stochastic depth rate (timm's drop_path_rate)

    def __post_init__(self) -> None:
        sizes = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")
        bad = [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]
        if bad:
            raise ConfigError(f"TimmViTConfig sizes must be positive: {', '.join(bad)}")
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}"
            )
        if self.mixer not in MIXERS:
            raise ConfigError(f"mixer {self.mixer!r} is not one of {', '.join(MIXERS)}")
        if self.global_pool not in POOLS:
            raise ConfigError(f"global_pool {self.global_pool!r} is not one of {', '.join(POOLS)}")
        if self.global_pool == "token" and not self.class_token:
            raise ConfigError("global_pool 'token' needs class_token=True")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path {self.drop_path} is not in [0, 1)")

    @property
    def num_tokens(self) -> int:
        """Tokens per image entering the blocks: patches plus the class token."""
        return (self.img_size // self.patch_size) ** 2 + int(self.class_token)


class DenseTokenMixer(nn.Module):
    """Input-independent token mixing ``y_h = M_h @ x_h / sqrt(N)``, one (N, N) matrix per head.

    Replaces timm's ``Attention`` inside a ``Block``: (B, N, C) -> (B, N, C).
    """

    def __init__(self, num_tokens: int, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_tokens, self.num_heads = num_tokens, num_heads
        self.head_dim = dim // num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, num_tokens, num_tokens))
        self.scale = 1.0 / math.sqrt(num_tokens)
        for matrix in self.weight.data:  # per head: a 3-d tensor would get the wrong fans
            nn.init.xavier_uniform_(matrix)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        **unused: object,
    ) -> torch.Tensor:
        """Mix the tokens of ``x`` (B, N, C); masks cannot apply to a fixed mixing matrix."""
        if attn_mask is not None or is_causal:
            raise ValueError("DenseTokenMixer takes no attention mask and cannot be causal")
        b, n, c = x.shape
        if n != self.num_tokens:
            raise ValueError(
                f"DenseTokenMixer was built for {self.num_tokens} tokens, got {n}; "
                "the model's img_size and patch_size fix the token count"
            )
        heads = x.reshape(b, n, self.num_heads, self.head_dim)
        mixed = torch.einsum("hnm,bmhd->bnhd", self.weight, heads) * self.scale
        return mixed.reshape(b, n, c)


class TimmViT(nn.Module):
    """A timm ViT (classifier removed) behind the ``image`` interface.

    Args:
        config: the architecture of ``net``.
        net: the timm model, built with ``num_classes=0``.
        weights_source: where the weights came from (a run tag).
    """

    def __init__(
        self, config: TimmViTConfig, net: nn.Module, *, weights_source: str = "random"
    ) -> None:
        super().__init__()
        self.config = config
        self.net = net
        self.num_features: int = net.num_features
        self.weights_source = weights_source

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features) of ``images`` (B, in_chans, img_size, img_size)."""
        c = self.config
        if images.ndim != 4 or tuple(images.shape[1:]) != (c.in_chans, c.img_size, c.img_size):
            raise ValueError(
                f"expected images (B, {c.in_chans}, {c.img_size}, {c.img_size}) for img_size "
                f"{c.img_size}, in_chans {c.in_chans}; got {tuple(images.shape)}"
            )
        return self.net(images)

    def no_weight_decay(self) -> set[str]:
        """timm's no-decay names (position embedding, class token) that exist here."""
        names = {f"net.{n}" for n in self.net.no_weight_decay()}
        return names & {n for n, _ in self.named_parameters()}

    def run_tags(self) -> dict[str, str]:
        """timm architecture, token mixer and weights (run tags)."""
        return {
            "timm_model": self.config.timm_name or "VisionTransformer",
            "mixer": self.config.mixer,
            # the file or hub id actually read (the runner's weights_source tag states the request)
            **({"weights_file": self.weights_source} if self.weights_source != "random" else {}),
        }


def _timm_kwargs(config: TimmViTConfig) -> dict:
    """timm ``VisionTransformer`` arguments of ``config``, classifier removed."""
    args = {k: v for k, v in asdict(config).items() if k not in ("timm_name", "mixer", "drop_path")}
    return dict(args, num_classes=0, drop_path_rate=config.drop_path)


def build_timm_vit(config: TimmViTConfig) -> TimmViT:
    """A randomly initialised :class:`TimmViT` for ``config`` (timm's own init)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if config.timm_name:
        net = timm.create_model(config.timm_name, pretrained=False, **_timm_kwargs(config))
    else:
        net = VisionTransformer(**_timm_kwargs(config))
    if config.mixer == "dense":
        for block in net.blocks:
            block.attn = DenseTokenMixer(config.num_tokens, config.embed_dim, config.num_heads)
    return TimmViT(config, net)


# --- loading and registered variants -----------------------------------------------------------

_PRETRAINED_OVERRIDES = ("img_size", "patch_size", "in_chans", "drop_path")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's hub layout
_SMALL = TimmViTConfig(timm_name="vit_small_patch16_224")
_TINY = TimmViTConfig(
    embed_dim=128, depth=4, num_heads=2, mlp_ratio=4.375, class_token=False, global_pool="avg"
)
_CONFIGS = {
    "vit_small_patch16_224": _SMALL,
    "vit_base_patch16_224": TimmViTConfig(
        timm_name="vit_base_patch16_224", embed_dim=768, num_heads=12
    ),
    "vit_tiny": _TINY,
    "dense_vit_tiny": replace(_TINY, mixer="dense"),
    "dense_vit_small": replace(_SMALL, timm_name="", mixer="dense"),
}


def _local_weights(source: str) -> Path | None:
    """The weight file ``source`` names (a file, or a folder holding one); None for hub ids."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in _WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise WeightsUnavailable(f"no {' or '.join(_WEIGHT_FILES)} in checkpoint folder {source}")
    if source.startswith((".", "~", "/")) or source.count("/") > 1:
        raise WeightsUnavailable(f"no checkpoint file or folder {source!r}")
    return None


def _load_file(config: TimmViTConfig, path: Path) -> nn.Module:
    """The timm model with a local state dict, loaded strictly (no head, no ``net.`` prefix)."""
    from timm.models import load_state_dict
    from timm.models.vision_transformer import checkpoint_filter_fn

    net = build_timm_vit(config).net
    state = {k.removeprefix("net."): v for k, v in load_state_dict(str(path)).items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        state = checkpoint_filter_fn(state, net)  # resamples position and patch embeddings
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise ConfigError(f"{path} does not fit {config.timm_name} ({reason})") from None
    return net


def _load(source: str, name: str, **overrides: object) -> TimmViT:
    """Registry loader: timm's pretrained weights (hub tag) or a local file, behind TimmViT."""
    import timm

    bad = sorted(set(overrides) - set(_PRETRAINED_OVERRIDES))
    if bad:
        raise ConfigError(
            f"{name} with pretrained weights takes only {', '.join(_PRETRAINED_OVERRIDES)} "
            f"overrides (got {', '.join(bad)}); use --init random to change the architecture"
        )
    config = replace(_CONFIGS[name], **overrides)
    local = _local_weights(source)
    if local is not None:
        log.info("loading %s weights from %s", name, local)
        return TimmViT(config, _load_file(config, local), weights_source=str(local)).eval()
    tag = source.removeprefix("timm/")
    if tag.split(".")[0] != config.timm_name:
        raise ConfigError(
            f"weights {source!r} are not a {config.timm_name} tag; "
            f"pass timm/{config.timm_name}.<tag> or a local file"
        )
    try:
        net = timm.create_model(tag, pretrained=True, **_timm_kwargs(config))
    except Exception as exc:  # hub, cache and network errors come in many types
        reason = (str(exc).strip().split(". ")[0].splitlines() or [""])[0][:160]
        raise WeightsUnavailable(
            f"timm weights {source} could not be downloaded (offline? {type(exc).__name__}: "
            f"{reason}); pass --checkpoint FILE_OR_DIR, or use --init random"
        ) from None
    log.info("loaded %s weights from %s", name, source)
    return TimmViT(config, net, weights_source=source).eval()


def _build(name: str, overrides: dict) -> TimmViT:
    config = replace(_CONFIGS[name], **overrides)
    if config.timm_name != _CONFIGS[name].timm_name:
        raise ConfigError(f"timm_name of {name} is fixed; register a new variant for another one")
    return build_timm_vit(config)


# The first docstring line of each builder is its `m2bench list models` description.
_IMAGE = dict(kind="image", family="baseline", config_cls=TimmViTConfig)
_PRETRAINABLE = dict(_IMAGE, loader=_load, defaults={"init": "random"})


@register_model(
    "vit_small_patch16_224",
    params_m=21.67,
    weights="timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    **_PRETRAINABLE,
)
def vit_small_patch16_224(**overrides: object) -> TimmViT:
    """timm ViT-S/16 (d 384, 12 layers, 6 heads), 224 px, class-token pooling; random init."""
    return _build("vit_small_patch16_224", overrides)


@register_model(
    "vit_base_patch16_224",
    params_m=85.8,
    weights="timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    **_PRETRAINABLE,
)
def vit_base_patch16_224(**overrides: object) -> TimmViT:
    """timm ViT-B/16 (d 768, 12 layers, 12 heads), 224 px, class-token pooling; random init."""
    return _build("vit_base_patch16_224", overrides)


@register_model("vit_tiny", params_m=0.97, **_IMAGE)
def vit_tiny(**overrides: object) -> TimmViT:
    """Attention ViT with m2_vit_tiny's size (d 128, 4 layers, 2 heads, MLP 560, mean pool)."""
    return _build("vit_tiny", overrides)


@register_model("dense_vit_tiny", params_m=1.01, **_IMAGE)
def dense_vit_tiny(**overrides: object) -> TimmViT:
    """vit_tiny with dense 196 x 196 token mixers per head instead of attention."""
    return _build("dense_vit_tiny", overrides)


@register_model("dense_vit_small", params_m=17.36, **_IMAGE)
def dense_vit_small(**overrides: object) -> TimmViT:
    """ViT-S/16 geometry with dense 197 x 197 token mixers per head instead of attention."""
    return _build("dense_vit_small", overrides)
