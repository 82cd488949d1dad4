"""M2-BERT: registered variants, parity with the official code (oracle fixture), padding modes,
official checkpoint loading and saving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import m2bench.models.m2_bert  # noqa: F401  (registers the models)
from m2bench.checkpoints import load_pretrained, save_pretrained
from m2bench.encoding import TextEncoder, encode
from m2bench.errors import ConfigError, M2BenchError, WeightsUnavailable
from m2bench.layers.long_conv import hyena_positional_features
from m2bench.models import count_params
from m2bench.models.m2_bert import (
    M2BertConfig,
    M2BertForSequenceClassification,
    M2BertTextEncoder,
)
from m2bench.registry import MODELS, create_model

FIXTURE = Path(__file__).parent / "fixtures" / "m2_bert_oracle" / "fixture_a"
M2_BERT = [name for name in MODELS.names() if name.startswith("m2_bert")]
TINY = [name for name in M2_BERT if "tiny" in name]
ORACLE_TOL = dict(rtol=1e-4, atol=1e-4)  # fixture README section 5: ~1e-6 expected, 1e-4 generous


def _official_dir(directory: Path, state_dict: dict | None = None, **config_changes) -> Path:
    """A hub-like directory (config.json + model.safetensors) made from the oracle fixture."""
    directory.mkdir(parents=True, exist_ok=True)
    config = json.loads((FIXTURE / "config.json").read_text())["official_config"]
    (directory / "config.json").write_text(json.dumps({**config, **config_changes}))
    if state_dict is None:
        shutil.copy(FIXTURE / "state_dict.safetensors", directory / "model.safetensors")
    else:
        save_file(state_dict, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="module")
def oracle_io() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory) -> Path:
    return _official_dir(tmp_path_factory.mktemp("oracle"))


@pytest.fixture(scope="module")
def oracle_model(oracle_dir):
    return load_pretrained(oracle_dir)


def _inputs(io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: io[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.fixture(scope="module")
def oracle_outputs(oracle_model, oracle_io) -> dict[str, torch.Tensor]:
    """Everything the fixture records, computed by m2bench from the loaded official weights."""
    bert, got = oracle_model.bert, {}

    def keep(name):
        return lambda module, args, output: got.__setitem__(name, output)

    hooks = [bert.embeddings.register_forward_hook(keep("embeddings_layer_output"))]
    hooks.append(bert.layers[0].mixer.register_forward_hook(keep("layer_0_mixer_output")))
    hooks += [
        layer.register_forward_hook(keep(f"layer_{i}_output"))
        for i, layer in enumerate(bert.layers)
    ]
    with torch.no_grad():
        out = oracle_model(**_inputs(oracle_io))
        batch = {k: oracle_io[k] for k in ("input_ids", "attention_mask")}
        got["sentence_embedding"] = oracle_model.embed(batch)
        for name, conv in [("filter_fn", "long_conv"), ("filter_fn2", "residual_conv")]:
            k_fwd, k_rev = getattr(bert.layers[0].mixer, conv).filter(128)
            got[f"layer_0_{name}_k_fwd"], got[f"layer_0_{name}_k_rev"] = k_fwd, k_rev
    for hook in hooks:
        hook.remove()
    got["last_hidden_state"], got["pooled_output"] = out.last_hidden_state, out.pooler_output
    got["ref_filter_pos_emb_z_init"] = hyena_positional_features(128, 5)[0]
    return got


# --- registry ----------------------------------------------------------------------------------


def test_all_variants_are_registered():
    expected = {
        "m2_bert_80m": "encoder",
        "m2_bert_110m": "encoder",
        "m2_bert_260m": "encoder",
        "m2_bert_341m": "encoder",
        "m2_bert_80m_128_retrieval": "text_encoder",
        "m2_bert_80m_2k_retrieval": "text_encoder",
        "m2_bert_80m_8k_retrieval": "text_encoder",
        "m2_bert_80m_32k_retrieval": "text_encoder",
        "m2_bert_tiny": "encoder",
        "m2_bert_tiny_retrieval": "text_encoder",
    }
    assert {name: MODELS.get(name).kind for name in M2_BERT} == expected
    assert all(MODELS.get(name).family == "m2" for name in M2_BERT)


@pytest.mark.parametrize("name", M2_BERT)
def test_variant_builds_with_claimed_size(name):
    spec = MODELS.get(name)
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == pytest.approx(spec.params_m * 1e6, rel=0.02)
    assert model.config.max_len == spec.max_len
    assert isinstance(model.config, M2BertConfig) and model.spec is spec
    if spec.kind == "text_encoder":
        assert isinstance(model, TextEncoder) and model.max_length == spec.max_len


def test_official_parameter_totals():
    # HazyResearch/m2 at 7d359e8 (param_shapes_80m_32k.json): encoder + pooler, freq counted once.
    with torch.device("meta"):
        model = create_model("m2_bert_80m_32k_retrieval")
    assert count_params(model) == 109_219_584
    assert count_params(model.bert.embeddings) == 48_614_400
    assert count_params(model.bert.layers[0]) == 5_001_216


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    ids = torch.randint(1000, 29000, (2, model.config.max_len))
    mask = torch.ones_like(ids)
    if MODELS.get(name).kind == "encoder":
        hidden = model(ids, mask)
        assert hidden.shape == (2, model.config.max_len, model.config.d_model)
        out = model.mlm_logits(ids, mask)
        assert out.shape == (2, model.config.max_len, model.config.vocab_size)
    else:
        out = model.embed({"input_ids": ids, "attention_mask": mask})
        assert out.shape == (2, model.config.d_model)
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_sequence_classification_head():
    config = create_model("m2_bert_tiny").config
    model = M2BertForSequenceClassification(config, num_labels=3)
    logits = model(torch.randint(0, 30000, (2, 16)))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert model.classifier.out.weight.grad is not None
    assert model.bert.pooler.dense.weight.grad is not None


def test_unknown_override_names_valid_fields():
    with pytest.raises(ConfigError, match="d_modle") as err:
        create_model("m2_bert_tiny", d_modle=64)
    assert "d_model" in str(err.value) and "padding" in str(err.value)


@pytest.mark.parametrize(("field", "value"), [("kernel", "cuda_fused"), ("padding", "left")])
def test_bad_config_values_raise(field, value):
    with pytest.raises(ConfigError, match=repr(value)):
        create_model("m2_bert_tiny", **{field: value})


def test_input_longer_than_max_len_is_refused():
    model = create_model("m2_bert_tiny", max_len=16)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


# --- oracle parity -------------------------------------------------------------------------------

ORACLE_KEYS = [
    "embeddings_layer_output",
    "layer_0_mixer_output",
    "layer_0_output",
    "layer_1_output",
    "last_hidden_state",
    "pooled_output",
    "sentence_embedding",
    "layer_0_filter_fn_k_fwd",
    "layer_0_filter_fn_k_rev",
    "layer_0_filter_fn2_k_fwd",
    "layer_0_filter_fn2_k_rev",
    "ref_filter_pos_emb_z_init",
]


@pytest.mark.parametrize("key", ORACLE_KEYS)
def test_oracle_parity(key, oracle_outputs, oracle_io):
    torch.testing.assert_close(oracle_outputs[key], oracle_io[key], **ORACLE_TOL)


def test_oracle_covers_every_recorded_tensor(oracle_io):
    assert set(oracle_io) == set(ORACLE_KEYS) | {"input_ids", "attention_mask", "token_type_ids"}


def test_loaded_model_output_object(oracle_model, oracle_io):
    assert isinstance(oracle_model, M2BertTextEncoder) and not oracle_model.training
    out = oracle_model(**_inputs(oracle_io))
    assert out.last_hidden_state.shape == (3, 128, 64) and out.pooler_output.shape == (3, 64)


def test_official_mode_ignores_attention_mask(oracle_model, oracle_io):
    inputs = _inputs(oracle_io)
    with torch.no_grad():
        a = oracle_model(**inputs).last_hidden_state
        b = oracle_model(**{**inputs, "attention_mask": torch.ones_like(inputs["attention_mask"])})
    assert torch.equal(a, b.last_hidden_state)


# --- padding modes -------------------------------------------------------------------------------


def _padded(ids: torch.Tensor, length: int, pad_id: int = 0) -> dict[str, torch.Tensor]:
    n = ids.shape[0]
    input_ids = torch.full((1, length), pad_id, dtype=torch.long)
    input_ids[0, :n] = ids
    mask = torch.zeros_like(input_ids)
    mask[0, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def masked_model(oracle_dir):
    return load_pretrained(oracle_dir, padding="masked")


def test_masked_padding_is_invariant_to_padding(masked_model, oracle_io):
    ids = oracle_io["input_ids"][2, :20]  # row 2: [CLS] ... [SEP] at 19, then padding
    with torch.no_grad():
        outs = [masked_model(**_padded(ids, n)) for n in (20, 57, 128)]
        outs.append(masked_model(**_padded(ids, 128, pad_id=4242)))  # pad ids do not matter
    for out in outs[1:]:
        torch.testing.assert_close(
            out.last_hidden_state[:, :20], outs[0].last_hidden_state, rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(out.pooler_output, outs[0].pooler_output, rtol=1e-5, atol=1e-5)


def test_official_padding_depends_on_padding(oracle_model, oracle_io):
    ids = oracle_io["input_ids"][2, :20]
    with torch.no_grad():
        short, full = (oracle_model(**_padded(ids, n)).pooler_output for n in (20, 128))
    assert (short - full).abs().max() > 1e-3


def test_masked_mode_equals_official_without_padding(masked_model, oracle_io):
    # Row 0 of the fixture has no padding, so both modes compute the same thing.
    with torch.no_grad():
        out = masked_model(**{k: v[:1] for k, v in _inputs(oracle_io).items()})
    torch.testing.assert_close(
        out.last_hidden_state[0], oracle_io["last_hidden_state"][0], **ORACLE_TOL
    )
    torch.testing.assert_close(out.pooler_output[0], oracle_io["pooled_output"][0], **ORACLE_TOL)


# --- text encoder --------------------------------------------------------------------------------


def test_tokenize_pads_and_cuts_like_the_official_evaluation():
    model = create_model("m2_bert_tiny_retrieval")
    batch = model.tokenize(["Hello world!", "word " * 500])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 128)
    assert batch["input_ids"][0, :5].tolist() == [101, 7592, 2088, 999, 102]
    assert batch["input_ids"][0, 5:].eq(0).all() and batch["attention_mask"][0].sum() == 5
    assert batch["input_ids"][1, 0] == 101 and batch["input_ids"][1, -1] != 102  # cut: no [SEP]
    assert batch["attention_mask"][1].all() and int(batch["n_truncated"]) == 1


def test_encode_runs_the_text_encoder():
    torch.manual_seed(0)
    model = create_model("m2_bert_tiny_retrieval").eval()
    texts = ["a short query", "a much longer document " * 40, "third"]
    result = encode(model, texts, batch_size=2, device=torch.device("cpu"))
    assert result.embeddings.shape == (3, 32) and result.truncated == 1
    with torch.no_grad():
        alone = model.embed(
            {k: v for k, v in model.tokenize(texts[2:]).items() if k != "n_truncated"}
        )
    torch.testing.assert_close(result.embeddings[2], alone[0])


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    save_pretrained(model, tmp_path)
    official = json.loads((tmp_path / "config.json").read_text())
    assert official["hidden_size"] == 32 and official["max_position_embeddings"] == 128
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert all(k.startswith(("bert.", "cls.predictions.")) for k in keys)
    assert "bert.encoder.layer.1.attention.filter_fn2.implicit_filter.1.freq" in keys
    loaded = load_pretrained(tmp_path, model_name=name)
    assert type(loaded) is type(model)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids = torch.randint(0, 30000, (2, 128))
    with torch.no_grad():
        expected = model.bert(ids).last_hidden_state
        assert torch.equal(loaded.bert(ids).last_hidden_state, expected)


def test_resaved_oracle_reloads_identically(oracle_model, oracle_io, tmp_path):
    save_pretrained(oracle_model, tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    original = load_file(str(FIXTURE / "state_dict.safetensors"))
    assert set(saved) <= set(original)
    assert set(original) - set(saved) == {
        k for k in original if k.endswith(".freq") and ".implicit_filter.1.freq" not in k
    }
    with torch.no_grad():
        out = load_pretrained(tmp_path)(**_inputs(oracle_io))
    torch.testing.assert_close(out.last_hidden_state, oracle_io["last_hidden_state"], **ORACLE_TOL)


def test_prefixed_torch_checkpoint_loads(oracle_io, tmp_path):
    state = load_file(str(FIXTURE / "state_dict.safetensors"))
    _official_dir(tmp_path).joinpath("model.safetensors").unlink()
    torch.save(
        {f"module.model.{k}": v.bfloat16() if k.endswith("bias") else v for k, v in state.items()},
        tmp_path / "pytorch_model.bin",
    )
    model = load_pretrained(tmp_path)
    assert model.bert.layers[0].mlp.fc_out.bias.dtype == torch.float32
    with torch.no_grad():
        out = model(**_inputs(oracle_io))
    torch.testing.assert_close(out.pooler_output, oracle_io["pooled_output"], rtol=1e-2, atol=1e-2)


def _broken(kind: str) -> tuple[dict[str, torch.Tensor], str]:
    state = load_file(str(FIXTURE / "state_dict.safetensors"))
    key = "bert.encoder.layer.1.mlp.wo.bias"
    if kind == "missing":
        del state[key]
    elif kind == "unexpected":
        key = "bert.encoder.layer.0.attention.extra_gate.weight"
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(65)
    return state, key


@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape mismatch"])
def test_checkpoint_that_does_not_fit_is_refused(kind, tmp_path):
    state, key = _broken(kind)
    with pytest.raises(M2BenchError, match=kind) as err:
        load_pretrained(_official_dir(tmp_path, state))
    message = str(err.value)
    assert key in message and "\n" not in message


def test_all_problems_in_one_error(tmp_path):
    state = load_file(str(FIXTURE / "state_dict.safetensors"))
    del state["bert.pooler.dense.bias"]
    state["bert.encoder.layer.0.attention.extra_gate.weight"] = torch.zeros(3)
    state["bert.embeddings.LayerNorm.weight"] = torch.ones(65)
    with pytest.raises(M2BenchError) as err:
        load_pretrained(_official_dir(tmp_path, state))
    message = str(err.value)
    assert all(word in message for word in ("missing", "unexpected", "shape mismatch"))


def test_model_name_must_match_checkpoint(oracle_dir):
    with pytest.raises(ConfigError, match="is not a m2_bert_tiny"):
        load_pretrained(oracle_dir, model_name="m2_bert_tiny")


def test_unsupported_official_option_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="use_cls_token"):
        load_pretrained(_official_dir(tmp_path, use_cls_token=True))


def test_unreachable_hub_raises_weights_unavailable(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        WeightsUnavailable, match="togethercomputer/m2-bert-80M-2k-retrieval"
    ) as err:
        load_pretrained("togethercomputer/m2-bert-80M-2k-retrieval")
    assert "--local-dir" in str(err.value) and "\n" not in str(err.value)


def test_missing_directory_raises_weights_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailable, match="no checkpoint directory"):
        load_pretrained(str(tmp_path / "nope" / "deeper"))
