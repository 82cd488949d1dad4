"""The only code in m2bench that times anything.

Definitions (stated again in results/README.md):
- wall time is measured with ``time.perf_counter`` after synchronising the device on entry and
  exit, so queued GPU work is counted where it belongs;
- tokens/s counts the tokens fed to the model, padding included (B x L per step);
- latency is the median over repeated calls after warm-up calls that are not counted;
- peak memory is the CUDA allocator's peak on a GPU, and the process's peak resident set size on
  the CPU (which includes everything the process holds, not just the model); on Linux each
  :func:`reset_peak_memory` starts a new CPU window, elsewhere the CPU peak is the process's
  lifetime peak.
"""

from __future__ import annotations

import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Context manager measuring wall seconds of a block, device-synchronised.

    Example: ``with Stopwatch(device) as sw: work()`` then ``sw.seconds``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def latency_ms(
    fn: Callable[[int], object], n: int, device: torch.device, *, warmup: int = 2
) -> float:
    """Median milliseconds of ``fn(i)`` over ``i = 0..n-1`` after ``warmup`` uncounted calls.

    Warm-up call ``k`` gets ``i = k mod n``, so ``fn`` may index ``n`` items; NaN when ``n < 1``.

    Raises:
        ValueError: ``warmup`` is negative.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, not {warmup}")
    if n < 1:
        return float("nan")
    for k in range(warmup):
        fn(k % n)
    times = []
    for i in range(n):
        with Stopwatch(device) as sw:
            fn(i)
        times.append(sw.seconds * 1e3)
    return statistics.median(times)


# Linux: writing "5" to clear_refs resets the process's RSS high-water mark (VmHWM) to its
# current RSS (proc(5)); other systems offer no way to reset the peak (ru_maxrss)
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window on ``device``.

    Returns:
        False where the CPU peak cannot be reset (not Linux, or /proc not writable): the CPU
        peak is then the process's lifetime peak, which includes earlier runs of the process.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory in GB (1e9 bytes) since :func:`reset_peak_memory`.

    CUDA: the allocator's peak. CPU: the process's peak RSS, read from VmHWM on Linux (the
    window :func:`reset_peak_memory` starts), else ``ru_maxrss`` (the lifetime peak).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        hwm = re.search(r"^VmHWM:\s*(\d+)\s*kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        hwm = None
    if hwm:
        return int(hwm.group(1)) * 1024 / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024) / 1e9


@dataclass(frozen=True)
class Throughput:
    """Items and tokens per second of one timed pass."""

    items_per_s: float
    tokens_per_s: float

    @classmethod
    def of(cls, items: int, tokens: int, seconds: float) -> Throughput:
        """Rates of ``items`` and ``tokens`` processed in ``seconds``."""
        s = max(seconds, 1e-9)
        return cls(items / s, tokens / s)


#: dense bf16/fp16 tensor-core peak FLOP/s by GPU name fragment (vendor datasheets, no sparsity)
PEAK_FLOPS_BF16 = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
                   ("A10G", 70e12), ("L4", 121e12), ("RTX 4090", 165e12))  # fmt: skip


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The GPU's datasheet peak FLOP/s for ``precision`` (bf16/fp16), or None when unknown.

    Model FLOPs utilisation (MFU) = achieved model FLOP/s / this peak. fp32 and CPUs have no
    entry: MFU is then not reported.
    """
    if device.type != "cuda" or precision not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS_BF16 if key in name), None)
