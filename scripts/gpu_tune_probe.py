"""Tuning candidates for the M2-BERT-80M hot spots, timed in one GPU call (issue #4 next steps).

Usage on the device: PYTHONPATH=$PWD python3 scripts/gpu_tune_probe.py
At 65,536 tokens x 768 channels, bf16, CUDA-event medians (triton.testing.do_bench), each
variant checked against the default's output before it is timed:

- the Triton FFT convolution (gated, as the mixer calls it): transform shapes (N1, N2), warps,
  float32 or bf16 DFT tables; and one-program transforms of N = 16,384 (L = 8192);
- the fused GLU and the block-diagonal kernel with single forced tile configs, including ones
  outside the autotune lists (whole in-block K);
- the short conv + gate kernel's tile sizes;
- the three-pass long-sequence kernel (float32 or bf16 scratch) against cuFFT at 8K and 32K, and
  the whole M2-BERT-80M
  forward with ``LONG_FFT`` off and on (with MAX_N = 16,384, L = 8192 runs one program anyway).

Prints one table per kernel, fastest first. Nothing here changes a default: the winners are to be
written into the kernels by hand, then measured again with scripts/gpu_kernels.sh.

``M2BENCH_PROBE_SMOKE=1 TRITON_INTERPRET=1`` runs every code path on the CPU at toy sizes (wall
times meaningless), so a mistake here costs no device time.
"""

from __future__ import annotations

import os
import time

import torch
import triton

from m2bench.kernels import blockdiag_triton as bd
from m2bench.kernels import fftconv_triton as fc
from m2bench.kernels import gating_triton as gt
from m2bench.kernels import mlp_triton as mlp
from m2bench.kernels import reference

SMOKE = os.environ.get("M2BENCH_PROBE_SMOKE") == "1"
DEV = "cpu" if SMOKE else "cuda"
TOKENS, WIDTH, ROWS = (4096, 2, 128) if SMOKE else (65536, 768, 65536)


def bench(fn) -> float:
    if SMOKE:
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    return triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def report(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}\n{'variant':48s} {'ms':>8s} {'rel err':>9s}")
    for name, ms, err in sorted(rows, key=lambda r: r[1]):
        print(f"{name:48s} {ms:8.3f} {err:9.1e}", flush=True)


def try_variant(rows, name, fn, want) -> None:
    try:
        err = rel(fn(), want)
        rows.append((name, bench(fn), err))
    except Exception as exc:  # noqa: BLE001 - a probe: report and go on
        print(f"{name:48s} failed: {str(exc).splitlines()[0][:90]}", flush=True)


def fft_variants(seqlen: int, shapes: list[tuple[int, int]]) -> None:
    batch, channels = max(1, TOKENS // seqlen), WIDTH
    x = torch.randn(batch, channels, seqlen, device=DEV, dtype=torch.bfloat16)
    gate, add = torch.randn_like(x), torch.randn_like(x)
    k_fwd = torch.randn(channels, seqlen, device=DEV) * 0.05
    k_rev = torch.randn(channels, seqlen, device=DEV) * 0.05
    skip = torch.randn(channels, device=DEV)
    want = reference.fft_conv(x.float(), k_fwd, k_rev, skip, gate.float(), add.float())
    rows: list[tuple[str, float, float]] = []
    for n1, n2 in shapes:
        spec = fc.kernel_spectrum(k_fwd, k_rev, n1, n2)
        for warps in (4, 8, 16):
            for tdt in (torch.float32, torch.bfloat16):

                def run(n1=n1, n2=n2, spec=spec, warps=warps, tdt=tdt):
                    return fc.fftconv_fwd(x, spec, n1, n2, skip, gate, add, precision="bf16",
                                          num_warps=warps, table_dtype=tdt)  # fmt: skip

                name = f"L={seqlen} N1={n1} N2={n2} w{warps} tables {str(tdt)[6:]}"
                try_variant(rows, name, run, want)
    report(f"FFT convolution, L = {seqlen} (B = {batch}), gated, bf16 operands", rows)


def long_variants(seqlen: int) -> None:
    """The three-pass kernel (LONG_FFT) against cuFFT at L > 4096: transforms and chunks."""
    from m2bench.kernels import fftconv_long_triton as lt
    from m2bench.layers.long_conv import fft_conv as cufft_conv

    batch, channels = max(1, TOKENS // seqlen), WIDTH
    x = torch.randn(batch, channels, seqlen, device=DEV, dtype=torch.bfloat16)
    gate, add = torch.randn_like(x), torch.randn_like(x)
    k_fwd = torch.randn(channels, seqlen, device=DEV) * 0.05
    k_rev = torch.randn(channels, seqlen, device=DEV) * 0.05
    skip = torch.randn(channels, device=DEV)
    want = reference.fft_conv(x.float(), k_fwd, k_rev, skip, gate.float(), add.float())
    rows: list[tuple[str, float, float]] = []
    try_variant(rows, "cuFFT path (fp32) + torch gating",
                lambda: cufft_conv(x.float(), k_fwd, k_rev, skip) * gate + add, want)  # fmt: skip
    n = max(16384, 2 * seqlen)
    for p in (32, 64, 128):
        m = n // p
        m1 = 1 << -(-(m.bit_length() - 1) // 2)
        if m // m1 < 16:  # 16-wide matmul sides
            continue
        spec = lt.long_spectrum(k_fwd, k_rev, p, m1, m // m1)
        for chunk in (32, 64, 128):

            def run(p=p, m1=m1, m2=m // m1, spec=spec, chunk=chunk):
                return lt.long_fftconv_fwd(x, spec, p, m1, m2, skip, gate, add,
                                           precision="bf16", chunk=chunk)  # fmt: skip

            try_variant(rows, f"3-pass P={p} M1={m1} M2={m // m1} chunk {chunk}", run, want)

            def run_bf16(p=p, m1=m1, m2=m // m1, spec=spec, chunk=chunk):
                return lt.long_fftconv_fwd(x, spec, p, m1, m2, skip, gate, add, precision="bf16",
                                           chunk=chunk, scratch_dtype=torch.bfloat16)  # fmt: skip

            name = f"3-pass P={p} M1={m1} M2={m // m1} chunk {chunk} bf16 scratch"
            try_variant(rows, name, run_bf16, want)
    report(f"long FFT convolution, L = {seqlen} (B = {batch}), gated", rows)


def model_long(seqlen: int) -> None:
    """M2-BERT-80M forward, kernel=triton, with and without LONG_FFT (tokens/ms)."""
    from m2bench.registry import create_model

    model = create_model("m2_bert_80m", max_len=seqlen, kernel="triton").to(DEV).eval()
    ids = torch.randint(1000, 29000, (65536 // seqlen, seqlen), device=DEV)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def step():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model.hidden_states(batch)

    for flag in (False, True):
        fc.LONG_FFT = flag
        try:
            ms = bench(step)
            print(f"m2_bert_80m triton L={seqlen} LONG_FFT={flag}: {65536 / ms:.1f} tokens/ms")
        except Exception as exc:  # noqa: BLE001
            print(f"m2_bert_80m triton L={seqlen} LONG_FFT={flag}: failed {str(exc)[:90]}")
    fc.LONG_FFT = True


def mlp_variants() -> None:
    m, d = ROWS, 768
    h = torch.randn(m, d, device=DEV, dtype=torch.bfloat16)
    w_in = torch.randn(4, 1536, 192, device=DEV, dtype=torch.bfloat16) * 0.07
    w = torch.randn(4, 768, 192, device=DEV, dtype=torch.bfloat16) * 0.07
    cfgs = [*bd.CUDA_CONFIGS, bd.SMALL_CONFIG, bd._cfg(128, 128, 256, 8, 2),
            bd._cfg(128, 256, 256, 8, 2), bd._cfg(64, 256, 256, 4, 2), bd._cfg(256, 128, 256, 8, 2),
            bd._cfg(128, 128, 64, 4, 2), bd._cfg(128, 256, 64, 8, 4)]  # fmt: skip
    want_bd = reference.blockdiag_matmul(h.float(), w.float())
    want_glu = reference.blockdiag_glu(h.float(), w_in.float())
    saved = (bd._blockdiag_cuda, mlp._glu_cuda, bd._blockdiag_interp, mlp._glu_interp)
    bd_rows: list[tuple[str, float, float]] = []
    glu_rows: list[tuple[str, float, float]] = []
    for cfg in cfgs:
        k = cfg.kwargs
        name = f"M{k['BLOCK_M']} N{k['BLOCK_N']} K{k['BLOCK_K']} w{cfg.num_warps} s{cfg.num_stages}"
        bd._blockdiag_cuda = bd._blockdiag_interp = triton.autotune([cfg], key=bd._KEY)(
            bd._blockdiag_heur
        )
        mlp._glu_cuda = mlp._glu_interp = triton.autotune([cfg], key=mlp._KEY)(mlp._glu_heur)
        try_variant(bd_rows, name, lambda: bd.blockdiag_matmul_fwd(h, w), want_bd)
        try_variant(glu_rows, name, lambda: mlp.blockdiag_glu_fwd(h, w_in), want_glu)
    bd._blockdiag_cuda, mlp._glu_cuda, bd._blockdiag_interp, mlp._glu_interp = saved
    copy_ms = bench(lambda: h.repeat(1, 5))  # reads 100 MB, writes 503 MB
    print(f"\nreference: copy of 603 MB (read + write) {copy_ms:.3f} ms")
    report("block-diagonal 768 -> 3072 (4 blocks), forced configs", bd_rows)
    report("fused GLU 768 -> 2 x 3072 -> 3072, forced configs", glu_rows)


def short_conv_variants() -> None:
    z = torch.randn(max(1, TOKENS // 4096), 4096, 3 * WIDTH, device=DEV, dtype=torch.bfloat16)
    wt = torch.randn(3 * WIDTH, 3, device=DEV) * 0.3
    b = torch.randn(3 * WIDTH, device=DEV)
    want = gt.short_conv_gate_fwd(z, wt, b)[0]
    rows: list[tuple[str, float, float]] = []
    for bl, bdim in ((64, 32), (32, 64), (64, 64), (128, 32), (32, 128), (16, 128)):
        gt._CONV_BLOCK_L, gt._CONV_BLOCK_D = bl, bdim
        try_variant(rows, f"BLOCK_L {bl} BLOCK_D {bdim}",
                    lambda: gt.short_conv_gate_fwd(z, wt, b)[0], want)  # fmt: skip
    gt._CONV_BLOCK_L, gt._CONV_BLOCK_D = 64, 64
    report("short conv + gate (16, 4096, 2304) bf16", rows)


torch.manual_seed(0)
# in priority order (the GPU call's time limit may cut the tail; each table prints when done)
mlp_variants()
fft_variants(4096, [(128, 64), (64, 128)])
short_conv_variants()
fft_variants(8192, [(128, 128), (256, 64)])
long_variants(32768)
long_variants(8192)
if not SMOKE:  # the 80M model at these lengths is too slow for the interpreter
    model_long(8192)
    model_long(32768)
fft_variants(2048, [(64, 64), (128, 32), (32, 128)])
fft_variants(512, [(32, 32), (64, 16)])
