"""The lm-eval adapter (m2bench/adapters/lm_eval.py) and the local task tasks/data/lm_eval.

Every score is checked against a computation by hand from the model's own logits; the tiny test
LM below is causal (embedding, left-padded depthwise conv, linear head) and deterministic.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from m2bench.adapters import lm_eval as adapter  # noqa: E402
from m2bench.errors import ConfigError, DataError, UnknownNameError  # noqa: E402
from m2bench.tokenization import GPT2_EOS, GPT2_VOCAB, gpt2_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASK_DIR = REPO / "tasks" / "data" / "lm_eval"
RAW = REPO.parent / "shared" / "data" / "lm-text" / "wikitext-2-raw" / "wiki.test.raw"
TEXT = (
    "Robert Boulter is an English film, television and theatre actor. He had a guest-starring "
    "role on the television series The Bill in 2000. This was followed by a starring role in "
    "the play Herons written by Simon Stephens, which was performed in 2001 at the Royal Court."
)


@dataclass(frozen=True)
class TinyConfig:
    max_len: int = 16
    vocab_size: int = 50264  # padded like the real models: logits past 50257 must be dropped


class TinyCausalLM(nn.Module):
    """Embedding -> causal depthwise conv (3 taps) -> tanh -> linear head; counts forward calls."""

    def __init__(self, max_len: int = 16, seed: int = 0, d: int = 8) -> None:
        super().__init__()
        self.config = TinyConfig(max_len=max_len)
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(self.config.vocab_size, d)
        self.conv = nn.Conv1d(d, d, 3, groups=d)
        self.head = nn.Linear(d, self.config.vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0)
        self.calls = 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert input_ids.shape[1] <= self.config.max_len
        self.calls += 1
        x = self.embed(input_ids).transpose(1, 2)
        x = self.conv(nn.functional.pad(x, (2, 0)))  # left padding only: causal
        return self.head(torch.tanh(x).transpose(1, 2))


def _hand_logprobs(model: nn.Module, ids: list[int]) -> torch.Tensor:
    """log-softmax over the 50257 GPT-2 tokens at each position of one unpadded input."""
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    logits = getattr(out, "logits", out)
    return torch.log_softmax(logits[0, :, :GPT2_VOCAB].float(), dim=-1)


def _req(kind: str, *args: object) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


def _enc(text: str) -> list[int]:
    return gpt2_tokenizer().encode(text).ids


def _hand_loglikelihood(model: nn.Module, max_len: int, context: str, cont: str) -> tuple:
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, cont = context[:-spaces], context[-spaces:] + cont
    if context:
        ctx = _enc(context)
        target = _enc(context + cont)[len(ctx) :]
    else:
        ctx, target = [GPT2_EOS], _enc(cont)
    ids = (ctx + target)[-(max_len + 1) : -1]
    logprobs = _hand_logprobs(model, ids)[len(ids) - len(target) :]
    picked = [logprobs[j, t].item() for j, t in enumerate(target)]
    greedy = all(int(logprobs[j].argmax()) == t for j, t in enumerate(target))
    return sum(picked), greedy


PAIRS = [
    ("The cat sat on", " the mat."),
    ("Question: where is Paris?\nAnswer: ", "France"),  # trailing space moves to continuation
    ("", "An empty context is the EOS token."),
    (TEXT, " and so on"),  # context longer than max_length: left-truncated
]


@pytest.fixture
def tiny() -> TinyCausalLM:
    return TinyCausalLM(max_len=16)


# --- (a) loglikelihood ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3])
def test_loglikelihood_equals_hand_computation(tiny: TinyCausalLM, batch_size: int) -> None:
    lm = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=batch_size)
    got = lm.loglikelihood([_req("loglikelihood", c, x) for c, x in PAIRS])
    assert len(got) == len(PAIRS)
    for (context, cont), (logprob, greedy) in zip(PAIRS, got, strict=True):
        want, want_greedy = _hand_loglikelihood(tiny, 16, context, cont)
        assert logprob == pytest.approx(want, abs=1e-4)
        assert logprob < 0 and greedy == want_greedy


def test_empty_requests(tiny: TinyCausalLM) -> None:
    lm = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=2)
    pairs = [("", ""), ("a", ""), ("a", " b")]
    got = lm.loglikelihood([_req("loglikelihood", c, x) for c, x in pairs])
    assert got[:2] == [(0.0, True), (0.0, True)] and got[2][0] < 0
    assert lm.loglikelihood_rolling([_req("loglikelihood_rolling", "")]) == [0.0]
    assert lm.generate_until([_req("generate_until", "Hi", {"max_gen_toks": 0})]) == [""]


def test_bf16_autocast_is_close_to_fp32(tiny: TinyCausalLM) -> None:
    reqs = [_req("loglikelihood", c, x) for c, x in PAIRS]
    fp32 = adapter.M2BenchLM(lm=tiny, device="cpu", precision="fp32").loglikelihood(reqs)
    bf16_lm = adapter.M2BenchLM(lm=tiny, device="cpu", dtype="bf16")
    assert bf16_lm.precision == "bf16"
    bf16 = bf16_lm.loglikelihood(reqs)
    assert [b for b, _ in bf16] == pytest.approx([f for f, _ in fp32], rel=0.05)


def test_greedy_flag_is_true_for_the_models_own_argmax(tiny: TinyCausalLM) -> None:
    ids = _enc("The cat sat on")
    argmax = int(_hand_logprobs(tiny, ids)[-1].argmax())
    cont = gpt2_tokenizer().decode([argmax])
    if _enc("The cat sat on" + cont)[len(ids) :] != [argmax]:
        pytest.skip("the argmax token does not round-trip through the BPE")
    lm = adapter.M2BenchLM(lm=tiny, device="cpu")
    [(logprob, greedy)] = lm.loglikelihood([_req("loglikelihood", "The cat sat on", cont)])
    assert greedy and logprob == pytest.approx(_hand_logprobs(tiny, ids)[-1, argmax].item())


# --- (b) loglikelihood_rolling -------------------------------------------------------------------


def test_rolling_windows_score_every_token_once(tiny: TinyCausalLM, monkeypatch) -> None:
    m, tokens = 16, _enc(TEXT)
    n = len(tokens)
    assert n > 3 * m and n % m != 0  # several windows and a partial last one

    # By hand: first window EOS + tokens[:m-1]; then the next m tokens from the one before them;
    # the last r tokens from a full m-token input.
    total, counts, inputs = 0.0, [0] * n, []
    ids, start, end = [GPT2_EOS] + tokens[: m - 1], 0, m
    while start < n:
        logprobs = _hand_logprobs(tiny, ids)
        for j in range(start, end):
            counts[j] += 1
            total += logprobs[len(ids) - (end - j), tokens[j]].item()
        inputs.append(len(ids))
        start, end = end, min(end + m, n)
        ids = tokens[end - m - 1 : end - 1]
    assert counts == [1] * n and inputs[-1] == m

    units: list = []
    score = adapter.M2BenchLM._score
    monkeypatch.setattr(
        adapter.M2BenchLM, "_score", lambda self, u, **kw: units.extend(u) or score(self, u, **kw)
    )
    lm = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=2)
    [got] = lm.loglikelihood_rolling([_req("loglikelihood_rolling", TEXT)])
    assert got == pytest.approx(total, abs=1e-3)
    assert [t for _, cont in units for t in cont] == tokens  # each token predicted once, in order
    assert units[0][0] == [GPT2_EOS]  # the first token is conditioned on EOS
    assert len(units) == len(inputs)


def test_rolling_batches_documents_independently(tiny: TinyCausalLM) -> None:
    texts = [TEXT, "Short one.", TEXT[:150]]
    lm1 = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=1)
    lm4 = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=4)
    single = [lm1.loglikelihood_rolling([_req("loglikelihood_rolling", t)])[0] for t in texts]
    batched = lm4.loglikelihood_rolling([_req("loglikelihood_rolling", t) for t in texts])
    assert batched == pytest.approx(single, abs=1e-4)


# --- (c) generate_until --------------------------------------------------------------------------


def test_generate_until_stops_at_the_stop_string(tiny: TinyCausalLM) -> None:
    lm = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=2)
    context = "The cat sat on"
    [free] = lm.generate_until([_req("generate_until", context, {"max_gen_toks": 12})])
    assert 0 < len(_enc(free)) <= 12 and len(free) >= 4
    # By hand: greedy argmax of the first token.
    first = int(_hand_logprobs(tiny, _enc(context))[-1].argmax())
    assert _enc(free)[0] == first or free.startswith(gpt2_tokenizer().decode([first]))

    stop = free[len(free) // 2 : len(free) // 2 + 2]
    tiny.calls = 0
    [cut] = lm.generate_until(
        [_req("generate_until", context, {"until": [stop], "max_gen_toks": 50})]
    )
    assert cut == free[: free.find(stop)] and stop not in cut
    assert tiny.calls < 12  # stopped early, not after max_gen_toks=50 steps

    both = lm.generate_until(
        [
            _req("generate_until", "Hello", {"until": "\n\n", "max_gen_toks": 5}),
            _req("generate_until", context, {"until": [stop], "max_gen_toks": 50}),
        ]
    )
    [hello] = lm.generate_until([_req("generate_until", "Hello", {"max_gen_toks": 5})])
    assert both == [hello.split("\n\n")[0], cut]


def test_generate_until_refuses_sampling(tiny: TinyCausalLM) -> None:
    lm = adapter.M2BenchLM(lm=tiny, device="cpu")
    with pytest.raises(ConfigError, match="greedily"):
        lm.generate_until([_req("generate_until", "Hi", {"do_sample": True})])


# --- (d) end to end through lm-eval, offline -----------------------------------------------------


def test_evaluate_wikitext2_local_end_to_end(tmp_path: Path, monkeypatch) -> None:
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    tiny = TinyCausalLM(max_len=128)
    monkeypatch.chdir(tmp_path)  # data paths must not depend on the current directory
    results = adapter.evaluate(
        tiny,
        ["wikitext2_local"],
        include_path=TASK_DIR,
        limit=2,
        device="cpu",
        batch_size=8,
        out_dir=tmp_path / "out",
        include_defaults=False,
        bootstrap_iters=0,
    )
    scores = results["results"]["wikitext2_local"]
    written = json.loads((tmp_path / "out" / "lm_eval_results.json").read_text())
    assert written["results"]["wikitext2_local"] == pytest.approx(scores)
    assert written["config"]["m2bench_model"] == "TinyCausalLM"
    assert written["lm_eval_version"] == adapter.LM_EVAL_VERSION

    lines = (TASK_DIR / "wikitext2_local.jsonl").read_text(encoding="utf-8").splitlines()
    pages = [json.loads(line)["page"] for line in lines[:2]]
    lm = adapter.M2BenchLM(lm=tiny, device="cpu", batch_size=8)
    reqs = [_req("loglikelihood_rolling", wikitext_detokenizer({"page": p})) for p in pages]
    logprob = sum(lm.loglikelihood_rolling(reqs))
    n_bytes = sum(len(p.encode("utf-8")) for p in pages)
    n_words = sum(len(re.split(r"\s+", p)) for p in pages)  # as lm-eval counts words
    assert scores["bits_per_byte,none"] == pytest.approx(-logprob / math.log(2) / n_bytes, 1e-6)
    assert scores["byte_perplexity,none"] == pytest.approx(math.exp(-logprob / n_bytes), 1e-6)
    assert scores["word_perplexity,none"] == pytest.approx(math.exp(-logprob / n_words), 1e-6)


def test_cli_runs_registered_model_with_checkpoint(tiny, tmp_path, monkeypatch, temp_model):
    pytest.importorskip("lm_eval.__main__")
    trained = TinyCausalLM(max_len=16, seed=7)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    temp_model("tiny_test_lm", "causal_lm", lambda **kw: TinyCausalLM(max_len=16, **kw))
    monkeypatch.chdir(tmp_path)
    args = "--model m2bench --model_args model=tiny_test_lm,checkpoint=model.pt --device cpu"
    args += f" --tasks wikitext2_local --include_path {TASK_DIR} --limit 1 --output_path out"
    adapter.main(args.split())
    [path] = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(path.read_text())["results"]["wikitext2_local"]

    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    page = json.loads((TASK_DIR / "wikitext2_local.jsonl").open().readline())["page"]
    lm = adapter.M2BenchLM(lm=trained, device="cpu", batch_size=4)
    [logprob] = lm.loglikelihood_rolling(
        [_req("loglikelihood_rolling", wikitext_detokenizer({"page": page}))]
    )
    want = -logprob / math.log(2) / len(page.encode("utf-8"))
    assert scores["bits_per_byte,none"] == pytest.approx(want, 1e-6)  # the checkpoint's weights


# --- (e) errors ----------------------------------------------------------------------------------


def test_unknown_model_name_is_a_clear_error() -> None:
    from lm_eval.api.registry import get_model

    with pytest.raises(UnknownNameError, match="unknown model 'gpt_tinyy'.*did you mean"):
        get_model("m2bench").create_from_arg_string("model=gpt_tinyy", {"device": "cpu"})
    with pytest.raises(ConfigError, match="exactly one of"):
        adapter.M2BenchLM(device="cpu")


def test_model_kind_and_settings_are_checked(tiny: TinyCausalLM, temp_model) -> None:
    temp_model("tiny_encoder", "encoder", lambda: nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="kind 'encoder'.*causal_lm"):
        adapter.M2BenchLM(model="tiny_encoder", device="cpu")
    with pytest.raises(ConfigError, match="max_length=32 must be in 1..16"):
        adapter.M2BenchLM(lm=tiny, device="cpu", max_length=32)
    with pytest.raises(ConfigError, match="batch_size=auto"):
        adapter.M2BenchLM(lm=tiny, device="cpu", batch_size="auto")
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        adapter.M2BenchLM(lm=tiny, device="cpu", dtype="fp16")


def test_checkpoint_must_fit_strictly(tmp_path: Path, tiny: TinyCausalLM) -> None:
    state = TinyCausalLM(max_len=16, seed=3).state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="does not fit.*extra.weight"):
        adapter.load_checkpoint(tiny, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="does not exist"):
        adapter.load_checkpoint(tiny, tmp_path / "missing.pt")


def test_lm_eval_version_outside_range_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(adapter.importlib.metadata, "version", lambda name: "0.5.1")
    with pytest.raises(ConfigError, match=r"lm-eval 0\.5\.1 .*>=0\.4\.5,<0\.5"):
        adapter.lm_eval_version()


# --- the local task and its data -----------------------------------------------------------------


def test_rendered_include_path_makes_data_files_absolute(tmp_path: Path, monkeypatch) -> None:
    import yaml

    monkeypatch.chdir(tmp_path)
    with adapter.rendered_include_path(TASK_DIR) as rendered:
        text = (Path(rendered) / "wikitext2_local.yaml").read_text()
        config = yaml.load(text, Loader=adapter._TagLoader)
        assert Path(config["dataset_kwargs"]["data_files"]["test"]).is_file()
        assert config["doc_to_target"].tag == "!function"
        assert (Path(rendered) / "wikitext2_local_utils.py").is_file()
    assert not Path(rendered).exists()


@pytest.mark.needs_data
def test_jsonl_is_the_wikitext2_test_split_cut_into_articles() -> None:
    import sys

    sys.path.insert(0, str(TASK_DIR))
    try:
        import wikitext2_local_utils as utils
    finally:
        sys.path.remove(str(TASK_DIR))
    raw = RAW.read_bytes().decode("utf-8")
    pages = [json.loads(line)["page"] for line in (TASK_DIR / "wikitext2_local.jsonl").open()]
    assert pages == utils.split_documents(raw)
    assert len(pages) == 62 and pages[0].startswith(" = Robert Boulter = \n")
    assert "".join(pages).replace("\n", "\r\n") == raw  # nothing dropped or added


# --- the registered causal LMs -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m2_gpt_tiny", "gpt_tiny"])
def test_registered_causal_lms(name: str) -> None:
    from m2bench.registry import create_model, list_models

    if name not in list_models("causal_lm"):
        pytest.skip(f"{name} is not registered")
    torch.manual_seed(0)
    model = create_model(name).eval()
    lm = adapter.M2BenchLM(model=None, lm=model, device="cpu", batch_size=2, max_length=32)
    pairs = PAIRS[:2] + [(TEXT, " and so on")]
    got = lm.loglikelihood([_req("loglikelihood", c, x) for c, x in pairs])
    for (context, cont), (logprob, greedy) in zip(pairs, got, strict=True):
        want, want_greedy = _hand_loglikelihood(model, 32, context, cont)
        assert logprob == pytest.approx(want, abs=1e-3) and greedy == want_greedy


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny", "m2_gpt_tiny", "gpt_tiny"])
def test_cuda_matches_cpu(name: str) -> None:
    from m2bench.registry import create_model, list_models

    if name != "tiny" and name not in list_models("causal_lm"):
        pytest.skip(f"{name} is not registered")
    torch.manual_seed(0)
    model = TinyCausalLM(max_len=16) if name == "tiny" else create_model(name).eval()
    m = 16 if name == "tiny" else 64
    reqs = [_req("loglikelihood", c, x) for c, x in PAIRS]
    rolling = [_req("loglikelihood_rolling", TEXT)]
    gen = [_req("generate_until", "The cat sat on", {"max_gen_toks": 8})]
    cpu = adapter.M2BenchLM(lm=model, device="cpu", batch_size=3, max_length=m)
    want = cpu.loglikelihood(reqs), cpu.loglikelihood_rolling(rolling), cpu.generate_until(gen)
    cuda = adapter.M2BenchLM(lm=model, device="cuda", batch_size=3, precision="fp32", max_length=m)
    assert next(model.parameters()).is_cuda
    got = [logprob for logprob, _ in cuda.loglikelihood(reqs)]
    assert got == pytest.approx([logprob for logprob, _ in want[0]], abs=2e-3)
    assert cuda.loglikelihood_rolling(rolling) == pytest.approx(want[1], abs=2e-2)
    assert cuda.generate_until(gen) == want[2]
    bf16 = adapter.M2BenchLM(lm=model, device="cuda", batch_size=3, max_length=m)
    assert bf16.precision == "bf16"  # auto: bf16 autocast on a GPU
    assert bf16.loglikelihood_rolling(rolling) == pytest.approx(want[1], rel=0.05)
