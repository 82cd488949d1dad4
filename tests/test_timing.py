"""`m2bench.timing`: warm-up counts and per-window CPU peak memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2bench import timing

CPU = torch.device("cpu")


def test_warmup_calls_are_as_many_as_asked_and_stay_in_range():
    calls: list[int] = []
    ms = timing.latency_ms(calls.append, 2, CPU, warmup=5)
    assert calls == [0, 1, 0, 1, 0, 0, 1] and ms >= 0
    calls.clear()
    timing.latency_ms(calls.append, 3, CPU, warmup=0)
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="warmup"):
        timing.latency_ms(calls.append, 3, CPU, warmup=-1)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_cpu_peak_memory_starts_over_at_each_reset():
    assert timing.reset_peak_memory(CPU)
    base = timing.peak_memory_gb(CPU)
    blob = b"\x01" * 400_000_000  # written, so resident
    high = timing.peak_memory_gb(CPU)
    del blob
    assert high > base + 0.35
    assert timing.reset_peak_memory(CPU)
    assert timing.peak_memory_gb(CPU) < high - 0.35  # not the peak of the earlier window
