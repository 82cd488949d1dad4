"""Plain-PyTorch twins of the Triton kernels: same signatures, the definition of what they compute.

- :func:`blockdiag_matmul`: x (M, nblocks * in_block), w (nblocks, out_block, in_block), optional
  bias (nblocks * out_block,) -> y (M, nblocks * out_block) with
  ``y[:, b*out:(b+1)*out] = x[:, b*in:(b+1)*in] @ w[b].T (+ bias[b*out:(b+1)*out])``.
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
- :func:`fft_conv`: x (B, C, L), k_fwd and k_rev (C, L) (k_rev None: causal), skip (C,) or
  None, gate and add (B, C, L) or None -> ``(conv(x) + skip * x) * gate + add`` (B, C, L) in
  ``out_dtype`` (default x's), copied into ``out`` when given. ``conv`` is
  :func:`m2bench.layers.long_conv.fft_conv`'s: ``y[t] = sum_{s<=t} x[s] k_fwd[t-s] +
  sum_{s>t} x[s] k_rev[s-t-1]``. Math in float32 (float64 for float64 x).
- :func:`transpose`: x (B, A, C) -> (B, C, A) contiguous.
- :func:`gate_out`: y (B, d, L) (``fft_conv`` output), x2 (B, d, L), res (B, d, L) or None ->
  ``(y * x2 + res)`` transposed to (B, L, d), in x2's dtype. Math in float32.
- :func:`blockdiag_glu`: h (M, d), w_in (nblocks, 2I/nblocks, d/nblocks), nblocks even ->
  a (M, I) in h's dtype, ``a = GELU(g) * v`` with ``[g, v] = blockdiag_matmul(h, w_in)`` split at
  I (gate first; so the gate of feature j comes from block ``j // out_block`` and its value from
  block ``nblocks/2 + j // out_block``). Exact (erf) GELU. Math in float32 (float64 stays float64).
- :func:`add_layer_norm`: x (M, d), residual (M, d), weight (d,), bias (d,), eps ->
  ``LayerNorm(x + residual)`` over the last dim, in x's dtype. Math in float32 (float64 stays
  float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def blockdiag_matmul(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Block-diagonal product (plus bias); shapes in the module docstring."""
    nblocks, out_block, in_block = w.shape
    xb = x.reshape(x.shape[0], nblocks, in_block)
    y = torch.einsum("mbi,boi->mbo", xb, w).reshape(x.shape[0], nblocks * out_block)
    return y if bias is None else y + bias


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


def fft_conv(
    x: torch.Tensor,
    k_fwd: torch.Tensor,
    k_rev: torch.Tensor | None = None,
    skip: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``(conv(x) + skip * x) * gate + add``; shapes in the module docstring."""
    from m2bench.layers.long_conv import fft_conv as conv  # the PyTorch layers' convolution
    from m2bench.layers.long_conv import gate_add

    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        y = conv(x.to(work), k_fwd, k_rev, skip)  # float32 math (float64 for float64 x)
        gate, add = (None if t is None else t.to(work) for t in (gate, add))
        return gate_add(y, gate, add, out_dtype or x.dtype, out)


def blockdiag_glu(h: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """``GELU(g) * v`` of the block-diagonal ``fc_in``; shapes in the module docstring."""
    dtype = torch.promote_types(h.dtype, torch.float32)
    with torch.autocast(device_type=h.device.type, enabled=False):  # float32 math, as the kernel
        gv = blockdiag_matmul(h.to(dtype), w_in.to(dtype))
        g, v = gv.chunk(2, dim=1)
        return (F.gelu(g) * v).to(h.dtype)


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``LayerNorm(x + residual)`` over the last dim; shapes in the module docstring."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):  # float32 math, as the kernel
        s = x.to(dtype) + residual.to(dtype)
        y = F.layer_norm(s, (s.shape[-1],), weight.to(dtype), bias.to(dtype), eps)
        return y.to(x.dtype)


def transpose(x: torch.Tensor) -> torch.Tensor:
    """(B, A, C) -> (B, C, A), contiguous."""
    return x.transpose(1, 2).contiguous()
