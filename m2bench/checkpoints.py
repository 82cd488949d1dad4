"""Official M2-BERT checkpoints: load them into m2bench models and write them back.

Format: the layout of the Hugging Face repos of HazyResearch/m2 (e.g.
``togethercomputer/m2-bert-80M-32k-retrieval``): ``config.json`` with the official
``BertConfig`` keys and one weights file (``model.safetensors`` or ``pytorch_model.bin``) whose
keys are those of the official ``state_dict`` (``bert.`` prefix; see
``tests/fixtures/m2_bert_oracle/README.md``, section 4). Handled variations:

- prefixes ``module.`` (DDP) and ``model.`` (Composer) are stripped; a bare ``BertModel`` file
  (keys starting ``embeddings.``/``encoder.``/``pooler.``) gets ``bert.``;
- the shared Sin frequency of each implicit filter may be stored under any of its six alias keys
  (``implicit_filter[_rev].{1,3,5}.freq``);
- heads the target model lacks (``cls.*``, ``classifier.*``, ``bert.pooler.*``) are ignored, as
  are ``bert.embeddings.position_ids`` and the tied ``cls.predictions.decoder.weight``;
- the fixed buffers ``pos_emb.t`` and ``modulation.deltas`` are taken from the file when present
  and recomputed otherwise; floating tensors are cast to the model's dtype (real files mix bf16
  and fp32).

Anything else that does not fit (missing key, unexpected key, wrong shape) is refused with one
:class:`~m2bench.errors.M2BenchError` listing all problems. Checked against the oracle fixture
written by the official code (``tests/test_m2_bert.py``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from m2bench.errors import ConfigError, M2BenchError, WeightsUnavailable
from m2bench.models.m2_bert import (
    M2BertConfig,
    M2BertForMaskedLM,
    M2BertForSequenceClassification,
    M2BertModel,
    M2BertTextEncoder,
)

logger = logging.getLogger(__name__)

# --- config.json ---------------------------------------------------------------------------------

_CONFIG_KEYS = {  # official key -> M2BertConfig field
    "hidden_size": "d_model",
    "num_hidden_layers": "n_layers",
    "intermediate_size": "d_intermediate",
    "max_position_embeddings": "max_len",
    "vocab_size": "vocab_size",
    "type_vocab_size": "type_vocab_size",
    "monarch_mlp_nblocks": "mlp_blocks",
    "hyena_filter_order": "hyena_order",
    "hyena_emb_dim": "hyena_emb_dim",
    "hyena_w": "hyena_freq_init",
    "hyena_w_mod": "hyena_w_mod",
    "bidirectional": "bidirectional",
    "residual_long_conv": "residual_long_conv",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_dropout_prob": "dropout",
}
_REQUIRED_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "max_position_embeddings",
)
# Official options and the only value m2bench implements; other values are refused.
_FIXED_OPTIONS = {
    "monarch_mixer_sequence_mixing": True,
    "use_glu_mlp": True,
    "use_monarch_mlp": True,
    "use_positional_encodings": True,
    "hyena_training_additions": False,
    "pool_all": False,
    "use_cls_token": False,
    "use_normalized_embeddings": False,
    "attention_pooling": False,
    "sequence_token_planting": False,
}
_ARCHITECTURES = {
    M2BertForMaskedLM: "BertForMaskedLM",
    M2BertTextEncoder: "BertForTextEncoding",
    M2BertForSequenceClassification: "BertForSequenceClassification",
    M2BertModel: "BertModel",
}


def config_from_official(official: dict, **fields_: object) -> M2BertConfig:
    """Build an :class:`M2BertConfig` from official ``config.json`` keys.

    Args:
        official: the parsed ``config.json``.
        **fields_: further config fields (``padding``, ``kernel``, ``pooler``...).

    Raises:
        ConfigError: a required key is missing or an option m2bench does not implement is set.
    """
    missing = [key for key in _REQUIRED_KEYS if key not in official]
    if missing:
        raise ConfigError(f"official config lacks {', '.join(missing)}")
    unsupported = [
        f"{key}={official[key]!r}"
        for key, value in _FIXED_OPTIONS.items()
        if key in official and official[key] != value
    ]
    l_max = official.get("long_conv_l_max", official["max_position_embeddings"])
    if l_max != official["max_position_embeddings"]:
        unsupported.append(f"long_conv_l_max={l_max} != max_position_embeddings")
    if unsupported:
        raise ConfigError(f"official config uses options m2bench lacks: {', '.join(unsupported)}")
    types = {f.name: f.type for f in fields(M2BertConfig)}
    casts = {"int": int, "float": float, "bool": bool}
    kwargs = {
        name: casts[types[name]](official[key])
        for key, name in _CONFIG_KEYS.items()
        if key in official
    }
    return M2BertConfig(**{**kwargs, **fields_})


def config_to_official(model: nn.Module) -> dict:
    """Official ``config.json`` content describing ``model``'s M2-BERT."""
    c = model.config
    official = {key: getattr(c, name) for key, name in _CONFIG_KEYS.items()}
    official.update(_FIXED_OPTIONS)
    official.update(
        architectures=[_ARCHITECTURES[type(model)]],
        model_type="bert",
        long_conv_l_max=c.max_len,
        use_flash_mm=False,
        use_flash_fft=False,
        gather_sentence_embeddings=isinstance(model, M2BertTextEncoder),
        hidden_act="gelu",
        position_embedding_type="absolute",
        initializer_range=0.02,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    if isinstance(model, M2BertForSequenceClassification):
        official["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
    return official


# --- parameter names -----------------------------------------------------------------------------

_TOP_NAMES = {  # m2bench -> official name outside the layers (others are equal)
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
}
_LAYER_PARTS = {  # m2bench name inside a layer -> official name inside bert.encoder.layer.{i}
    "mixer.in_proj.": "attention.in_linear.",
    "mixer.out_proj.": "attention.out_linear.",
    "mixer.short_conv.": "attention.short_filter.",
    "mixer.long_conv.": "attention.filter_fn.",
    "mixer.residual_conv.": "attention.filter_fn2.",
    "mlp.fc_in.": "mlp.gated_layers.",
    "mlp.fc_out.": "mlp.wo.",
    "mlp.norm.": "mlp.layernorm.",
}
_FILTER_NAMES = {  # inside an ImplicitLongConv -> official names inside a HyenaFilter
    "skip": ["bias"],
    "filter.z": ["pos_emb.z"],
    "filter.t": ["pos_emb.t"],
    "filter.deltas": ["modulation.deltas"],
    # One tensor shared by all Sin layers; files may keep any of its aliases.
    "filter.freq": [f"implicit_filter{d}.{i}.freq" for d in ("", "_rev") for i in (1, 3, 5)],
}
_FILTER_MLP = re.compile(r"filter\.mlp_(fwd|rev)\.layers\.(\d+)\.(\w+)")
_HEAD_NAMES = {
    "mlm_head.transform.weight": ["cls.predictions.transform.dense.weight"],
    "mlm_head.transform.bias": ["cls.predictions.transform.dense.bias"],
    "mlm_head.norm.weight": ["cls.predictions.transform.LayerNorm.weight"],
    "mlm_head.norm.bias": ["cls.predictions.transform.LayerNorm.bias"],
    "mlm_head.bias": ["cls.predictions.decoder.bias", "cls.predictions.bias"],
    "classifier.out.weight": ["classifier.weight"],
    "classifier.out.bias": ["classifier.bias"],
}
_ALWAYS_IGNORED = {
    "bert.embeddings.position_ids",
    "bert.embeddings.token_type_ids",
    "cls.predictions.decoder.weight",  # tied to the word embeddings
}


def _encoder_names(key: str) -> list[str]:
    """Official names (aliases first to last) of an :class:`M2BertModel` state-dict key."""
    if key.startswith(("embeddings.", "pooler.")):
        return ["bert." + _TOP_NAMES.get(key, key)]
    layer, index, rest = key.split(".", 2)
    prefix = f"bert.encoder.layer.{index}."
    for mine, official in _LAYER_PARTS.items():
        if not rest.startswith(mine):
            continue
        rest = rest[len(mine) :]
        if "filter_fn" not in official:
            return [prefix + official + rest]
        if rest in _FILTER_NAMES:
            return [prefix + official + name for name in _FILTER_NAMES[rest]]
        direction, position, param = _FILTER_MLP.fullmatch(rest).groups()
        suffix = "" if direction == "fwd" else "_rev"
        return [f"{prefix}{official}implicit_filter{suffix}.{2 * int(position)}.{param}"]
    raise KeyError(f"no official name for m2bench parameter {layer}.{index}.{rest}")


def official_names(model: nn.Module) -> dict[str, list[str]]:
    """For each state-dict key of ``model``, its official name and aliases (preferred first)."""
    bare = isinstance(model, M2BertModel)
    names = {}
    for key in model.state_dict():
        if bare:
            names[key] = _encoder_names(key)
        elif key.startswith("bert."):
            names[key] = _encoder_names(key[len("bert.") :])
        else:
            names[key] = _HEAD_NAMES[key]
    return names


def _normalise_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        while key.startswith(("module.", "model.")):
            key = key.split(".", 1)[1]
        if key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = "bert." + key
        out.setdefault(key, value)
    return out


def _short_list(items: list[str], limit: int = 8) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_official_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """Copy an official-format ``state_dict`` into ``model`` (an M2-BERT module), in place.

    Args:
        model: :class:`M2BertModel` or a module holding one as ``bert`` (with its heads).
        state_dict: official names, optionally prefixed by ``module.``/``model.``.
        source: where the weights come from, for the error message.

    Raises:
        M2BenchError: one line listing every missing key, unexpected key and shape mismatch.
    """
    state_dict = _normalise_keys(state_dict)
    own = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    has = {prefix: any(k.startswith(prefix) for k in own) for prefix in ("mlm_", "classifier.")}
    has_pooler = any(".pooler." in f".{k}" for k in own)
    claimed, loaded, missing, mismatched = set(), {}, [], []
    for key, names in official_names(model).items():
        present = [name for name in names if name in state_dict]
        claimed.update(present)
        if not present:
            if key not in buffers:  # fixed buffers are recomputed when a file lacks them
                missing.append(names[0])
            continue
        tensor = state_dict[present[0]]
        if tuple(tensor.shape) != tuple(own[key].shape):
            mismatched.append(f"{present[0]} {tuple(tensor.shape)} != {tuple(own[key].shape)}")
            continue
        loaded[key] = tensor.to(own[key].dtype) if tensor.is_floating_point() else tensor

    def ignored(name: str) -> bool:
        return (
            name in _ALWAYS_IGNORED
            or (name.startswith("cls.") and not has["mlm_"])
            or (name.startswith("classifier.") and not has["classifier."])
            or (name.startswith("bert.pooler.") and not has_pooler)
        )

    unexpected = sorted(k for k in state_dict if k not in claimed and not ignored(k))
    problems = [
        f"{len(items)} {what}: {_short_list(items)}"
        for what, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        )
        if items
    ]
    if problems:
        raise M2BenchError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(loaded, strict=False)
    skipped = sorted(k for k in state_dict if k not in claimed and k not in _ALWAYS_IGNORED)
    if skipped:
        logger.info("%s: ignored %d keys of heads the model lacks", source, len(skipped))


# --- files ---------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _resolve(name_or_dir: str | Path, revision: str | None) -> Path:
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    repo = str(name_or_dir)
    if not _HUB_ID.fullmatch(repo):
        raise WeightsUnavailable(f"no checkpoint directory {repo!r} (and it is not a hub id)")
    try:
        from huggingface_hub import snapshot_download

        allow = ["config.json", "*.safetensors", "*.bin"]
        return Path(snapshot_download(repo, revision=revision, allow_patterns=allow))
    except Exception as exc:  # offline, unknown repo, auth: all mean "not obtainable here"
        raise WeightsUnavailable(
            f"cannot fetch {repo!r} from the Hugging Face hub ({type(exc).__name__}); download it "
            f"where the hub is reachable (`hf download {repo} --local-dir DIR`) and pass "
            "--checkpoint DIR"
        ) from None


def _weights_file(directory: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(
        p for ext in ("*.safetensors", "*.bin", "*.pt") for p in directory.glob(ext)
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsUnavailable(f"{directory} holds no model.safetensors or pytorch_model.bin")
    names = ", ".join(p.name for p in candidates)
    raise M2BenchError(f"{directory} holds several weight files ({names}); keep one")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise M2BenchError(f"cannot read weights {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and "model" in obj["state"]:
        obj = obj["state"]["model"]  # Composer training checkpoint
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _reference_config(model_name: str) -> M2BertConfig:
    from m2bench.registry import get_model_spec

    with torch.device("meta"):
        return get_model_spec(model_name).builder().config


def _registered_model(model_name: str, config: M2BertConfig, source: str) -> nn.Module:
    from m2bench.registry import create_model

    reference = _reference_config(model_name)
    arch = [
        f for f in fields(M2BertConfig) if f.name not in ("pooler", "dropout", "padding", "kernel")
    ]
    differ = [
        f"{f.name} {getattr(config, f.name)} (checkpoint) != {getattr(reference, f.name)}"
        for f in arch
        if getattr(config, f.name) != getattr(reference, f.name)
    ]
    if differ:
        raise ConfigError(f"{source} is not a {model_name}: {'; '.join(differ)}")
    overrides = {f.name: getattr(config, f.name) for f in arch}
    return create_model(
        model_name, init="random", padding=config.padding, kernel=config.kernel, **overrides
    )


def load_pretrained(
    name_or_dir: str | Path,
    *,
    model_name: str | None = None,
    padding: str = "official",
    kernel: str = "torch",
    revision: str | None = None,
) -> nn.Module:
    """Load an official M2-BERT checkpoint (local directory or hub id), in eval mode.

    Args:
        name_or_dir: a directory with ``config.json`` and the weights, or a hub repo id.
        model_name: a registered M2-BERT name to build (its architecture must match the file);
            by default an :class:`M2BertTextEncoder` with a pooler when the file has one.
        padding: ``"official"`` (reproduce the official outputs) or ``"masked"``.
        kernel: implementation of the M2 ops.
        revision: hub revision (ignored for directories).

    Returns:
        The model. Without ``model_name``, ``model(input_ids=, attention_mask=,
        token_type_ids=)`` returns an object with ``last_hidden_state`` and ``pooler_output``.

    Raises:
        WeightsUnavailable: the directory or hub repo cannot be read.
        ConfigError: the config uses options m2bench does not implement or fits no model_name.
        M2BenchError: the weights do not fit the model (one line listing every problem).
    """
    source = str(name_or_dir)
    directory = _resolve(name_or_dir, revision)
    config_file = directory / "config.json"
    if config_file.is_file():
        config = config_from_official(
            json.loads(config_file.read_text()), padding=padding, kernel=kernel
        )
    elif model_name is not None:  # weights alone: the registered architecture, checked key by key
        config = replace(_reference_config(model_name), padding=padding, kernel=kernel)
    else:
        raise WeightsUnavailable(f"{directory} has no config.json; pass model_name= as well")
    weights = _normalise_keys(_read_weights(_weights_file(directory)))
    if model_name is None:
        has_pooler = any(k.startswith("bert.pooler.") for k in weights)
        model = M2BertTextEncoder(replace(config, pooler=has_pooler, dropout=0.0))
    else:
        model = _registered_model(model_name, config, source)
    load_official_state_dict(model, weights, source=source)
    return model.eval()


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model`` in the official layout: ``config.json`` + ``model.safetensors``.

    Shared tensors are written once, under their first official name (as safetensors'
    ``save_model`` would keep them). Returns the directory.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    own = model.state_dict()
    tensors = {
        names[0]: own[key].detach().cpu().contiguous()
        for key, names in official_names(model).items()
    }
    tensors["bert.embeddings.position_ids"] = torch.arange(model.config.max_len)[None]
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config_to_official(model), indent=2) + "\n")
    return directory
