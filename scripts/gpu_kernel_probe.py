"""Ceilings and kernel timings on the GPU (issue #4 working notes; rerun on any CUDA device).

Usage on the device: PYTHONPATH=$PWD python3 scripts/gpu_kernel_probe.py
Prints: copy bandwidth (read + write), bf16 GEMM rate, the 768->3072 block-diagonal product
(4 blocks, 65,536 tokens) through einsum, the Triton kernel and a dense GEMM, the FFT long
convolution at (16, 768, 4096), with CUDA-event medians (triton.testing.do_bench).
"""

from __future__ import annotations

import torch
import triton

from m2bench.kernels import reference
from m2bench.kernels.blockdiag_triton import blockdiag_matmul_fwd
from m2bench.kernels.mlp_triton import add_layer_norm_fwd, blockdiag_glu_fwd
from m2bench.layers.long_conv import fft_conv


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


dev = "cuda"
rows = []
src = torch.randn(512 * 2**20 // 4, device=dev)  # 512 MiB float32
dst = torch.empty_like(src)
ms = bench(lambda: dst.copy_(src))
copy_bw = 2 * src.numel() * 4 / ms / 1e6
rows.append(("d2d copy 512 MiB", ms, f"{copy_bw:.0f} GB/s (read+write)"))
a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
ms = bench(lambda: a @ b)
rows.append(("bf16 GEMM 8192^3", ms, f"{2 * 8192**3 / ms / 1e9:.0f} TFLOP/s"))

m, nb, dim, out = 65536, 4, 768, 3072
x = torch.randn(m, dim, device=dev, dtype=torch.bfloat16)
w = torch.randn(nb, out // nb, dim // nb, device=dev, dtype=torch.bfloat16) * 0.05
wd = torch.randn(out, dim, device=dev, dtype=torch.bfloat16)
nbytes = (m * dim + m * out + w.numel()) * 2
for name, fn in [
    ("blockdiag einsum", lambda: reference.blockdiag_matmul(x, w)),
    ("blockdiag triton", lambda: blockdiag_matmul_fwd(x, w)),
    ("dense GEMM 768->3072", lambda: x @ wd.T),
]:
    ms = bench(fn)
    bw = nbytes / ms / 1e6
    rows.append((name, ms, f"{bw:.0f} GB/s = {100 * bw / copy_bw:.0f}% of copy"))
w_in = torch.randn(nb, 2 * out // nb, dim // nb, device=dev, dtype=torch.bfloat16) * 0.05
glu_bytes = (m * dim + m * out + w_in.numel()) * 2
for name, fn in [
    ("GLU fused 768->2x3072 -> 3072", lambda: blockdiag_glu_fwd(x, w_in)),
    (
        "GLU unfused (einsum, gelu, mul)",
        lambda: (lambda g: torch.nn.functional.gelu(g[:, :out]) * g[:, out:])(
            reference.blockdiag_matmul(x, w_in)
        ),
    ),
]:
    ms = bench(fn)
    rows.append((name, ms, f"{glu_bytes / ms / 1e6:.0f} GB/s of the fused bytes floor"))
a3 = torch.randn(m, out, device=dev, dtype=torch.bfloat16)
w_out = torch.randn(nb, dim // nb, out // nb, device=dev, dtype=torch.bfloat16) * 0.05
ms = bench(lambda: blockdiag_matmul_fwd(a3, w_out))
rows.append(("blockdiag triton 3072->768", ms, f"{(m * dim + m * out) * 2 / ms / 1e6:.0f} GB/s"))
y7, r7 = (
    torch.randn(m, dim, device=dev, dtype=torch.bfloat16),
    torch.randn(m, dim, device=dev, dtype=torch.bfloat16),
)
lw, lb = torch.ones(dim, device=dev), torch.zeros(dim, device=dev)
ms = bench(lambda: add_layer_norm_fwd(y7, r7, lw, lb, 1e-12))
rows.append(("add + LayerNorm fused", ms, f"{3 * m * dim * 2 / ms / 1e6:.0f} GB/s"))
ms = bench(
    lambda: torch.nn.functional.layer_norm(y7 + r7, (dim,), lw.bfloat16(), lb.bfloat16(), 1e-12)
)
rows.append(("add + LayerNorm torch", ms, ""))
err = blockdiag_matmul_fwd(x, w).float() - reference.blockdiag_matmul(x.float(), w.float())
rows.append(
    (
        "blockdiag triton rel err",
        0.0,
        f"{err.norm() / (x.float() @ torch.block_diag(*w.float()).T).norm():.2e}",
    )
)


def _at_length(L: int) -> None:
    bsz = 65536 // L
    u = torch.randn(bsz, 768, L, device=dev)
    k1, k2, d = (
        torch.randn(768, L, device=dev),
        torch.randn(768, L, device=dev),
        torch.randn(768, device=dev),
    )
    ms = bench(lambda: fft_conv(u, k1, k2, d))
    rows.append(
        (f"fft_conv fp32 (B={bsz},C=768,L={L})", ms, f"{u.numel() * 8 / ms / 1e6:.0f} GB/s in+out")
    )
    uf = torch.fft.rfft(u, n=2 * L)
    ms = bench(lambda: torch.fft.rfft(u, n=2 * L))
    rows.append(("  rfft n=2L", ms, ""))
    ms = bench(lambda: torch.fft.irfft(uf, n=2 * L))
    rows.append(("  irfft n=2L", ms, ""))


for L in (4096, 32768):
    _at_length(L)

print(f"{'what':44s} {'ms':>9s}  note")
for name, ms, note in rows:
    print(f"{name:44s} {ms:9.3f}  {note}")
