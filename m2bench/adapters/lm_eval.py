"""lm-eval adapter: any m2bench causal LM as the lm-eval model ``m2bench``.

``M2BenchLM`` wraps a model of kind ``causal_lm`` (``model(input_ids (B, L)) -> logits (B, L, V)``,
a tensor or an object with ``.logits``; context ``model.config.max_len``; V >= 50257, of which only
the first 50257 are GPT-2 BPE tokens and are kept) together with the GPT-2 byte-level BPE of
:mod:`m2bench.tokenization`, for the EleutherAI LM Evaluation Harness (L. Gao, J. Tow, B. Abbasi
et al., "The Language Model Evaluation Harness", Zenodo 2024, v0.4.3,
https://doi.org/10.5281/zenodo.12608602; https://github.com/EleutherAI/lm-evaluation-harness).
Supported lm-eval: ``LM_EVAL_VERSIONS``, checked at import; the installed version
(``LM_EVAL_VERSION``, also ``lm_eval_version`` in the results) is a run tag.

Use:

- CLI: ``python -m m2bench.adapters.lm_eval --model m2bench --model_args
  model=m2_gpt_tiny,checkpoint=model.pt --tasks wikitext2_local --include_path tasks/data/lm_eval
  --device cpu``. lm-eval 0.4.x finds models only in its own registry (its packaging declares no
  entry point for model plugins), so the plain ``lm_eval`` command does not know ``m2bench``: this
  module registers the class, then runs lm-eval's own CLI with the same arguments.
- Python: ``evaluate(model_or_name, ["wikitext2_local"], include_path=..., out_dir=...)``.

Model arguments: ``model`` (registry name) or ``lm`` (an ``nn.Module``, from Python only),
``checkpoint`` (a ``torch.save(model.state_dict())`` file, loaded with ``strict=True``), ``device``
(``auto`` | ``cpu`` | ``cuda[:N]``), ``batch_size``, ``max_length`` (default ``config.max_len``),
``dtype``/``precision`` (``fp32`` | ``bf16`` autocast | ``auto``: bf16 on a GPU); any other key is
a setting of the model's config (``create_model`` overrides, e.g. ``kernel=torch``).

Requests are handled as lm-eval's Hugging Face model (``HFLM``) handles them:

- ``loglikelihood(context, continuation)``: trailing whitespace of the context moves to the
  continuation; the continuation's tokens are those of ``context + continuation`` after the tokens
  of ``context``; an empty context is the EOS token. Returns the summed log-probability of the
  continuation tokens and whether each is the argmax. Inputs are left-truncated to ``max_length``.
- ``loglikelihood_rolling(text)``: the document's N tokens are predicted in disjoint windows
  (lm-eval's ``get_rolling_token_windows`` with ``context_len=1``, then ``make_disjoint_window``):
  the first window reads EOS + tokens[0 : m-1] and predicts tokens[0 : m] (m = ``max_length``),
  each later window predicts the next m tokens from the token before them onwards, and the last
  window predicts the remaining r < m tokens from a full m-token input (the m - r tokens before
  them are extra context). Every token is predicted exactly once; the first one from EOS alone.
- ``generate_until(context, gen_kwargs)``: greedy decoding of at most ``max_gen_toks`` (256)
  tokens, stopping at the EOS token or once the text contains a string of ``until``; the text is
  cut before the first stop string. The model re-reads the growing sequence at each step.

Batching: requests are sorted by input length (longest first, so memory errors come early) and
right-padded with EOS into batches of ``batch_size``; padding on the right cannot change a causal
model's outputs at earlier positions. Windows of all documents share batches.

Task YAMLs of an ``include_path`` may name ``dataset_kwargs.data_files`` relative to the
repository root (lm-eval itself resolves them against the current directory); ``evaluate`` and the
CLI run lm-eval on a temporary copy of the folder with those paths made absolute
(:func:`rendered_include_path`), so that runs work from any directory.

Deviations from ``HFLM``: no automatic batch size (``batch_size=auto`` is refused); greedy
decoding only (``do_sample=True`` is refused, ``temperature`` and other sampling settings are
ignored with a warning); during generation the input is the last ``max_length`` tokens of context
plus generated text, instead of a context cut once to ``max_length - max_gen_toks``; the text
``<|endoftext|>`` inside a request is encoded as plain text, not as the EOS token; a continuation
longer than ``max_length`` tokens is refused; no chat templates; one process, no data parallelism.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from m2bench.errors import ConfigError, DataError, ModelFailure

LM_EVAL_VERSIONS = ">=0.4.5,<0.5"  # the lm-eval releases this adapter is written against
ADAPTER_NAME = "m2bench"  # the name of this adapter in lm-eval's model registry
REPO_ROOT = Path(__file__).resolve().parents[2]  # base of relative data paths in task YAMLs
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generate_until
_SOFTMAX_ROWS = 4096  # token positions per log-softmax call: 4096 x 50257 fp32 = 0.8 GB
PRECISIONS = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}

logger = logging.getLogger(__name__)


def lm_eval_version() -> str:
    """The installed lm-eval version; raises ConfigError when missing or outside the range."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    hint = f"install a supported one: pip install 'lm-eval{LM_EVAL_VERSIONS}' (or '.[lm]')"
    try:
        found = importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"lm-eval is not installed; {hint}") from None
    if Version(found) not in SpecifierSet(LM_EVAL_VERSIONS):
        raise ConfigError(f"lm-eval {found} is installed, the m2bench adapter supports {hint}")
    return found


LM_EVAL_VERSION = lm_eval_version()

from lm_eval.api.model import LM  # noqa: E402  (after the version check, on purpose)
from lm_eval.api.registry import register_model  # noqa: E402

from m2bench.tokenization import GPT2_EOS, GPT2_VOCAB, gpt2_tokenizer  # noqa: E402


class M2BenchLM(LM):
    """An m2bench causal LM as an lm-eval ``LM`` (arguments: see the module docstring)."""

    def __init__(
        self,
        model: str | None = None,
        checkpoint: str | None = None,
        device: str | None = "auto",
        batch_size: int | str | None = 1,
        max_length: int | None = None,
        dtype: str | None = None,
        precision: str | None = None,
        lm: nn.Module | None = None,
        max_batch_size: int | None = None,  # passed by lm-eval for batch_size=auto; unused
        **overrides: Any,
    ) -> None:
        super().__init__()
        del max_batch_size
        if "pretrained" in overrides:
            raise ConfigError("m2bench models take model=<registry name> and checkpoint=<file>")
        self._device = _resolve_device(device)
        self.precision = _resolve_precision(dtype, precision, self._device)
        self._batch_size = _resolve_batch_size(batch_size)
        self.module, self.model_name = _build(model, lm, checkpoint, overrides)
        self.checkpoint = str(checkpoint) if checkpoint else None
        self._max_length = _resolve_max_length(self.module, max_length)
        self.module.to(self._device).eval()
        self._tokenizer = gpt2_tokenizer()

    # --- properties lm-eval reads ---------------------------------------------------------------

    @property
    def max_length(self) -> int:
        """Tokens per model input."""
        return self._max_length

    @property
    def batch_size(self) -> int:
        """Sequences per forward pass."""
        return self._batch_size

    @property
    def eot_token_id(self) -> int:
        """GPT-2's ``<|endoftext|>``: the prefix of every document and the padding."""
        return GPT2_EOS

    @property
    def tokenizer_name(self) -> str:
        """Names the tokenizer in lm-eval's request cache."""
        return "gpt2-bpe"

    def get_model_info(self) -> dict[str, Any]:
        """Added by lm-eval to the results' ``config``."""
        from m2bench.models import count_params

        return {
            "m2bench_model": self.model_name,
            "m2bench_checkpoint": self.checkpoint,
            "m2bench_params_m": round(count_params(self.module) / 1e6, 3),
            "max_length": self._max_length,
            "precision": self.precision,
            "model_device": str(self._device),
        }

    # --- tokens ------------------------------------------------------------------------------

    def tok_encode(self, text: str) -> list[int]:
        """GPT-2 BPE ids of ``text`` (no special tokens added)."""
        return self._tokenizer.encode(text).ids

    def tok_decode(self, ids: Sequence[int]) -> str:
        """Text of GPT-2 BPE ids."""
        return self._tokenizer.decode(list(ids))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [GPT2_EOS], self.tok_encode(continuation)
        whole, head = self.tok_encode(context + continuation), self.tok_encode(context)
        return head, whole[len(head) :]

    # --- the three request types ---------------------------------------------------------------

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(summed log-probability, is greedy) of each ``(context, continuation)`` request."""
        units = [self._encode_pair(*req.args[:2]) for req in requests]
        results = self._score(units)
        for req, res in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole ``(text,)`` request, in disjoint windows (module doc)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        units, owners = [], []
        for r, req in enumerate(requests):
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(req.args[0]),
                prefix_token=GPT2_EOS,
                max_seq_len=self._max_length,
                context_len=1,
            )
            for window in windows:
                units.append(make_disjoint_window(window))
                owners.append(r)
        totals = [0.0] * len(requests)
        for r, (logprob, _) in zip(owners, self._score(units, greedy=False), strict=True):
            totals[r] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each ``(context, gen_kwargs)`` request (module doc)."""
        jobs = []
        for req in requests:
            context, gen_kwargs = req.args[:2]
            ids = self.tok_encode(context) if context else [GPT2_EOS]
            jobs.append((ids, *_generation_settings(gen_kwargs)))
        texts: list[str] = [""] * len(jobs)
        for batch in self._batches([len(ids) for ids, _, _ in jobs]):
            for i, text in zip(batch, self._greedy([jobs[i] for i in batch]), strict=True):
                texts[i] = text
        for req, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts

    # --- model calls -------------------------------------------------------------------------

    def _batches(self, lengths: list[int]) -> Iterator[list[int]]:
        """Request indices, longest first, in groups of ``batch_size``."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        for start in range(0, len(order), self._batch_size):
            yield order[start : start + self._batch_size]

    @torch.inference_mode()
    def _logits(self, seqs: list[list[int]]) -> torch.Tensor:
        """Logits (B, longest, 50257) of token lists right-padded with EOS."""
        ids = torch.full((len(seqs), max(map(len, seqs))), GPT2_EOS, dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        ids = ids.to(self._device)
        bf16 = self.precision == "bf16"
        with torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=bf16):
            out = self.module(ids)
        logits = getattr(out, "logits", out)
        if not torch.is_tensor(logits) or logits.shape[:2] != ids.shape or logits.ndim != 3:
            raise ModelFailure(f"{self.model_name} did not return logits (B, L, V) for {ids.shape}")
        if logits.shape[-1] < GPT2_VOCAB:
            raise ModelFailure(f"{self.model_name} has {logits.shape[-1]} < {GPT2_VOCAB} logits")
        return logits[..., :GPT2_VOCAB]

    def _score(
        self, units: list[tuple[list[int], list[int]]], greedy: bool = True
    ) -> list[tuple[float, bool]]:
        """Summed log-probability and greedy flag of each (context, continuation) token pair."""
        m = self._max_length
        for _, cont in units:
            if len(cont) > m:
                raise DataError(f"a continuation of {len(cont)} tokens exceeds max_length={m}")
        inputs = [(ctx + cont)[-(m + 1) : -1] for ctx, cont in units]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(units)  # empty continuations
        todo = [i for i, (_, cont) in enumerate(units) if cont]
        for group in self._batches([len(inputs[i]) for i in todo]):
            batch = [todo[g] for g in group]
            logits = self._logits([inputs[i] for i in batch])
            rows, cols, targets = [], [], []  # one entry per scored token
            for row, i in enumerate(batch):
                cont, end = units[i][1], len(inputs[i])
                rows += [row] * len(cont)
                cols += range(end - len(cont), end)
                targets += cont
            sums, misses = torch.zeros(len(batch), dtype=torch.float64), torch.zeros(len(batch))
            dev = logits.device
            for at in range(0, len(targets), _SOFTMAX_ROWS):  # one softmax call per chunk
                part = slice(at, at + _SOFTMAX_ROWS)
                seg = torch.tensor(rows[part])
                logprobs = torch.log_softmax(
                    logits[seg.to(dev), torch.tensor(cols[part], device=dev)].float(), dim=-1
                )
                target = torch.tensor(targets[part], device=dev)
                sums.index_add_(0, seg, logprobs.gather(-1, target[:, None])[:, 0].double().cpu())
                if greedy:  # the argmax costs as much as the softmax: only where it is read
                    miss = (logprobs.argmax(-1) != target).float().cpu()
                    misses.index_add_(0, seg, miss)
            for row, i in enumerate(batch):
                results[i] = (float(sums[row]), greedy and bool(misses[row] == 0))
        return results

    def _greedy(self, jobs: list[tuple[list[int], list[str], int]]) -> list[str]:
        """Greedy generation for one batch of (context ids, stop strings, max new tokens)."""
        seqs = [list(ids) for ids, _, _ in jobs]
        made: list[list[int]] = [[] for _ in jobs]
        live = [limit > 0 for _, _, limit in jobs]
        while any(live):
            rows = [i for i, alive in enumerate(live) if alive]
            windows = [seqs[i][-self._max_length :] for i in rows]
            logits = self._logits(windows)
            for row, i in enumerate(rows):
                token = int(logits[row, len(windows[row]) - 1].argmax())
                if token == GPT2_EOS:
                    live[i] = False
                    continue
                seqs[i].append(token)
                made[i].append(token)
                stops, limit = jobs[i][1], jobs[i][2]
                text = self.tok_decode(made[i])
                if len(made[i]) >= limit or any(s in text for s in stops):
                    live[i] = False
        return [
            _cut(self.tok_decode(m), stops) for m, (_, stops, _) in zip(made, jobs, strict=True)
        ]


def _cut(text: str, stops: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    hits = [text.find(s) for s in stops if s in text]
    return text[: min(hits)] if hits else text


def _generation_settings(gen_kwargs: dict | None) -> tuple[list[str], int]:
    """(stop strings, max new tokens) of lm-eval ``gen_kwargs``; greedy decoding only."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop("until", None) or []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, (list, tuple)) or not all(isinstance(s, str) for s in until):
        raise ConfigError(f"gen_kwargs until must be a string or a list of strings, got {until!r}")
    max_new = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
    if kwargs.pop("do_sample", False):
        raise ConfigError("the m2bench adapter decodes greedily only; drop do_sample=True")
    ignored = {k: v for k, v in kwargs.items() if k != "temperature" or v}
    if ignored:
        logger.warning("greedy decoding: ignoring generation settings %s", ignored)
    return [s for s in until if s], max_new


# --- construction helpers ------------------------------------------------------------------------


def _build(
    name: str | None, lm: nn.Module | None, checkpoint: str | None, overrides: dict
) -> tuple[nn.Module, str]:
    """The module to evaluate and the name it is reported under."""
    if (name is None) == (lm is None):
        raise ConfigError("pass exactly one of model=<m2bench registry name> and lm=<nn.Module>")
    if lm is not None:
        if checkpoint or overrides:
            raise ConfigError("checkpoint= and model settings apply to model=<name>, not to lm=")
        if not isinstance(lm, nn.Module):
            raise ConfigError(f"lm= must be a torch nn.Module, got {type(lm).__name__}")
        return lm, getattr(getattr(lm, "spec", None), "name", type(lm).__name__)
    from m2bench.registry import create_model, get_model_spec, list_models

    spec = get_model_spec(name)  # unknown names raise with close matches
    if spec.kind != "causal_lm":
        raise ConfigError(
            f"model {name!r} is of kind {spec.kind!r}; lm-eval needs a causal_lm, one of "
            f"{', '.join(list_models('causal_lm'))}"
        )
    module = create_model(name, **overrides)
    if checkpoint:
        load_checkpoint(module, checkpoint)
    else:
        logger.warning("no checkpoint given: evaluating %s with random weights", name)
    return module, name


def load_checkpoint(module: nn.Module, path: str | Path) -> None:
    """Load a ``torch.save(model.state_dict())`` file into ``module`` (strict).

    Raises:
        DataError: missing or unreadable file, or keys/shapes that do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"checkpoint {path} does not exist (expected a torch.save(state_dict) file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a state_dict file"
        raise DataError(
            f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:200]}"
        ) from None
    if not isinstance(state, dict):
        raise DataError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        problems = " ".join(str(exc).split())[:600]  # one line, as every m2bench error
        raise DataError(f"checkpoint {path} does not fit the model: {problems}") from None


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        # lm-eval's CLI passes --device cuda:0 unless told otherwise; HFLM also falls back.
        logger.warning("device %s asked for but no CUDA GPU is visible: running on cpu", device)
        return torch.device("cpu")
    return dev


def _resolve_precision(dtype: str | None, precision: str | None, device: torch.device) -> str:
    if dtype and precision and dtype != precision:
        raise ConfigError(f"dtype={dtype!r} and precision={precision!r} disagree; give one")
    value = str(dtype or precision or "auto").lower()
    if value == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if value not in PRECISIONS:
        raise ConfigError(f"precision {value!r} is not one of auto, {', '.join(PRECISIONS)}")
    return PRECISIONS[value]


def _resolve_batch_size(batch_size: int | str | None) -> int:
    if batch_size is None:
        return 1
    if isinstance(batch_size, str) and batch_size.startswith("auto"):
        raise ConfigError("the m2bench adapter has no batch_size=auto; give a number")
    try:
        value = int(batch_size)
    except ValueError:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}") from None
    if value < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return value


def _resolve_max_length(module: nn.Module, max_length: int | str | None) -> int:
    context = getattr(getattr(module, "config", None), "max_len", None)
    if context is None and max_length is None:
        raise ConfigError(f"{type(module).__name__} has no config.max_len; pass max_length=")
    value = int(max_length) if max_length is not None else int(context)
    if value < 1 or (context is not None and value > context):
        raise ConfigError(f"max_length={value} must be in 1..{context} (the model's max_len)")
    return value


# --- task folders whose YAMLs name data files by relative path ----------------------------------


@dataclasses.dataclass(frozen=True)
class _Tagged:
    """A YAML value with a local tag (``!function ...``), kept as written."""

    tag: str
    value: Any


class _TagLoader(yaml.SafeLoader):
    pass


class _TagDumper(yaml.SafeDumper):
    pass


def _construct_tagged(loader: Any, suffix: str, node: Any) -> _Tagged:
    if isinstance(node, yaml.ScalarNode):
        return _Tagged("!" + suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return _Tagged("!" + suffix, loader.construct_sequence(node, deep=True))
    return _Tagged("!" + suffix, loader.construct_mapping(node, deep=True))


def _represent_tagged(dumper: Any, data: _Tagged) -> Any:
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_scalar(data.tag, data.value)


_TagLoader.add_multi_constructor("!", _construct_tagged)
_TagDumper.add_representer(_Tagged, _represent_tagged)


def _absolute_data_files(files: Any, where: Path) -> Any:
    """``data_files`` with each relative path made absolute (repository root, then cwd)."""
    if isinstance(files, dict):
        return {key: _absolute_data_files(value, where) for key, value in files.items()}
    if isinstance(files, list):
        return [_absolute_data_files(value, where) for value in files]
    if not isinstance(files, str) or "://" in files or os.path.isabs(files):
        return files
    for base in (REPO_ROOT, Path.cwd()):
        if glob.glob(str(base / files)):
            return str(base / files)
    raise DataError(
        f"{where}: data file {files!r} is found neither under the repository root {REPO_ROOT} "
        f"nor under the current directory {Path.cwd()}"
    )


def _render_yaml(text: str, where: Path) -> str:
    """A task YAML with absolute ``dataset_kwargs.data_files`` (unchanged if none are relative)."""
    try:
        config = yaml.load(text, Loader=_TagLoader)  # noqa: S506  (SafeLoader + opaque local tags)
    except yaml.YAMLError:
        return text  # left for lm-eval to report
    kwargs = config.get("dataset_kwargs") if isinstance(config, dict) else None
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        return text
    files = _absolute_data_files(kwargs["data_files"], where)
    if files == kwargs["data_files"]:
        return text
    kwargs["data_files"] = files
    return yaml.dump(config, Dumper=_TagDumper, sort_keys=False, allow_unicode=True)


@contextlib.contextmanager
def rendered_include_path(include_path: str | Path | None) -> Iterator[str | None]:
    """A temporary copy of an lm-eval task folder whose YAMLs name data files by absolute path.

    lm-eval hands ``dataset_kwargs.data_files`` to ``datasets``, which resolves relative paths
    against the current directory. m2bench's task YAMLs name them relative to the repository
    root; this copy makes them absolute, so a run works from any directory. Other files are
    symlinked (``!function`` modules are loaded from beside their YAML).
    """
    if include_path is None:
        yield None
        return
    source = Path(include_path).resolve()
    if not source.is_dir():
        raise ConfigError(f"include_path {include_path} is not a folder of lm-eval task YAMLs")
    with tempfile.TemporaryDirectory(prefix="m2bench-lm-eval-") as tmp:
        target = Path(tmp) / source.name
        shutil.copytree(
            source,
            target,
            ignore=shutil.ignore_patterns("__pycache__"),
            copy_function=lambda src, dst: os.symlink(os.path.abspath(src), dst),
        )
        for path in sorted(target.rglob("*.y*ml")):
            original = source / path.relative_to(target)
            path.unlink()
            path.write_text(_render_yaml(original.read_text(encoding="utf-8"), original), "utf-8")
        yield str(target)


# --- entry points ----------------------------------------------------------------------------


def evaluate(
    model: nn.Module | str,
    tasks: list[str],
    *,
    out_dir: str | Path,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    device: str = "auto",
    batch_size: int = 1,
    checkpoint: str | None = None,
    precision: str = "auto",
    include_defaults: bool = True,
    log_samples: bool = False,
    bootstrap_iters: int = 100000,
) -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` on an m2bench causal LM and write its result JSON.

    Args:
        model: a registry name (built by ``create_model``, weights from ``checkpoint``) or an
            already built causal-LM module (moved to ``device`` and put in eval mode).
        tasks: lm-eval task names.
        out_dir: receives ``lm_eval_results.json`` (and ``lm_eval_samples_<task>.jsonl`` with
            ``log_samples``).
        include_path: a folder of extra task YAMLs (relative data paths: see
            :func:`rendered_include_path`).
        num_fewshot, limit, bootstrap_iters: passed to ``simple_evaluate``.
        include_defaults: also index lm-eval's own tasks (a few seconds); False for local ones only.

    Returns:
        lm-eval's results dict (``results``, ``configs``, ``versions``, ``config``, ...).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, str):
        target: Any = ADAPTER_NAME
        model_args: dict[str, Any] | None = {"model": model, "precision": precision}
        if checkpoint:
            model_args["checkpoint"] = str(checkpoint)
    else:
        if checkpoint:
            load_checkpoint(model, checkpoint)
        target = M2BenchLM(lm=model, device=device, batch_size=batch_size, precision=precision)
        model_args = None
    with rendered_include_path(include_path) as include:
        manager = TaskManager(include_path=include, include_defaults=include_defaults)
        results = lm_eval.simple_evaluate(
            model=target,
            model_args=model_args,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=batch_size,
            device=device,
            task_manager=manager,
            log_samples=log_samples,
            bootstrap_iters=bootstrap_iters,
        )
    samples = results.pop("samples", None) or {}
    dump = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    (out / "lm_eval_results.json").write_text(dump, encoding="utf-8")
    for task, rows in samples.items():
        lines = (
            json.dumps(row, default=handle_non_serializable, ensure_ascii=False) for row in rows
        )
        (out / f"lm_eval_samples_{task}.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    return results


def main(argv: list[str] | None = None) -> None:
    """lm-eval's CLI with the ``m2bench`` model registered (``--include_path`` rendered)."""
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    at, include = None, None
    for i, arg in enumerate(args):
        if arg == "--include_path" and i + 1 < len(args):
            at, include = i + 1, args[i + 1]
        elif arg.startswith("--include_path="):
            at, include = i, arg.split("=", 1)[1]
    with rendered_include_path(include) as rendered:
        if at is not None:
            args[at] = rendered if args[at] == include else f"--include_path={rendered}"
        saved, sys.argv = sys.argv, ["lm-eval", *args]
        try:
            cli_evaluate()
        finally:
            sys.argv = saved


if __name__ == "__main__":
    # Run as ``python -m``, this file is the module ``__main__``; the class is registered once, by
    # the importable module ``m2bench.adapters.lm_eval``, whose main() runs the CLI.
    from m2bench.adapters.lm_eval import main as _main

    _main()
else:
    import lm_eval.models  # noqa: F401  (lm-eval's own table first: get_model loads it only when empty)

    register_model(ADAPTER_NAME)(M2BenchLM)
