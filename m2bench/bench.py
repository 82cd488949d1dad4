"""``m2bench bench``: throughput, latency and peak memory of models over sequence lengths.

Protocol (the reference measurements of the M2 throughput claim; ``shared/specs/m2_recipes.md``
section 6): a fixed number of tokens per batch (default 65,536, so batch = tokens / L), bf16
autocast, forward only or forward + backward (loss = mean of the last hidden states; no optimizer
step), warm-up calls, then the median of timed repeats (``m2bench.timing``: device-synchronised
wall time). tokens/ms counts every token of the batch (no padding: inputs are full-length). Out
of memory halves the batch (up to 4 times) and records the batch actually used; a configuration
that still fails is recorded with its error. Inputs are random token ids: throughput does not
depend on the text. Each model is built for each length (``max_len`` = L) with random weights.

Results: one MLflow run per model in the experiment ``m2bench/bench`` (metrics
``tokens_per_ms/<mode>/L<L>`` ...), a CSV (``results/bench_<gpu>.csv`` by default) and a log-log
plot of tokens/ms against L, one line per model and mode.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from m2bench import timing, tracking
from m2bench.encoding import autocast
from m2bench.errors import ConfigError
from m2bench.registry import create_model, get_model_spec, valid_overrides

log = logging.getLogger(__name__)
MODES = ("fwd", "fwdbwd")
COLUMNS = ["model", "mode", "seq_len", "batch_size", "tokens_per_ms", "latency_ms",
           "peak_mem_gb", "oom_retries", "error", "gpu", "precision", "torch", "git_sha",
           "command"]  # fmt: skip


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
    error: str = ""


def label(name: str, overrides: dict[str, Any]) -> str:
    """Model column: the name plus the overrides that apply (``m2_bert_80m[kernel=triton]``)."""
    mine = {k: v for k, v in overrides.items() if k in valid_overrides(get_model_spec(name))}
    return name + (
        "[" + ",".join(f"{k}={v}" for k, v in sorted(mine.items())) + "]" if mine else ""
    )


def _build(name: str, seq_len: int, device: torch.device, overrides: dict) -> torch.nn.Module:
    spec = get_model_spec(name)
    valid = valid_overrides(spec)
    over = {k: v for k, v in overrides.items() if k in valid}
    if "max_len" in valid:
        over["max_len"] = seq_len
    model = create_model(name, **over).to(device)
    if not hasattr(model, "hidden_states"):
        raise ConfigError(f"model {name!r} has no hidden_states(); bench times encoders")
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
    """Time one configuration, halving the batch on out-of-memory (up to 4 times)."""
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
                return BenchRow(name, mode, seq_len, batch_size, float("nan"), float("nan"),
                                float("nan"), retries, "out of memory")  # fmt: skip
            batch_size, retries = max(1, batch_size // 2), retries + 1


def run_bench(
    models: list[str], seq_lens: list[int], modes: list[str], *, tokens_per_batch: int,
    device: torch.device, precision: str, warmup: int, repeats: int, out: Path, command: str,
    progress: bool = True, append: bool = False, overrides: dict | None = None,
) -> list[BenchRow]:  # fmt: skip
    """Measure every (model, mode, length), log to MLflow, write the CSV and the plot.

    ``append`` keeps the rows of an existing CSV at ``out`` that this call does not measure again.
    """
    from tqdm.auto import tqdm

    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode {bad[0]!r}; modes: {', '.join(MODES)}")
    for name in models:
        get_model_spec(name)  # unknown names fail before any compute
    tracking.preflight("bench")
    hw, prov = tracking.hardware(device), tracking.provenance()
    rows: list[BenchRow] = []
    jobs = [(m, mode, L) for m in models for mode in modes for L in seq_lens]
    for name, mode, seq_len in tqdm(jobs, desc="bench", disable=not progress):
        try:
            row = measure(name, seq_len, mode, tokens_per_batch=tokens_per_batch, device=device,
                          precision=precision, warmup=warmup, repeats=repeats,
                          overrides=overrides)  # fmt: skip
        except ConfigError as exc:
            nan = float("nan")
            row = BenchRow(label(name, overrides or {}), mode, seq_len, 0, nan, nan, nan, 0,
                           str(exc))  # fmt: skip
        log.info("%s", row)
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for name in models:
        name = label(name, overrides or {})
        mine = [r for r in rows if r.model == name]
        run = tracking.start_run("bench", name, {"model": name, "precision": precision, **hw,
                                                 **prov, "stage": "bench"})  # fmt: skip
        run.log_params({"tokens_per_batch": tokens_per_batch, "warmup": warmup,
                        "repeats": repeats, "seq_lens": seq_lens, "modes": modes})  # fmt: skip
        values = (("tokens_per_ms", "tokens_per_ms"), ("latency_ms", "latency_ms"),
                  ("peak_mem_gb", "peak_mem_gb"), ("batch_size", "batch_size"))  # fmt: skip
        run.log_metrics({f"{key}/{r.mode}/L{r.seq_len}": getattr(r, attr)
                         for r in mine for key, attr in values})  # fmt: skip
        run.end("FINISHED")
    extra = {"gpu": hw["hardware"], "precision": precision, "torch": prov["torch"],
             "git_sha": prov["git_sha"], "command": command}  # fmt: skip
    kept: list[dict] = []
    if append and out.is_file():
        done = {(r.model, r.mode, str(r.seq_len)) for r in rows}
        with open(out, newline="") as f:
            kept = [
                d for d in csv.DictReader(f) if (d["model"], d["mode"], d["seq_len"]) not in done
            ]
    write_csv(rows, out, extra, kept)
    every = rows + [BenchRow(d["model"], d["mode"], int(d["seq_len"]), int(d["batch_size"]),
                             float(d["tokens_per_ms"]), float(d["latency_ms"]),
                             float(d["peak_mem_gb"]), int(d["oom_retries"]), d["error"])
                    for d in kept]  # fmt: skip
    plot(every, out.with_suffix(".png"), hw["hardware"])
    return rows


def default_out(device: torch.device) -> Path:
    """``results/bench_<gpu>.csv`` with the device name as a file-name slug."""
    name = tracking.hardware(device)["hardware"]
    return Path("results") / f"bench_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.csv"


def write_csv(
    rows: list[BenchRow], path: Path, extra: dict[str, Any], kept: list[dict] = ()
) -> None:
    """Write ``kept`` rows (already complete) and the new rows with provenance columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(kept)
        for r in rows:
            d = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()}
            w.writerow({**d, **extra})


def plot(rows: list[BenchRow], path: Path, title: str) -> None:
    """tokens/ms against L (log-log), one line per model and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in sorted({(r.model, r.mode) for r in rows}):
        pts = sorted((r.seq_len, r.tokens_per_ms) for r in rows if (r.model, r.mode) == key
                     and r.tokens_per_ms == r.tokens_per_ms)  # fmt: skip
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{key[0]} ({key[1]})")
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
