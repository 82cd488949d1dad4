"""Probe for the fast-M2 issue: how far does torch.compile's fusion take M2-BERT-80M's forward?

Usage on the device: PYTHONPATH=$PWD python3 scripts/gpu_compile_probe.py
Prints tokens/ms (median of 10 CUDA-event timings after warm-up) for m2_bert_80m eager, m2_bert_80m
under ``torch.compile`` (default mode) and bert_base_sdpa eager, bf16 autocast, forward only,
65,536 tokens per batch, at L = 4096 and 32768. A lead for the kernel work, not a benchmark result.
"""

from __future__ import annotations

import statistics
import time

import torch

from m2bench.bench import _build  # the bench's own builder: random weights, max_len = L


def bench(fn, batch, repeats: int = 10) -> float:
    """Median milliseconds of ``fn(batch)`` (CUDA events), after 3 warm-up calls."""
    for _ in range(3):
        fn(batch)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(batch)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    print(torch.cuda.get_device_name(), torch.__version__)
    for seq_len in (4096, 32768):
        ids = torch.randint(1000, 29000, (65536 // seq_len, seq_len), device="cuda")
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        m2 = _build("m2_bert_80m", seq_len, torch.device("cuda"), {}).eval()
        rows = []

        def eager(b, model=m2):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return model.hidden_states(b)

        rows.append(("m2_bert_80m eager", bench(eager, batch)))
        compiled = torch.compile(m2.hidden_states)

        def comp(b, fn=compiled):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return fn(b)

        t0 = time.time()
        comp(batch)
        torch.cuda.synchronize()
        compile_s = time.time() - t0
        ref, out = eager(batch).float(), comp(batch).float()
        rel = float((out - ref).norm() / ref.norm())
        rows.append((f"m2_bert_80m compiled ({compile_s:.0f} s to compile, rel. diff {rel:.1e})",
                     bench(comp, batch)))  # fmt: skip
        del m2, compiled
        if seq_len <= 8192:
            bert = _build("bert_base_sdpa", seq_len, torch.device("cuda"), {}).eval()

            def sdpa(b, model=bert):
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return model.hidden_states(b)

            rows.append(("bert_base_sdpa eager", bench(sdpa, batch)))
            del bert
        for name, ms in rows:
            print(f"L={seq_len:6d}  {name:60s} {ms:9.2f} ms  {65536 / ms:8.1f} tokens/ms")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
