"""``m2bench bench``: throughput, latency and peak memory of models over sequence lengths.

Protocol (the reference measurements of the M2 throughput claim; ``shared/specs/m2_recipes.md``
section 6): a fixed number of tokens per batch (default 65,536, so batch = tokens / L), bf16
autocast, forward only or forward + backward (loss = mean of the last hidden states; no optimizer
step), warm-up calls, then the median of timed repeats (``m2bench.timing``: device-synchronised
wall time). tokens/ms counts every token of the batch (no padding: inputs are full-length). Out
of memory halves the batch (up to 4 times) and records the batch actually used; a configuration
that still fails is recorded with its error (status ``oom``). Inputs are random token ids:
throughput does not depend on the text. Each model is built for each length (``max_len`` = L) with
random weights.

Everything that can be checked without compute is checked first (one-line ``ConfigError``): modes,
lengths, counts, precision, that every model is an encoder (has ``hidden_states``), and that every
``model.FIELD=VALUE`` override is a config field of at least one model of the sweep. A model
that cannot be built here (e.g. a missing package) gets rows with status ``skipped``; one that
raises while it is measured gets rows with status ``failed`` and a FAILED MLflow run, and the
sweep goes on.

Results: one MLflow run per model in the experiment ``m2bench/bench`` (tag ``stage=bench``, params
the protocol and the ``model.<field>`` overrides that apply, metrics ``tokens_per_ms/<mode>/L<L>``
...), a CSV (``results/bench_<gpu>.csv`` by default) and a log-log plot of tokens/ms against L, one
line per model, mode, precision and device.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from m2bench import timing, tracking
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, WeightsUnavailable
from m2bench.registry import create_model, get_model_spec, suggest, valid_overrides
from m2bench.runtime import overrides_tag

log = logging.getLogger(__name__)
MODES = ("fwd", "fwdbwd")
PRECISIONS = ("bf16", "fp16", "fp32")
KINDS = ("encoder", "text_encoder")  # the kinds whose models have hidden_states()
#: ok | oom (still out of memory after halving) | skipped (cannot be built here) | failed (raised)
STATUSES = ("ok", "oom", "skipped", "failed")
COLUMNS = ["model", "mode", "seq_len", "batch_size", "tokens_per_ms", "latency_ms",
           "peak_mem_gb", "oom_retries", "status", "error", "gpu", "precision", "torch",
           "git_sha", "command"]  # fmt: skip
#: columns that tell two rows of one CSV apart: --append replaces only rows equal on all of them
KEY = ("model", "mode", "seq_len", "precision", "gpu")


@dataclass
class BenchRow:
    """One (model, mode, length) measurement."""

    model: str
    mode: str
    seq_len: int
    batch_size: int
    tokens_per_ms: float
    latency_ms: float
    peak_mem_gb: float
    oom_retries: int
    status: str = "ok"
    error: str = ""


def _applicable(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    valid = valid_overrides(get_model_spec(name))
    return {k: v for k, v in overrides.items() if k in valid}


def label(name: str, overrides: dict[str, Any]) -> str:
    """Model column: the name plus the overrides that apply (``m2_bert_80m[kernel=triton]``)."""
    mine = _applicable(name, overrides)
    return name + (
        "[" + ",".join(f"{k}={v}" for k, v in sorted(mine.items())) + "]" if mine else ""
    )


def check_sweep(
    models: Sequence[str], seq_lens: Sequence[int], modes: Sequence[str], *,
    tokens_per_batch: int, precision: str, warmup: int, repeats: int, overrides: dict[str, Any],
) -> None:  # fmt: skip
    """Refuse, before any compute, a sweep that could only give errors or silent defaults.

    Raises:
        ConfigError: naming the bad value (and close names for a mistyped override).
        UnknownNameError: an unknown model name, with close names.
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode {bad[0]!r}; modes: {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}")
    small = [n for n in seq_lens if n < 1]
    if small or not seq_lens:
        raise ConfigError(f"--seq-len takes lengths >= 1, not {small[0] if small else 'none'}")
    for flag, value, least in (("--tokens-per-batch", tokens_per_batch, 1),
                               ("--repeats", repeats, 1), ("--warmup", warmup, 0)):  # fmt: skip
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, not {value}")
    fields: set[str] = set()
    for name in models:
        spec = get_model_spec(name)  # unknown names fail here
        if spec.kind not in KINDS:
            raise ConfigError(f"model {name!r} is of kind {spec.kind!r}, without hidden states; "
                              f"bench times encoders (kinds {', '.join(KINDS)})")  # fmt: skip
        fields.update(valid_overrides(spec))
    if "max_len" in overrides:
        raise ConfigError("bench sets model.max_len to each --seq-len; drop model.max_len")
    for key in overrides:
        if key not in fields:
            raise ConfigError(f"no model of this sweep has a config field {key!r} "
                              f"(model.{key}=...){suggest(key, sorted(fields))}")  # fmt: skip


def _build(name: str, seq_len: int, device: torch.device, overrides: dict) -> torch.nn.Module:
    over = _applicable(name, overrides)
    if "max_len" in valid_overrides(get_model_spec(name)):
        over["max_len"] = seq_len
    model = create_model(name, **over)
    if not hasattr(model, "hidden_states"):
        raise ConfigError(f"model {name!r} has no hidden_states(); bench times encoders")
    model = model.to(device)
    if getattr(model, "max_length", seq_len) < seq_len:
        raise ConfigError(f"model {name!r} takes at most {model.max_length} tokens, not {seq_len}")
    return model


def _step(model: torch.nn.Module, batch: dict, mode: str, precision: str, device) -> None:
    if mode == "fwd":
        with torch.no_grad(), autocast(device, precision):
            model.hidden_states(batch)
        return
    with autocast(device, precision):
        loss = model.hidden_states(batch).float().mean()
    loss.backward()
    model.zero_grad(set_to_none=True)


def measure(
    name: str, seq_len: int, mode: str, *, tokens_per_batch: int, device: torch.device,
    precision: str, warmup: int, repeats: int, overrides: dict | None = None,
) -> BenchRow:  # fmt: skip
    """Time one configuration, halving the batch on out-of-memory (up to 4 times).

    The batch is ``max(1, tokens_per_batch // seq_len)`` rows of ``seq_len`` tokens.
    """
    if seq_len < 1 or tokens_per_batch < 1:
        raise ConfigError(f"seq_len and tokens_per_batch must be >= 1 ({seq_len}, "
                          f"{tokens_per_batch})")  # fmt: skip
    batch_size, retries = max(1, tokens_per_batch // seq_len), 0
    model = _build(name, seq_len, device, overrides or {})
    name = label(name, overrides or {})
    model.train(mode == "fwdbwd")
    while True:
        try:
            ids = torch.randint(1000, 29000, (batch_size, seq_len), device=device)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
            timing.reset_peak_memory(device)
            ms = timing.latency_ms(lambda _i, b=batch: _step(model, b, mode, precision, device),
                                   repeats, device, warmup=warmup)  # fmt: skip
            return BenchRow(name, mode, seq_len, batch_size, batch_size * seq_len / ms, ms,
                            timing.peak_memory_gb(device), retries)  # fmt: skip
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if retries == 4 or batch_size == 1:
                return _error_row(name, mode, seq_len, "oom", "out of memory", batch_size,
                                  retries)  # fmt: skip
            batch_size, retries = max(1, batch_size // 2), retries + 1


def _error_row(
    model: str, mode: str, seq_len: int, status: str, error: str, batch_size: int = 0,
    retries: int = 0,
) -> BenchRow:  # fmt: skip
    nan = float("nan")
    return BenchRow(model, mode, seq_len, batch_size, nan, nan, nan, retries, status, error)


def _measure_or_record(name: str, mode: str, seq_len: int, overrides: dict, **kw: Any) -> BenchRow:
    """``measure``, with any failure turned into a row so that the sweep's other rows survive."""
    try:
        return measure(name, seq_len, mode, overrides=overrides, **kw)
    except (ConfigError, WeightsUnavailable) as exc:
        return _error_row(label(name, overrides), mode, seq_len, "skipped", str(exc))
    except Exception as exc:  # a model or kernel error: recorded as failed, the sweep goes on
        log.warning("bench: %s %s L=%d failed", name, mode, seq_len, exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return _error_row(label(name, overrides), mode, seq_len, "failed", error)


def run_bench(
    models: list[str], seq_lens: list[int], modes: list[str], *, tokens_per_batch: int,
    device: torch.device, precision: str, warmup: int, repeats: int, out: Path, command: str,
    progress: bool = True, append: bool = False, overrides: dict | None = None,
) -> list[BenchRow]:  # fmt: skip
    """Measure every (model, mode, length), write the CSV and the plot, log to MLflow.

    ``append`` keeps the rows of an existing CSV at ``out`` that this call does not measure
    again: a row is replaced only by one of the same model, mode, length, precision and device.
    A row whose model raised has status ``failed`` (its MLflow run is FAILED); the caller
    decides the exit status.
    """
    from tqdm.auto import tqdm

    overrides = dict(overrides or {})
    check_sweep(models, seq_lens, modes, tokens_per_batch=tokens_per_batch, precision=precision,
                warmup=warmup, repeats=repeats, overrides=overrides)  # fmt: skip
    tracking.preflight("bench")
    hw, prov = tracking.hardware(device), tracking.provenance()
    rows: list[BenchRow] = []
    jobs = [(m, mode, L) for m in models for mode in modes for L in seq_lens]
    for name, mode, seq_len in tqdm(jobs, desc="bench", disable=not progress):
        row = _measure_or_record(name, mode, seq_len, overrides, tokens_per_batch=tokens_per_batch,
                                 device=device, precision=precision, warmup=warmup,
                                 repeats=repeats)  # fmt: skip
        log.info("%s", row)
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    extra = {"gpu": hw["hardware"], "precision": precision, "torch": prov["torch"],
             "git_sha": prov["git_sha"], "command": command}  # fmt: skip
    kept = _kept_rows(out, rows, extra) if append else []
    write_csv(rows, out, extra, kept)
    plot([{**asdict(r), **extra} for r in rows] + kept, out.with_suffix(".png"), hw["hardware"])
    params = {"tokens_per_batch": tokens_per_batch, "warmup": warmup, "repeats": repeats,
              "seq_lens": seq_lens, "modes": modes}  # fmt: skip
    for name in models:
        _log_run(name, rows, overrides, params, {"precision": precision, **hw, **prov})
    return rows


def _log_run(
    name: str, rows: list[BenchRow], overrides: dict, params: dict, tags: dict[str, Any]
) -> None:
    """One MLflow run of model ``name``: FAILED when one of its rows failed."""
    spec, mine_over = get_model_spec(name), _applicable(name, overrides)
    tag = label(name, overrides)
    mine = [r for r in rows if r.model == tag]
    over_tag = overrides_tag(mine_over)  # as `m2bench run` tags it
    run = tracking.start_run("bench", tag, {**tags, "stage": "bench", "model": tag,
                                            "family": spec.family, "kind": spec.kind,
                                            "model_overrides": over_tag})  # fmt: skip
    run.log_params({**params, **{f"model.{k}": v for k, v in mine_over.items()}})
    values = ("tokens_per_ms", "latency_ms", "peak_mem_gb", "batch_size")
    run.log_metrics({f"{key}/{r.mode}/L{r.seq_len}": getattr(r, key) for r in mine
                     for key in values})  # fmt: skip
    failed = [r for r in mine if r.status == "failed"]
    run.end("FAILED" if failed else "FINISHED", error=failed[0].error if failed else None)


def _kept_rows(out: Path, rows: list[BenchRow], extra: dict[str, Any]) -> list[dict]:
    """The rows of the CSV at ``out`` that no new row replaces (equal on every ``KEY`` column)."""
    if not out.is_file():
        return []
    new = {tuple(str({**asdict(r), **extra}[k]) for k in KEY) for r in rows}
    with open(out, newline="") as f:
        old = list(csv.DictReader(f))
    for d in old:  # files written before the status column
        if not d.get("status"):
            err = d.get("error", "")
            d["status"] = "ok" if not err else "oom" if err == "out of memory" else "skipped"
    return [d for d in old if tuple(d.get(k, "") for k in KEY) not in new]


def default_out(device: torch.device) -> Path:
    """``results/bench_<gpu>.csv`` with the device name as a file-name slug."""
    name = tracking.hardware(device)["hardware"]
    return Path("results") / f"bench_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.csv"


def write_csv(
    rows: list[BenchRow], path: Path, extra: dict[str, Any], kept: Sequence[dict] = ()
) -> None:
    """Write ``kept`` rows (already complete) and the new rows with provenance columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(kept)
        for r in rows:
            d = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()}
            w.writerow({**d, **extra})


def plot_lines(records: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Legend label -> (L, tokens/ms) points: one line per model, mode, precision and device.

    The label names the precision and the device only when the records hold several.
    """
    several = {k: len({str(d[k]) for d in records}) > 1 for k in ("precision", "gpu")}
    lines: dict[str, list[tuple[int, float]]] = {}
    for d in records:
        tpm = float(d["tokens_per_ms"])
        if tpm != tpm:  # NaN: no measurement
            continue
        extra = [str(d[k]) for k in ("precision", "gpu") if several[k]]
        name = f"{d['model']} ({', '.join([d['mode'], *extra])})"
        lines.setdefault(name, []).append((int(d["seq_len"]), tpm))
    return {k: sorted(v) for k, v in sorted(lines.items())}


def plot(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """tokens/ms against L (log-log) of CSV rows (dicts), one line per ``plot_lines`` label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in plot_lines(records).items():
        ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L (tokens)")
    ax.set_ylabel("tokens / ms")
    ax.set_title(f"throughput vs length: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
