"""SequenceEncoder models (fine-tuned with a task head): BERT, dense BERT, M2-BERT, MiniLM.

Covers the protocol over the registry, tokenisation of texts and pairs (token types, truncation
that keeps [SEP], padding), hidden-state shapes, gradients, claimed sizes, dense-BERT masking,
BERT attention implementations and weight loading (offline errors, save/load round trip).
"""

from __future__ import annotations

import huggingface_hub
import pytest
import torch

import baselines.bert  # noqa: F401  (registers the models)
import baselines.dense_bert  # noqa: F401
from m2bench.encoding import SequenceEncoder
from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.models import count_params
from m2bench.registry import MODELS, create_model, list_models
from m2bench.tokenization import VOCAB_DIR, wordpiece_tokenizer

CLS, SEP = 101, 102
SMALL = ["bert_tiny", "dense_bert_tiny", "m2_bert_tiny", "m2_bert_tiny_retrieval", "minilm_l6"]
PAD_TO_MAX = {"dense_bert_tiny", "m2_bert_tiny", "m2_bert_tiny_retrieval"}
FIRST = ["The cat sat on the mat.", "A much longer first sentence " * 3, "Short."]
SECOND = ["It was sunny.", "Tiny.", "The second text of the third pair is here."]
LONG = "word " * 600


@pytest.fixture(scope="module")
def small_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {}
    for name in SMALL:
        init = "pretrained" if MODELS.get(name).extra.get("pretrained_only") else "random"
        models[name] = create_model(name, init=init).eval()
    return models


def _real_rows(batch: dict[str, torch.Tensor]) -> list[tuple[list[int], list[int]]]:
    """(ids, token types) of each row without its padding."""
    rows = []
    for ids, types, mask in zip(
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], strict=True
    ):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        rows.append((ids[:n].tolist(), types[:n].tolist()))
    return rows


def test_every_encoder_implements_the_protocol(small_models):
    names = list_models("encoder") + [n for n in list_models("text_encoder") if "m2_bert" in n]
    for name in names:
        spec = MODELS.get(name)
        # FlashAttention-2 needs flash-attn (not installed here); the protocol is the same
        over = {"attn_implementation": "sdpa"} if name == "bert_base_fa2" else {}
        with torch.device("meta"):
            model = create_model(name, **over)
        assert isinstance(model, SequenceEncoder), name
        assert model.max_length == spec.max_len, name
        assert model.hidden_size == model.config.d_model, name
    minilm = small_models["minilm_l6"]
    assert isinstance(minilm, SequenceEncoder) and MODELS.get("minilm_l6").kind == "text_encoder"
    assert (minilm.hidden_size, minilm.max_length) == (384, 256)


@pytest.mark.parametrize("name", SMALL)
def test_tokenize_single_texts_and_pairs(small_models, name):
    model = small_models[name]
    single = model.tokenize_pairs(FIRST)
    assert set(single) == {"input_ids", "attention_mask", "token_type_ids"}
    width = max(len(ids) for ids, _ in _real_rows(single))
    assert single["input_ids"].shape == (3, model.max_length if name in PAD_TO_MAX else width)
    for ids, types in _real_rows(single):
        assert ids[0] == CLS and ids.index(SEP) == len(ids) - 1 and not any(types)

    pairs = model.tokenize_pairs(FIRST, SECOND)
    rows = _real_rows(pairs)
    width = max(len(ids) for ids, _ in rows)
    assert pairs["input_ids"].shape[1] == (model.max_length if name in PAD_TO_MAX else width)
    assert not pairs["token_type_ids"][pairs["attention_mask"] == 0].any()
    for ids, types in rows:
        first_sep = ids.index(SEP)
        assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)


@pytest.mark.parametrize("name", SMALL)
def test_truncation_keeps_the_final_sep(small_models, name):
    model = small_models[name]
    for max_length in (16, None):
        limit = max_length or model.max_length
        single = _real_rows(model.tokenize_pairs([LONG], max_length=max_length))
        assert len(single[0][0]) == limit and single[0][0][-1] == SEP
        pair = model.tokenize_pairs([LONG, "short"], ["short", LONG], max_length=max_length)
        for ids, types in _real_rows(pair):
            assert len(ids) == limit and ids[-1] == SEP and ids.count(SEP) == 2
            assert types[-1] == 1 and ids[ids.index(SEP) - 1] != CLS  # both segments kept
    with pytest.raises(ConfigError, match="max_length"):
        model.tokenize_pairs(["a"], max_length=model.max_length + 1)
    assert wordpiece_tokenizer().truncation is None  # the shared tokenizer is not mutated


def test_m2_tokenization_is_the_official_glue_recipe(small_models):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(VOCAB_DIR))
    first, second = [*FIRST, LONG], [*SECOND, "x " * 100]
    ref = hf(first, second, truncation=True, padding="max_length", max_length=128)
    ours = small_models["m2_bert_tiny"].tokenize_pairs(first, second)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert ours[key].tolist() == ref[key], key


@pytest.mark.parametrize("name", SMALL)
def test_hidden_states_shape(small_models, name):
    model = small_models[name]
    batch = model.tokenize_pairs(FIRST, SECOND)
    with torch.no_grad():
        hidden = model.hidden_states(batch)
    assert hidden.shape == (*batch["input_ids"].shape, model.hidden_size)
    assert torch.isfinite(hidden).all()


@pytest.mark.parametrize("name", ["bert_tiny", "dense_bert_tiny", "m2_bert_tiny"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    batch = model.tokenize_pairs(FIRST, SECOND)
    model.hidden_states(batch).pow(2).mean().backward()
    params = [(n, p) for n, p in model.named_parameters() if not n.startswith("mlm_head.")]
    assert params
    missing = [n for n, p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for _, p in params)


@pytest.mark.parametrize(
    "name",
    ["bert_base", "bert_large", "bert_base_eager", "bert_base_sdpa", "bert_tiny"]
    + ["dense_bert_base", "dense_bert_tiny"],
)
def test_claimed_sizes(name):
    spec = MODELS.get(name)
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == pytest.approx(spec.params_m * 1e6, rel=0.02)
    assert spec.kind == "encoder" and spec.family == "baseline"
    assert type(model.config).__name__ in ("HFBertConfig", "DenseBertConfig")


def test_dense_bert_mixers_and_masking():
    torch.manual_seed(0)
    model = create_model("dense_bert_tiny", n_layers=3).eval()
    length = model.config.max_len
    assert [layer.mixer.weight.shape for layer in model.layers] == [(length, length)] * 3
    batch = model.tokenize_pairs(FIRST, SECOND)
    real = batch["attention_mask"].bool()
    assert batch["input_ids"].shape[1] == length and (~real).any()
    noisy = dict(batch, input_ids=batch["input_ids"].clone())
    noisy["input_ids"][~real] = torch.randint(1000, 29000, (int((~real).sum()),))
    with torch.no_grad():
        clean, dirty = model.hidden_states(batch), model.hidden_states(noisy)
        n = int(real.sum(1).max())
        short = model.hidden_states({k: v[:, :n] for k, v in batch.items()})
    torch.testing.assert_close(clean[real], dirty[real])
    assert not torch.allclose(clean[~real], dirty[~real])  # pads did change, and stayed there
    torch.testing.assert_close(short[real[:, :n]], clean[real])  # shorter input: M[:n, :n]


def test_bert_attention_implementations_agree():
    torch.manual_seed(0)
    sdpa = create_model("bert_tiny").eval()
    eager = create_model("bert_tiny", attn_implementation="eager").eval()
    assert sdpa.bert.config._attn_implementation == "sdpa"
    assert eager.bert.config._attn_implementation == "eager"
    eager.load_state_dict(sdpa.state_dict())
    batch = sdpa.tokenize_pairs(FIRST, SECOND)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa.hidden_states(batch)[real], eager.hidden_states(batch)[real], atol=1e-5, rtol=1e-5
        )
    with torch.device("meta"):
        assert create_model("bert_base_eager").bert.config._attn_implementation == "eager"
        assert create_model("bert_base_sdpa").bert.config._attn_implementation == "sdpa"


def test_flash_attention_baseline_needs_flash_attn(monkeypatch):
    import importlib.util

    from baselines import bert

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "flash_attn" else real(n, *a)
    )
    with pytest.raises(ConfigError, match="needs the flash-attn package.*bert_base_sdpa"):
        create_model("bert_base_fa2")
    assert bert._CONFIGS["bert_base_fa2"].attn_implementation == "flash_attention_2"
    with pytest.raises(ConfigError, match="attn_implementation 'flash' is not one of"):
        create_model("bert_base", attn_implementation="flash")


def test_bert_pretrained_offline_is_unavailable(monkeypatch):
    if huggingface_hub.try_to_load_from_cache("bert-base-uncased", "config.json"):
        pytest.skip("bert-base-uncased is in the local Hugging Face cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable) as err:
        create_model("bert_base", init="pretrained")
    message = str(err.value)
    assert "bert-base-uncased" in message and "--checkpoint DIR" in message
    assert "\n" not in message
    with pytest.raises(WeightsUnavailable, match="no released weights"):
        create_model("bert_tiny", init="pretrained")


def test_bert_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("bert_tiny").eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = create_model("bert_tiny", init="pretrained", checkpoint=str(tmp_path / "ckpt"))
    loaded.eval()
    assert loaded.config == model.config and loaded.spec.name == "bert_tiny"
    assert loaded.run_tags()["weights_source"] == str(tmp_path / "ckpt")
    batch = model.tokenize_pairs(FIRST, SECOND)
    with torch.no_grad():
        assert torch.equal(model.hidden_states(batch), loaded.hidden_states(batch))
    eager = create_model(
        "bert_tiny",
        init="pretrained",
        checkpoint=str(tmp_path / "ckpt"),
        attn_implementation="eager",
    )
    assert eager.config.attn_implementation == "eager"
    with pytest.raises(WeightsUnavailable, match="no checkpoint directory"):
        create_model("bert_tiny", init="pretrained", checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="d_model"):
        create_model("bert_tiny", init="pretrained", checkpoint=str(tmp_path / "ckpt"), d_model=64)


def test_bert_loads_a_hub_style_pretraining_checkpoint(tmp_path):
    # The hub's bert-*-uncased hold BertForPreTraining weights ("bert." prefix, pooler, heads).
    from transformers import BertForPreTraining

    from baselines.bert import _CONFIGS, _hf_config

    torch.manual_seed(0)
    full = BertForPreTraining(_hf_config(_CONFIGS["bert_tiny"])).eval()
    full.save_pretrained(str(tmp_path))
    loaded = create_model("bert_tiny", init="pretrained", checkpoint=str(tmp_path)).eval()
    batch = loaded.tokenize_pairs(FIRST, SECOND)
    with torch.no_grad():
        expected = full.bert(**batch).last_hidden_state
        torch.testing.assert_close(loaded.hidden_states(batch), expected, rtol=0, atol=0)
    assert loaded.bert.pooler is None
