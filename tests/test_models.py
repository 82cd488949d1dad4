"""Every registered model, from the registry: spec, size claim, forward and gradients."""

from __future__ import annotations

import pytest
import torch

from m2bench.encoding import SequenceEncoder, TextEncoder
from m2bench.errors import ConfigError
from m2bench.models import count_params
from m2bench.registry import MODELS, create_model, list_models

ALL = list_models()
TORCH_BUILT = [n for n in ALL if MODELS.get(n).params_m is not None
               and not MODELS.get(n).extra.get("pretrained_only")]  # fmt: skip
TINY = [n for n in ALL if n.endswith("_tiny") or n.endswith("_tiny_retrieval")]


@pytest.mark.parametrize("name", TORCH_BUILT)
def test_claimed_size_within_two_percent(name):
    # FlashAttention-2 needs the flash-attn package; the attention code path adds no parameters
    over = {"attn_implementation": "sdpa"} if name == "bert_base_fa2" else {}
    with torch.device("meta"):
        model = create_model(name, **over)
    assert count_params(model) / 1e6 == pytest.approx(MODELS.get(name).params_m, rel=0.02)


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_run_and_every_used_parameter_learns(name):
    torch.manual_seed(0)
    forecast = MODELS.get(name).kind == "forecast"
    model = create_model(name, mark_dim=4) if forecast else create_model(name)
    assert count_params(model, non_embedding=True) < 1.1e6  # a GPT-2 vocabulary table is 3M at d 64
    outs = []
    if isinstance(model, SequenceEncoder):
        batch = model.tokenize_pairs(["a short text", "another one"], ["pair", "second"])
        out = model.hidden_states(batch)
        assert out.shape[:2] == batch["input_ids"].shape and out.shape[-1] == model.hidden_size
        outs.append(out)
    if isinstance(model, TextEncoder):
        batch = model.tokenize(["a short text", "another one"])
        batch.pop("n_truncated", None)
        outs.append(model.embed(batch))
    if model.spec.kind == "image":  # images (B, C, H, W) -> features (B, num_features)
        c = model.config
        out = model(torch.randn(2, c.in_chans, c.img_size, c.img_size))
        assert out.shape == (2, model.num_features)
        outs.append(out)
    if forecast:  # the baselines.ts_common contract: x (B, L, C) -> y (B, H, C), with marks/mask
        c = model.config
        x, mark = torch.randn(2, c.seq_len, c.enc_in), torch.randn(2, c.seq_len + c.pred_len, 4)
        mask = (torch.rand_like(x) > 0.25).float()
        out = model(x * mask, mark[:, : c.seq_len], mark[:, c.seq_len :], mask)
        assert out.shape == (2, c.pred_len, c.enc_in)
        feats = model.features(x, mark[:, : c.seq_len])
        assert feats.dim() == 2 and feats.shape[0] == 2
        assert model.features(x[:1], mark[:1, : c.seq_len]).shape == (1, feats.shape[1])
        outs += [out, feats]
    if model.spec.kind == "causal_lm":  # input_ids (B, L) -> logits (B, L, V)
        ids = torch.randint(0, 50257, (2, 16))
        out = model(ids)
        out = getattr(out, "logits", out)
        assert out.shape[:2] == (2, 16) and out.shape[-1] >= 50257
        outs.append(out)
    assert outs and all(torch.isfinite(o).all() for o in outs)
    sum(o.float().pow(2).mean() for o in outs).backward()
    unused = ("mlm_head.",)  # the MLM head is only used by mlm_logits
    missing = [n for n, p in model.named_parameters()
               if p.grad is None and not n.startswith(unused)]  # fmt: skip
    assert not missing, missing


@pytest.mark.parametrize("name", TORCH_BUILT[:3])
def test_unknown_override_names_valid_fields(name):
    with pytest.raises(ConfigError, match="valid:"):
        create_model(name, no_such_field=1)
