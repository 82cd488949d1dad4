"""The Triton FFT convolution on the GPU: parity and timing (issue #4 working notes).

Usage on the device: PYTHONPATH=$PWD python3 scripts/gpu_fftconv_probe.py
Error of each matmul precision against a float64 reference, then CUDA-event medians of the
kernel (contiguous and (B, L, C)-strided input/output, gated or not, 4/8/16 warps) against the
cuFFT path, at 65,536 tokens x 768 channels.
"""

from __future__ import annotations

import torch
import triton

from m2bench.kernels import fftconv_triton as fc
from m2bench.kernels import reference
from m2bench.layers.long_conv import fft_conv as cufft_conv


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


torch.manual_seed(0)
print("parity (B=5, C=6) against float64:")
for L in (100, 512, 1000, 2048, 4096):
    x = torch.randn(5, 6, L, device="cuda")
    kf, kr = torch.randn(6, L, device="cuda") * 0.1, torch.randn(6, L, device="cuda") * 0.1
    s, g, a = torch.randn(6, device="cuda"), torch.randn_like(x), torch.randn_like(x)
    ref = reference.fft_conv(
        x.double(), kf.double(), kr.double(), s.double(), g.double(), a.double()
    )
    errs = {p: rel(fc.fft_conv(x, kf, kr, s, g, a, precision=p), ref) for p in fc.PRECISIONS}
    xb = x.bfloat16()
    errs["bf16 io"] = rel(fc.fft_conv(xb, kf, kr, s, g.bfloat16(), a.bfloat16()), ref)
    print(f"  L={L:5d} " + "  ".join(f"{k} {v:.1e}" for k, v in errs.items()))

print(f"{'L':>6} {'variant':40s} {'ms':>8s}")


def _at_length(L: int) -> None:
    B, C = 65536 // L, 768
    x = torch.randn(B, C, L, device="cuda", dtype=torch.bfloat16)
    xt = torch.randn(B, L, C, device="cuda", dtype=torch.bfloat16)
    kf, kr = torch.randn(C, L, device="cuda") * 0.1, torch.randn(C, L, device="cuda") * 0.1
    s = torch.randn(C, device="cuda")
    g, a = torch.randn_like(x), torch.randn_like(x)
    n1, n2 = fc.transform_size(L)
    spec = fc.kernel_spectrum(kf, kr, n1, n2)
    rows = [("cuFFT fft_conv (fp32 in)", lambda: cufft_conv(x.float(), kf, kr, s))]
    rows.append(("spectrum only", lambda: fc.kernel_spectrum(kf, kr, n1, n2)))
    for prec in ("tf32", "bf16", "tf32x3"):
        for w in (4, 8, 16):
            rows.append(
                (
                    f"kernel {prec} w{w} contiguous",
                    lambda p=prec, w=w: fc.fftconv_fwd(
                        x, spec, n1, n2, s, precision=p, num_warps=w
                    ),
                )
            )
    yt = torch.empty_like(xt)
    rows.append(
        (
            "kernel tf32 w8 strided in+out",
            lambda: fc.fftconv_fwd(xt.transpose(1, 2), spec, n1, n2, s, out=yt.transpose(1, 2)),
        )
    )
    rows.append(("kernel tf32 w8 gated", lambda: fc.fftconv_fwd(x, spec, n1, n2, s, g, a)))
    rows.append(
        (
            "kernel tf32 w8 gated, strided out",
            lambda: fc.fftconv_fwd(x, spec, n1, n2, s, g, a, out=yt.transpose(1, 2)),
        )
    )
    rows.append(("copy of x (bytes floor x2)", lambda: x.clone()))
    for name, fn in rows:
        try:
            print(f"{L:6d} {name:40s} {bench(fn):8.3f}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a probe: report and go on
            print(f"{L:6d} {name:40s} failed: {str(exc).splitlines()[0][:80]}")


for L in (512, 1024, 2048, 4096):
    _at_length(L)
