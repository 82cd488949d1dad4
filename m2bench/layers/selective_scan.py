"""The Mamba block and its selective scan, in plain PyTorch.

Paper: Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023,
https://arxiv.org/abs/2312.00752), Algorithm 2 and §3.6 (the block). Implemented from the paper's
equations; no CUDA-only package is needed.

:func:`selective_scan`, per channel d and state n (zero initial state):

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,        y_t = C_t . h_t + D u_t

(the zero-order-hold discretisation of A and Mamba's simplified Euler step for B). Two
implementations with one signature: :func:`selective_scan_reference` steps through time one step at
a time (the slow twin); :func:`selective_scan` splits the sequence into chunks, runs a parallel
(Hillis-Steele) associative scan of the affine maps h -> a h + b inside every chunk at once, then
carries the state across chunks with a short loop. All its decays are products of factors in
(0, 1], so nothing overflows; a parity test checks the two agree in fp32.

:class:`MambaBlock`, input (B, L, d_model) -> (B, L, d_model):

1. ``in_proj`` Linear(d_model -> 2 d_inner, no bias), d_inner = expand * d_model; split into x, z;
2. x = SiLU(causal depthwise Conv1d(d_inner, kernel d_conv, padding d_conv - 1, bias), first L);
3. ``x_proj`` Linear(d_inner -> dt_rank + 2 d_state, no bias) -> (dt, B, C);
   delta = softplus(``dt_proj`` Linear(dt_rank -> d_inner)(dt)), dt_rank = ceil(d_model / 16);
4. y = selective_scan(x, delta, A, B, C, D) with A = -exp(A_log), A_log = log(1..d_state) per
   channel (S4D-real init), D = 1;
5. y = y * SiLU(z); ``out_proj`` Linear(d_inner -> d_model, no bias).

Initialisation as in the paper's code description: dt_proj weight uniform in +-dt_rank^-0.5; its
bias is softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1] (floored at 1e-4), so the initial
step sizes span that range; the other layers keep PyTorch's defaults.

Under autocast the scan itself runs in fp32 (projections keep the autocast dtype), since a long
product of decays in bf16 loses the state.

Deviations: the scan is not the fused, recomputing CUDA kernel, so training memory grows with
L * d_inner * d_state (chunking bounds the extra factor of the parallel scan to log2(chunk)). No
inference cache (step-by-step decoding) is provided. Not checked against an oracle fixture of the
official ``mamba_ssm`` code; the tests check the recurrence by hand and the two scans against
each other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _discretise(u, delta, A, B):
    """Per-step decay exp(delta A) and input delta B u, both (b, L, d, n)."""
    decay = torch.exp(delta.unsqueeze(-1) * A)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    return decay, drive


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Selective scan, one time step after the other (the slow reference).

    Args:
        u: input (b, L, d).
        delta: positive step sizes (b, L, d).
        A: state matrix diagonal (d, n), negative real.
        B: input projections (b, L, n).
        C: output projections (b, L, n).
        D: skip weights (d,), or None for no skip.

    Returns:
        y (b, L, d).
    """
    b, length, d = u.shape
    h = u.new_zeros(b, d, A.shape[-1])
    ys = []
    for t in range(length):
        dt = delta[:, t, :, None]
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    return y if D is None else y + u * D


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Selective scan by chunked parallel scans; same arguments and result as the reference.

    Args:
        u: input (b, L, d).
        delta: positive step sizes (b, L, d).
        A: state matrix diagonal (d, n), negative real.
        B: input projections (b, L, n).
        C: output projections (b, L, n).
        D: skip weights (d,), or None for no skip.
        chunk_size: steps scanned in parallel; memory grows with log2 of it.

    Returns:
        y (b, L, d).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    b, length, d = u.shape
    n = A.shape[-1]
    decay, drive = _discretise(u, delta, A, B)
    t = min(chunk_size, length)
    pad = -length % t
    if pad:  # steps after the end never reach earlier outputs: identity maps are enough
        decay = torch.cat([decay, decay.new_ones(b, pad, d, n)], dim=1)
        drive = torch.cat([drive, drive.new_zeros(b, pad, d, n)], dim=1)
    chunks = (length + pad) // t
    a = decay.view(b, chunks, t, d, n)
    h = drive.view(b, chunks, t, d, n)
    # Hillis-Steele inclusive scan: after the step with offset k, position s holds the composed
    # map over steps (s - 2k, s] of its chunk; h = (a, b) composed is h -> a_s a_{s-k} h + ...
    k = 1
    while k < t:
        h = torch.cat([h[:, :, :k], a[:, :, k:] * h[:, :, :-k] + h[:, :, k:]], dim=2)
        a = torch.cat([a[:, :, :k], a[:, :, k:] * a[:, :, :-k]], dim=2)
        k *= 2
    # h[:, c, s] is the state from a zero state at the chunk start; add the carried-in state
    carry = [h.new_zeros(b, d, n)]
    for c in range(chunks - 1):
        carry.append(h[:, c, -1] + a[:, c, -1] * carry[-1])
    h = h + a * torch.stack(carry, dim=1).unsqueeze(2)
    h = h.reshape(b, chunks * t, d, n)[:, :length]
    y = torch.einsum("bldn,bln->bld", h, C)
    return y if D is None else y + u * D


class MambaBlock(nn.Module):
    """Mamba block (selective SSM with gated output), (B, L, d_model) -> (B, L, d_model).

    Args:
        d_model: width of the block's input and output.
        d_state: state size n per channel.
        d_conv: taps of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the step-size projection; default ceil(d_model / 16).
        dt_min: smallest initial step size.
        dt_max: largest initial step size.
        chunk_size: chunk of :func:`selective_scan`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        *,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        if min(d_model, d_state, d_conv, expand) < 1:
            raise ValueError(
                f"MambaBlock needs positive sizes, got d_model={d_model}, d_state={d_state}, "
                f"d_conv={d_conv}, expand={expand}"
            )
        self.d_inner = d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp_min(1e-4)
        with torch.no_grad():  # softplus(bias) = dt at init
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, d_state + 1, dtype=torch.float32)
        self.A_log = nn.Parameter(torch.log(a).repeat(d_inner, 1))  # (d_inner, n), S4D-real
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Mix ``u`` (B, L, d_model) causally along L; returns (B, L, d_model)."""
        length = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        with torch.autocast(u.device.type, enabled=False):  # the recurrence runs in fp32
            a = -torch.exp(self.A_log.float())
            y = selective_scan(x.float(), delta.float(), a, b.float(), c.float(), self.D.float(),
                               chunk_size=self.chunk_size)  # fmt: skip
        return self.out_proj(y.to(x.dtype) * F.silu(z))
