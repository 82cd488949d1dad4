"""Plain-PyTorch twins of the Triton kernels: same signatures, the definition of what they compute.

- :func:`blockdiag_matmul`: x (M, nblocks * in_block), w (nblocks, out_block, in_block) ->
  y (M, nblocks * out_block) with ``y[:, b*out:(b+1)*out] = x[:, b*in:(b+1)*in] @ w[b].T``.
- :func:`monarch_matmul`: x (M, b * p), w1 (b, r, p), w2 (b, s, r) -> y (M, s * b), the order-2
  Monarch product ``P2 · BD2 · P1 · BD1 · x`` exactly as ``MonarchLinear.forward`` lays it out
  before truncation:

  1. ``BD1``: ``h[m, i, j] = sum_k x[m, i*p + k] * w1[i, j, k]``, h (M, b, r);
  2. ``P1``: h transposed to (M, r, b) and read as b chunks of r, hp (M, b, r), so
     ``hp.flat[m, j*b + i] = h[m, i, j]``;
  3. ``BD2``: ``z[m, c, u] = sum_t hp[m, c, t] * w2[c, u, t]``, z (M, b, s);
  4. ``P2``: z transposed to (M, s, b) and flattened, ``y[m, u*b + c] = z[m, c, u]``.
- :func:`short_conv_gate`: z (B, L, 3d) (``in_proj`` output, not transposed), w (3d, K), b (3d,)
  -> pre (B, d, L) float32 and x2 (B, d, L) in z's dtype. The causal depthwise short conv of
  :class:`~m2bench.layers.mixer.M2SequenceMixer`, ``o[:, c, t] = b[c] + sum_j w[c, j] *
  z[:, t - (K-1) + j, c]`` (zero for negative time), split into x1, x2, v (d channels each, in
  that order), and ``pre = v * x1``. Math in float32.
- :func:`gate_out`: y (B, d, L) (``fft_conv`` output), x2 (B, d, L), res (B, d, L) or None ->
  ``(y * x2 + res)`` transposed to (B, L, d), in x2's dtype. Math in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def blockdiag_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Block-diagonal product; shapes in the module docstring."""
    nblocks, out_block, in_block = w.shape
    xb = x.reshape(x.shape[0], nblocks, in_block)
    return torch.einsum("mbi,boi->mbo", xb, w).reshape(x.shape[0], nblocks * out_block)


def monarch_matmul(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Order-2 Monarch product ``P2 · BD2 · P1 · BD1 · x``; shapes in the module docstring."""
    nblocks, r, p = w1.shape
    s = w2.shape[1]
    m = x.shape[0]
    h = torch.einsum("mbp,brp->mbr", x.reshape(m, nblocks, p), w1)  # BD1
    h = h.transpose(1, 2).reshape(m, nblocks, r)  # P1, then b chunks of r
    z = torch.einsum("mbr,bsr->mbs", h, w2)  # BD2
    return z.transpose(1, 2).reshape(m, s * nblocks)  # P2


def short_conv_gate(
    z: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise short conv, split and ``v * x1``; shapes in the module docstring."""
    seqlen, channels = z.shape[1], z.shape[2]
    taps = w.shape[1]
    with torch.autocast(device_type=z.device.type, enabled=False):  # float32 math, as the kernel
        zt = z.transpose(1, 2).float()
        o = F.conv1d(zt, w.float()[:, None, :], b.float(), padding=taps - 1, groups=channels)
        x1, x2, v = o[..., :seqlen].split(channels // 3, dim=1)
        return v * x1, x2.to(z.dtype)


def gate_out(y: torch.Tensor, x2: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
    """``y * x2 (+ res)`` transposed to (B, L, d); shapes in the module docstring."""
    out = y.float() * x2.float()
    if res is not None:
        out = out + res.float()
    return out.transpose(1, 2).to(x2.dtype)
