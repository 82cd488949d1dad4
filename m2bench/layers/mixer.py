"""The two mixers of an M2-BERT layer: the M2 sequence mixer and the block-diagonal GLU MLP.

Paper: Fu et al., "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture" (NeurIPS 2023,
https://arxiv.org/abs/2310.12109). Checked against the official M2-BERT PyTorch path
(HazyResearch/m2 ``MonarchMixerSequenceMixing``, ``BertGatedLinearUnitMLP``) through the oracle
fixture in ``tests/fixtures/m2_bert_oracle``.

:class:`M2SequenceMixer`, input u (B, L, d) -> (B, L, d):

1. ``in_proj`` (dense d -> 3d), channels first (B, 3d, L);
2. ``short_conv``: causal depthwise conv, kernel 3, ``y[t] = w0 x[t-2] + w1 x[t-1] + w2 x[t] + b``;
3. split into x1, x2, v (d channels each); v <- v * x1;
4. y = long_conv(v) (bidirectional implicit kernel plus skip D), y <- y * x2;
5. y <- y + residual_conv(u) (a second implicit long conv applied to the mixer input);
6. ``out_proj`` (dense d -> d).

There is no norm or residual connection around the mixer; the input reaches the output only
through ``residual_conv``.

With ``kernel="triton"`` steps 2-3 run as one kernel on ``in_proj``'s (B, L, 3d) output
(:mod:`m2bench.kernels.gating_triton`); both long convolutions are the Triton FFT kernels
(:mod:`m2bench.kernels.fftconv_triton`, the FFT as Monarch matmuls: one program per row pair, or
three passes for long rows), the main one with the gate ``* x2`` and the residual convolution's
sum fused, with tiled transposes between the (B, L, d) and (B, d, L) layouts. Only with
``fftconv_triton.LONG_FFT`` off do rows beyond one program take the cuFFT convolutions, with a
gating kernel for steps 4-5 and the transpose back. A mask is applied by the torch ops around
the kernels: masked rows of the ``in_proj`` output are zeroed before the short conv, and masked
steps of ``v * x1`` after it, as the torch path does.

:class:`BlockdiagGLU`, input h (B, L, d) -> (B, L, d):
``LayerNorm(fc_out(GELU(g) * v) + h)`` where ``[g, v] = fc_in(h)`` (first I features gate, last I
are the value) and ``fc_in``/``fc_out`` are block-diagonal (:class:`BlockdiagLinear`).

Deviation: an optional boolean ``mask`` (B, L) zeroes the masked positions before every
convolution, so outputs at kept positions do not depend on how much padding follows; the
official code has no such mode (pass ``mask=None`` to reproduce it). Dropout in the GLU sits after
the gated activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2bench.layers import check_kernel
from m2bench.layers.long_conv import ImplicitLongConv
from m2bench.layers.monarch import BlockdiagLinear


def _zero_masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the time steps of ``x`` (B, C, L) where ``mask`` (B, L) is False."""
    return x if mask is None else x * mask[:, None, :].to(x.dtype)


class M2SequenceMixer(nn.Module):
    """M2 sequence mixer (gated short conv + bidirectional implicit long conv).

    Args:
        d_model: width d.
        max_len: longest sequence supported by the implicit filters.
        hyena_order: hidden width of the filter MLPs.
        hyena_emb_dim: positional features of the filters.
        hyena_freq_init: initial Sin frequency of the filters.
        hyena_w_mod: fixed multiplier inside the Sin.
        bidirectional: bidirectional (True) or causal long convolutions.
        residual_long_conv: add the long conv of the mixer input (official M2-BERT: True).
        short_conv_size: taps of the causal depthwise short conv.
        kernel: ``"torch"``, or ``"triton"`` (fused short conv + gating and the Triton FFT long
            convolutions up to L = 4096, cuFFT beyond).
    """

    def __init__(
        self,
        d_model: int,
        max_len: int,
        *,
        hyena_order: int = 128,
        hyena_emb_dim: int = 5,
        hyena_freq_init: float = 10.0,
        hyena_w_mod: float = 1.0,
        bidirectional: bool = True,
        residual_long_conv: bool = True,
        short_conv_size: int = 3,
        kernel: str = "torch",
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self.d_model = d_model
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_conv = nn.Conv1d(
            3 * d_model,
            3 * d_model,
            short_conv_size,
            groups=3 * d_model,
            padding=short_conv_size - 1,
        )
        conv_kwargs = dict(
            order=hyena_order,
            emb_dim=hyena_emb_dim,
            freq_init=hyena_freq_init,
            w_mod=hyena_w_mod,
            bidirectional=bidirectional,
            kernel=kernel,
        )
        self.long_conv = ImplicitLongConv(d_model, max_len, **conv_kwargs)
        self.residual_conv = (
            ImplicitLongConv(d_model, max_len, **conv_kwargs) if residual_long_conv else None
        )
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix ``u`` (B, L, d) along the sequence; ``mask`` (B, L) bool zeroes pads before convs."""
        if self.kernel == "triton":
            return self._forward_fused(u, mask)
        seqlen = u.shape[1]
        x = _zero_masked(self.in_proj(u).transpose(1, 2), mask)
        x = self.short_conv(x)[..., :seqlen]  # padding on both sides; the first L are causal
        x1, x2, v = x.split(self.d_model, dim=1)
        y = self.long_conv(_zero_masked(v * x1, mask)) * x2
        if self.residual_conv is not None:
            y = y + self.residual_conv(_zero_masked(u.transpose(1, 2), mask))
        return self.out_proj(y.transpose(1, 2))

    def _forward_fused(self, u: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``forward`` with the Triton kernels: short conv + gate, then the FFT convolutions.

        Up to :func:`~m2bench.layers.long_conv.uses_triton_fft`'s length, both long convolutions
        are the Triton FFT kernel (the main one with the output gate and the residual fused);
        beyond it, cuFFT with the gating kernel around it.
        """
        from m2bench.kernels.fftconv_triton import default_precision
        from m2bench.kernels.gating_triton import gate_out, short_conv_gate, transpose
        from m2bench.layers.long_conv import uses_triton_fft

        z = self.in_proj(u)  # (B, L, 3d), read by the kernel in this layout
        if mask is not None:
            z = z * mask[..., None].to(z.dtype)
        pre, x2 = short_conv_gate(z, self.short_conv.weight.squeeze(1), self.short_conv.bias)
        pre = _zero_masked(pre, mask)
        if uses_triton_fft(u.shape[1], default_precision(pre)):
            # contiguous rows (strided (B, L, d) reads and writes measured 2x slower on an H200)
            # through tiled transposes (PyTorch's strided copies cost 3x the bytes)
            res = None
            if self.residual_conv is not None:
                ut = _zero_masked(transpose(u), mask)
                res = self.residual_conv(ut, out_dtype=x2.dtype)
            y = self.long_conv(pre, x2, res, out_dtype=x2.dtype)
            return self.out_proj(transpose(y))
        y = self.long_conv(pre)  # float32 in, float32 out
        res = None
        if self.residual_conv is not None:
            res = self.residual_conv(_zero_masked(u.transpose(1, 2), mask))
        return self.out_proj(gate_out(y, x2, res))


class BlockdiagGLU(nn.Module):
    """Gated GLU MLP with block-diagonal weights and a post-LayerNorm residual.

    Args:
        d_model: width d.
        d_intermediate: width I of the gated activation.
        nblocks: blocks of both block-diagonal weights.
        layer_norm_eps: epsilon of the output LayerNorm.
        dropout: dropout after the gated activation.
        kernel: ``"torch"`` or ``"triton"``: the fused ``GELU(g) * v`` kernel for ``fc_in``
            (:func:`~m2bench.kernels.mlp_triton.blockdiag_glu`), the block-diagonal kernel with
            the bias in its epilogue for ``fc_out``, and one add + LayerNorm kernel
            (:func:`~m2bench.kernels.mlp_triton.add_layer_norm`). It needs ``nblocks`` even and
            dividing ``2 * d_intermediate`` (else ConfigError); under autocast its output is in
            the autocast dtype (the torch path's LayerNorm returns float32).
    """

    def __init__(
        self,
        d_model: int,
        d_intermediate: int,
        *,
        nblocks: int = 4,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.0,
        kernel: str = "torch",
    ) -> None:
        super().__init__()
        self.d_intermediate = d_intermediate
        self.fc_in = BlockdiagLinear(
            d_model, 2 * d_intermediate, nblocks, bias=False, kernel=kernel
        )
        self.kernel = self.fc_in.kernel
        if self.kernel == "triton" and (nblocks % 2 or (2 * d_intermediate) % nblocks):
            from m2bench.errors import ConfigError

            raise ConfigError(
                f"kernel='triton' needs an even nblocks dividing 2 * d_intermediate "
                f"(got nblocks={nblocks}, d_intermediate={d_intermediate}); use kernel='torch'"
            )
        self.fc_out = BlockdiagLinear(d_intermediate, d_model, nblocks, bias=True, kernel=kernel)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to ``h`` (..., d)."""
        if self.kernel == "triton":
            return self._forward_triton(h)
        gated, value = self.fc_in(h).split(self.d_intermediate, dim=-1)
        a = self.dropout(F.gelu(gated) * value)
        return self.norm(self.fc_out(a) + h)

    def _forward_triton(self, h: torch.Tensor) -> torch.Tensor:
        """``forward`` with the fused GLU, block-diagonal and add + LayerNorm kernels."""
        from m2bench.kernels.blockdiag_triton import blockdiag_matmul
        from m2bench.kernels.mlp_triton import add_layer_norm, blockdiag_glu

        fc_in, fc_out, norm = self.fc_in, self.fc_out, self.norm
        lead, d = h.shape[:-1], h.shape[-1]
        h2d = h.reshape(-1, d)
        device = h.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
        pad_in = fc_in.nblocks * fc_in.in_block - d  # zero-pad widths nblocks does not divide
        pad_mid = fc_out.nblocks * fc_out.in_block - self.d_intermediate
        pad_out = fc_out.nblocks * fc_out.out_block - d
        x = (F.pad(h2d, (0, pad_in)) if pad_in else h2d).to(dtype)
        a = self.dropout(blockdiag_glu(x, fc_in.weight.to(dtype)))  # (M, I)
        a = F.pad(a, (0, pad_mid)) if pad_mid else a
        bias = F.pad(fc_out.bias, (0, pad_out)) if pad_out else fc_out.bias
        y = blockdiag_matmul(a, fc_out.weight.to(dtype), bias)[:, :d]  # bias in the epilogue
        out = add_layer_norm(y, h2d, norm.weight, norm.bias, norm.eps)
        return out.reshape(*lead, d)
