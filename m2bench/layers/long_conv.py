"""FFT long convolutions with implicitly parametrised (Hyena) kernels.

Papers: Fu et al., "Monarch Mixer" (NeurIPS 2023, https://arxiv.org/abs/2310.12109), and Poli et
al., "Hyena Hierarchy: Towards Larger Convolutional Language Models" (ICML 2023,
https://arxiv.org/abs/2302.10866) for the implicit filter.

Shapes (B batch, C channels, L sequence length):

- :func:`fft_conv`: input x (B, C, L), kernels (C, L), skip D (C,) -> (B, C, L).
  Causal (no reverse kernel): ``y[t] = sum_{s<=t} x[s] k_fwd[t-s] + D x[t]``, FFT size 2L (x and k
  zero-padded), first L outputs. Bidirectional: one kernel of length 2L, ``k_fwd`` followed by
  ``k_rev`` reversed in time, FFT size 2L, first L outputs, i.e.
  ``y[t] = sum_{s<=t} x[s] k_fwd[t-s] + sum_{s>t} x[s] k_rev[s-t-1] + D x[t]``
  (the reverse kernel's tap 0 acts on position t+1; its last tap never contributes).
- :class:`HyenaFilter`: length L -> kernels (C, L) (forward, and reverse when bidirectional),
  computed on every call from positional features z (1, L_max, emb_dim) through an MLP with Sin
  activations sharing one learnable frequency, times a fixed exponential decay.
- :class:`ImplicitLongConv`: a HyenaFilter plus the per-channel skip D; x (B, C, L) -> (B, C, L).

Checked against the official M2-BERT PyTorch path (HazyResearch/m2 ``fftconv_ref``,
``HyenaFilter``) through the oracle fixture in ``tests/fixtures/m2_bert_oracle``.

Deviations from the official code: the FFT product is computed as plain ``irfft(rfft(x)·rfft(k))``
instead of dividing the kernel spectrum by N and inverting with ``norm="forward"`` (the same
mathematics, rounding differs at ~1e-7), and the FFT runs in float32 for half-precision inputs
(cuFFT has no bf16; float64 inputs stay float64), and the implicit kernels are always computed in
float32, with autocast off. The filter's dropout and the optional
``hyena_training_additions`` are not implemented (both are off in every released M2-BERT).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from m2bench.layers import check_kernel


def fft_conv(
    x: torch.Tensor,
    k_fwd: torch.Tensor,
    k_rev: torch.Tensor | None = None,
    skip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Long convolution of ``x`` (B, C, L) with per-channel kernels (C, L) via an FFT of size 2L.

    Args:
        x: input, channels first.
        k_fwd: causal kernel; tap j acts on x[t - j].
        k_rev: reverse kernel (bidirectional convolution); tap j acts on x[t + 1 + j]. ``None``
            gives a causal convolution.
        skip: per-channel weight D of the skip term ``D * x``.

    Returns:
        (B, C, L) in the dtype of ``x``.
    """
    seqlen = x.shape[-1]
    n = 2 * seqlen
    # At least float32: cuFFT has no bf16 and fp16 FFTs lose too much over long sequences.
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = k_fwd.to(work)
    if k_rev is not None:
        k = torch.cat([k, k_rev.to(work).flip(-1)], dim=-1)
    xw = x.to(work)
    y = torch.fft.irfft(torch.fft.rfft(xw, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :seqlen]
    if skip is not None:
        y = y + xw * skip.to(work).unsqueeze(-1)
    return y.to(x.dtype)


def gate_add(
    y: torch.Tensor,
    gate: torch.Tensor | None,
    add: torch.Tensor | None,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(y * gate + add)`` (either optional) cast to ``dtype``, copied into ``out`` if given: the
    epilogue of every PyTorch path of the gated convolution (layer, twin, autograd path)."""
    if gate is not None:
        y = y * gate
    if add is not None:
        y = y + add
    y = y.to(dtype)
    return y if out is None else out.copy_(y)


def hyena_positional_features(max_len: int, emb_dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial positional features of the implicit filter.

    Returns:
        ``z`` (1, max_len, emb_dim) with columns ``t, cos(f_i w), ..., -sin(f_i w), ...`` where
        ``t = linspace(0, 1, max_len)``, ``w_n = 2 pi n / max_len`` and the ``(emb_dim - 1) / 2``
        frequencies ``f = linspace(1e-4, bands - 1, bands)``; and the time grid ``t``
        (1, max_len, 1).
    """
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"hyena emb_dim must be odd and >= 3, got {emb_dim}")
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, max_len)[None, :, None]
    w = 2 * math.pi * torch.linspace(0, max_len - 1, max_len)[None, :, None] / max_len
    f = torch.linspace(1e-4, bands - 1, bands)[None, None]
    angle = f * w
    return torch.cat([t, torch.cos(angle), -torch.sin(angle)], dim=-1), t


def decay_rates(
    channels: int, target: float = 1e-2, slow: float = 1.5, fast: float = 0.3
) -> torch.Tensor:
    """Fixed decay rates (1, 1, channels): channel c decays to ``target`` at time slow..fast."""
    return torch.linspace(math.log(target) / slow, math.log(target) / fast, channels)[None, None]


class _FilterMLP(nn.Module):
    """Linear -> Sin -> Linear -> Sin -> Linear -> Sin -> Linear (last without bias)."""

    def __init__(self, emb_dim: int, order: int, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Linear(emb_dim, order),
                nn.Linear(order, order),
                nn.Linear(order, order),
                nn.Linear(order, channels, bias=False),
            ]
        )

    def forward(self, z: torch.Tensor, freq: torch.Tensor, w_mod: float) -> torch.Tensor:
        h = z
        for layer in self.layers[:-1]:
            h = torch.sin(w_mod * freq * layer(h))
        return self.layers[-1](h)


class HyenaFilter(nn.Module):
    """Implicit long-convolution kernels of ``channels`` channels, for any length <= ``max_len``.

    ``k = MLP(z[:L]) * exp(-t[:L] |deltas|)``, laid out (channels, L). Parameters: ``z`` (learned
    positional features), ``freq`` (1, order), the one Sin frequency shared by every Sin layer of
    both MLPs, and the MLP weights. Buffers: ``t`` (1, max_len, 1) and ``deltas`` (1, 1, channels).
    Kernel values at a position do not depend on the evaluated length L.

    Args:
        channels: kernels produced (model width).
        max_len: longest sequence supported.
        order: hidden width of the filter MLP.
        emb_dim: positional features per position.
        freq_init: initial Sin frequency.
        w_mod: fixed multiplier inside the Sin.
        bidirectional: also produce a reverse kernel with a second MLP.
    """

    def __init__(
        self,
        channels: int,
        max_len: int,
        *,
        order: int = 128,
        emb_dim: int = 5,
        freq_init: float = 10.0,
        w_mod: float = 1.0,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.max_len, self.w_mod, self.bidirectional = max_len, w_mod, bidirectional
        z, t = hyena_positional_features(max_len, emb_dim)
        self.z = nn.Parameter(z)
        self.register_buffer("t", t)
        self.register_buffer("deltas", decay_rates(channels))
        self.freq = nn.Parameter(torch.full((1, order), float(freq_init)))
        self.mlp_fwd = _FilterMLP(emb_dim, order, channels)
        self.mlp_rev = _FilterMLP(emb_dim, order, channels) if bidirectional else None

    def forward(self, seqlen: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Kernels (k_fwd, k_rev), each (channels, seqlen); k_rev is None when causal."""
        if seqlen > self.max_len:
            raise ValueError(
                f"sequence length {seqlen} exceeds the filter's max_len {self.max_len}"
            )
        # Always float32, autocast or not: in bf16 the positional features of neighbouring
        # positions collide (8 mantissa bits for t in [0, 1]) and the kernels degrade with L
        # (measured on an H200: 24% relative error of M2-BERT-80M's output at L=2048, 56% at
        # 8192). The filter is input-independent and costs O(L * order * channels).
        with torch.autocast(device_type=self.z.device.type, enabled=False):
            z, t = self.z[:, :seqlen].float(), self.t[:, :seqlen].float()
            decay = torch.exp(-t * self.deltas.float().abs())
            freq = self.freq.float()
            k_fwd = (self.mlp_fwd(z, freq, self.w_mod) * decay)[0].transpose(0, 1)
            if self.mlp_rev is None:
                return k_fwd, None
            k_rev = (self.mlp_rev(z, freq, self.w_mod) * decay)[0].transpose(0, 1)
        return k_fwd, k_rev


class ImplicitLongConv(nn.Module):
    """Long convolution with a :class:`HyenaFilter` kernel plus the per-channel skip ``D * x``.

    Shapes: x (B, channels, L) -> (B, channels, L). ``skip`` is D, shape (channels,).
    Bidirectional or causal as the filter is.

    Args:
        channels: channels of the input.
        max_len: longest sequence supported.
        kernel: ``"torch"`` (cuFFT), or ``"triton"``: the FFT computed as Monarch matmuls
            (:mod:`m2bench.kernels.fftconv_triton`: one program per row pair up to L = 8192
            with bf16 operands, 4096 with float32 ones, three passes beyond; cuFFT beyond one
            program when ``fftconv_triton.LONG_FFT`` is off).
        **filter_kwargs: passed to :class:`HyenaFilter`.
    """

    def __init__(
        self, channels: int, max_len: int, *, kernel: str = "torch", **filter_kwargs: object
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self.filter = HyenaFilter(channels, max_len, **filter_kwargs)
        self.skip = nn.Parameter(torch.randn(channels))
        self._spec_key: tuple | None = None  # kept spectrum for the Triton path (_spectrum)
        self._spec: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(
        self,
        x: torch.Tensor,
        gate: torch.Tensor | None = None,
        add: torch.Tensor | None = None,
        *,
        out_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Convolve ``x`` (B, C, L): ``(conv(x) + D x) * gate + add``, gate/add optional, in
        ``out_dtype`` (default x's).

        With ``kernel="triton"`` and a length the Triton FFT convolution takes
        (:func:`uses_triton_fft`) this is that kernel, gating fused; without gradients its
        kernels' spectrum is kept between calls (:meth:`_spectrum`), so inference does not
        re-evaluate the filter MLPs. Otherwise the cuFFT path.
        """
        if self.kernel == "triton":
            from m2bench.kernels import fftconv_triton as fc

            precision = fc.default_precision(x)
            if uses_triton_fft(x.shape[-1], precision):
                if not torch.is_grad_enabled():
                    spec = self._spectrum(x.shape[-1], x.device, precision)
                    return fc.fft_conv_spectrum(
                        x, spec, self.skip, gate, add, out_dtype=out_dtype, precision=precision
                    )
                k_fwd, k_rev = self.filter(x.shape[-1])
                return fc.fft_conv(x, k_fwd, k_rev, self.skip, gate, add, out_dtype=out_dtype,
                                   precision=precision)  # fmt: skip
        k_fwd, k_rev = self.filter(x.shape[-1])
        return gate_add(fft_conv(x, k_fwd, k_rev, self.skip), gate, add, out_dtype or x.dtype)

    def _spectrum(
        self, seqlen: int, device: torch.device, precision: str = "bf16"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Triton kernel's spectrum of this layer's kernels at ``seqlen`` (in the layout of
        ``fftconv_triton.plan(seqlen, precision)``), kept between calls.

        Recomputed when the length, the layout, the device or any filter parameter changes (a
        new tensor or an in-place update: the key holds each parameter's storage pointer and
        version), so an optimizer step or ``load_state_dict`` is always seen. Only used without
        gradients.
        """
        from m2bench.kernels.fftconv_triton import plan, plan_spectrum

        params = tuple(self.filter.parameters())
        how = plan(seqlen, precision)
        key = (how, str(device), tuple((p.data_ptr(), p._version) for p in params))
        if self._spec_key != key:
            self._spec = plan_spectrum(how, *self.filter(seqlen))
            self._spec_key = key
        return self._spec


def uses_triton_fft(seqlen: int, precision: str = "bf16") -> bool:
    """Whether ``kernel="triton"`` convolves length ``seqlen`` with the Triton FFT kernel
    (matmul operands of ``precision``, as ``fftconv_triton.default_precision`` picks)."""
    from m2bench.kernels.fftconv_triton import supported

    return supported(seqlen, precision)


def hyena_param_groups(module: nn.Module, lr: float, *, pos_lr: float = 1e-5) -> list[dict]:
    """The Hyena (safari) optimizer groups of every :class:`HyenaFilter` in ``module``.

    Filter MLPs (forward and reverse) and their Sin frequency train at ``lr`` without weight
    decay; the positional features ``z`` at ``pos_lr`` (Hyena's ``lr_pos_emb``) without decay. The
    skip ``D`` of the long convolutions (1-D) is left to the caller's no-decay rule.
    """
    mlp, pos = [], []
    for f in (m for m in module.modules() if isinstance(m, HyenaFilter)):
        mlp += [p for m in (f.mlp_fwd, f.mlp_rev) if m is not None for p in m.parameters()]
        mlp.append(f.freq)
        pos.append(f.z)
    return [
        {"params": mlp, "lr": lr, "weight_decay": 0.0},
        {"params": pos, "lr": pos_lr, "weight_decay": 0.0},
    ]
