"""GLUE fine-tuning recipes of the M2 paper's code, per task and model size.

Source: HazyResearch/m2 ``yamls/finetune-glue/*.yaml`` and ``bert/glue.py`` as summarised in
``shared/specs/m2_recipes.md`` section 1 (tables 1.2 and 1.3). Common to every job: linear warm-up
over the first 6% of steps, then linear decay to 0; betas (0.9, 0.98), eps 1e-6; no gradient
clipping; dropout 0.1; evaluation on dev after the last epoch (no checkpoint selection).

- M2-BERT: table 1.2, max length 128, optimizer D (Composer's DecoupledAdamW: weight decay
  ``wd * lr_t / lr``) or A (torch AdamW); RTE, MRPC, STS-B start from the MNLI-fine-tuned weights.
  Pooling: the official script's *effective* behaviour (a flag set for QNLI leaks into the tasks
  after it in its order): CLS for MNLI, RTE, QQP; masked mean for QNLI, SST-2, STS-B, MRPC, CoLA.
- Transformer baselines (BERT, MiniLM, the dense-mixer BERT): table 1.3 (the official
  ``hf-transformer`` yaml: job-class defaults, DecoupledAdamW everywhere, max length 256, CLS).
- WNLI has no recipe (the M2 paper leaves it out of the average); m2bench trains it with the RTE
  values from the pretrained weights and reports it apart.
- The official sampler does not shuffle (``shuffle=False``); m2bench keeps that by default
  (``task.shuffle=true`` shuffles every epoch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from m2bench.config import apply_options, check_ranges
from m2bench.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning job's settings."""

    lr: float
    weight_decay: float
    optimizer: str  # "decoupled" (Composer DecoupledAdamW) | "adamw" (torch AdamW)
    epochs: float
    batch_size: int
    max_length: int = 128
    pooling: str = "cls"  # cls | mean
    start: str = "pretrained"  # pretrained | mnli (the MNLI-fine-tuned weights)
    precision: str | None = None  # forces a precision (STS-B runs in fp32 in the official code)


_D, _A = "decoupled", "adamw"
#: allowed values of the recipe's text fields (``precision``: the autocast a job runs in)
CHOICES = {
    "optimizer": (_D, _A),
    "pooling": ("cls", "mean"),
    "start": ("pretrained", "mnli"),
    "precision": ("fp32", "bf16", "fp16"),
}
#: GLUE options that are not recipe fields: ``task.shuffle``, ``task.mnli_checkpoint=FILE``,
#: ``task.train_limit=N`` (first N training rows), ``task.revision`` (hub revision)
EXTRA_OPTIONS = ("shuffle", "mnli_checkpoint", "train_limit", "revision")
_BS = {"mnli": 48, "qnli": 16, "qqp": 16, "sst2": 16, "cola": 32, "rte": 16, "mrpc": 32, "stsb": 32}
_POOL = {"mnli": "cls", "rte": "cls", "qqp": "cls", "qnli": "mean", "sst2": "mean", "stsb": "mean",
         "mrpc": "mean", "cola": "mean", "wnli": "cls"}  # fmt: skip
_START = {"rte": "mnli", "mrpc": "mnli", "stsb": "mnli"}

# (lr, weight decay, optimizer, epochs) per size, table 1.2
_M2 = {
    "80m": {"mnli": (5e-5, 5e-6, _D, 3), "qnli": (5e-5, 1e-6, _D, 10), "qqp": (3e-5, 0.01, _A, 10),
            "sst2": (3e-5, 3e-6, _D, 3), "cola": (5e-5, 5e-6, _D, 10), "rte": (5e-5, 0.01, _A, 6),
            "mrpc": (5e-5, 0.01, _A, 10), "stsb": (7e-5, 0.01, _A, 10)},
    "110m": {"mnli": (5e-5, 5e-6, _D, 3), "qnli": (5e-5, 1e-6, _D, 10), "qqp": (3e-5, 3e-6, _D, 5),
             "sst2": (3e-5, 3e-6, _D, 3), "cola": (8e-5, 5e-6, _A, 10), "rte": (1e-5, 1e-6, _D, 3),
             "mrpc": (8e-5, 8e-5, _D, 10), "stsb": (8e-5, 3e-6, _D, 10)},
    "260m": {"mnli": (5e-5, 5e-6, _D, 3), "qnli": (5e-5, 1e-6, _D, 10), "qqp": (3e-5, 3e-6, _D, 5),
             "sst2": (3e-5, 3e-6, _D, 3), "cola": (5e-5, 5e-6, _D, 10), "rte": (1e-5, 1e-6, _D, 3),
             "mrpc": (8e-5, 8e-6, _D, 10), "stsb": (7e-5, 3e-6, _D, 10)},
    "341m": {"mnli": (5e-5, 5e-6, _D, 3), "qnli": (5e-5, 1e-6, _D, 10), "qqp": (3e-5, 3e-6, _D, 5),
             "sst2": (3e-5, 3e-6, _D, 3), "cola": (5e-5, 1e-6, _D, 10), "rte": (5e-5, 1e-6, _A, 2),
             "mrpc": (8e-5, 8e-6, _D, 10), "stsb": (8e-5, 3e-6, _D, 8)},
}  # fmt: skip
_M2_SIZE_BY_WIDTH = {768: "80m", 960: "110m", 1536: "260m", 1792: "341m"}

# table 1.3: the Transformer baseline recipe (job-class defaults)
_BASELINE = {"mnli": (5e-5, 5e-6, _D, 3), "qnli": (1e-5, 1e-6, _D, 10), "qqp": (3e-5, 3e-6, _D, 5),
             "sst2": (3e-5, 3e-6, _D, 3), "cola": (5e-5, 5e-6, _D, 10), "rte": (1e-5, 1e-6, _D, 3),
             "mrpc": (8e-5, 8e-6, _D, 10), "stsb": (3e-5, 3e-6, _D, 10)}  # fmt: skip


def recipe(subtask: str, family: str, hidden_size: int) -> Recipe:
    """The recipe of ``subtask`` for a model of ``family`` (``m2`` or ``baseline``) and width.

    M2 widths other than the four released sizes (e.g. the tiny test model) use the 80M values.
    """
    key = "rte" if subtask == "wnli" else subtask
    if family == "m2":
        lr, wd, opt, ep = _M2[_M2_SIZE_BY_WIDTH.get(hidden_size, "80m")][key]
        r = Recipe(
            lr, wd, opt, float(ep), _BS[key], 128, _POOL[subtask], _START.get(subtask, "pretrained")
        )
    else:
        lr, wd, opt, ep = _BASELINE[key]
        r = Recipe(lr, wd, opt, float(ep), _BS[key], 256, "cls", _START.get(subtask, "pretrained"))
    return replace(r, precision="fp32") if subtask == "stsb" else r


def with_options(r: Recipe, options: Mapping[str, Any]) -> Recipe:
    """``r`` with the ``task.<field>`` overrides (lr, weight_decay, optimizer, epochs, ...) applied.

    Raises:
        ConfigError: an unknown option, or a value of the wrong kind or outside its domain.
    """
    r = apply_options(r, options, what="GLUE", extra=EXTRA_OPTIONS)
    for name, allowed in CHOICES.items():
        value = getattr(r, name)
        if name in options and value is not None and value not in allowed:
            raise ConfigError(f"task.{name}={value} is not one of {', '.join(allowed)}")
    check_ranges(r, positive=("lr", "epochs"), non_negative=("weight_decay",))
    if r.batch_size < 1:
        raise ConfigError(f"task.batch_size must be >= 1, got {r.batch_size}")
    if r.max_length < 3:  # [CLS] and [SEP]s take 3 positions of a pair
        raise ConfigError(f"task.max_length must be >= 3, got {r.max_length}")
    return r


def check_options(options: Mapping[str, Any]) -> None:
    """Check the GLUE ``task.<option>`` values before any model is built (``Glue.load``).

    Raises:
        ConfigError: an unknown option or a bad value, naming the option.
    """
    with_options(recipe("rte", "m2", 768), options)
    if "shuffle" in options and not isinstance(options["shuffle"], bool):
        raise ConfigError(f"task.shuffle must be true or false, got {options['shuffle']!r}")
    limit = options.get("train_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"task.train_limit must be a whole number >= 1, got {limit!r}")
    revision = options.get("revision")
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, str | int)
                                 or not str(revision)):  # fmt: skip
        raise ConfigError(f"task.revision must be a hub branch, tag or commit, got {revision!r}")
