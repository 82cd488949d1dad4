"""Monarch Mixer building blocks, one per file.

- ``monarch.py``: order-2 Monarch matrices and the single-factor block-diagonal linear map.
- ``long_conv.py``: FFT long convolutions (causal and bidirectional) and the implicit Hyena filter.
- ``mixer.py``: the M2 sequence mixer and the gated block-diagonal GLU MLP (dimension mixer).
- ``heads.py``: pooler, masked-LM head and classification head.

Every layer takes ``kernel``: ``"torch"`` (plain PyTorch everywhere) or ``"triton"`` (m2bench's
Triton kernels: the block-diagonal matmul and the fused GLU / add + LayerNorm of the MLP, the
order-2 Monarch multiply of :class:`~m2bench.layers.monarch.MonarchLinear`, the fused short conv
+ gating of :class:`~m2bench.layers.mixer.M2SequenceMixer`, and the FFT long convolution as
Monarch matmuls: one program per row pair for L <= 8192, three passes beyond;
:func:`triton_coverage` states it and every run tags it as ``kernel_impl``).
Anything else raises :class:`~m2bench.errors.ConfigError`.
"""

from __future__ import annotations

from m2bench.errors import ConfigError

#: Implementations a layer can run with.
KERNELS = ("torch", "triton")
_COVERAGE = (
    "blockdiag_mlp:triton long_conv:triton(L<={half})+{beyond}(L>{half}) fused_gating:triton "
    "monarch:triton"
)
#: what ``kernel="triton"`` runs by default, per building block (the run tag ``kernel_impl``;
#: the limit is that of bf16 operands, float32 ones leave one program at L > 4096)
TRITON_COVERAGE = _COVERAGE.format(half=8192, beyond="triton_3pass")


def triton_coverage() -> str:
    """What ``kernel="triton"`` runs now: :data:`TRITON_COVERAGE` with the FFT limit of
    :data:`m2bench.kernels.fftconv_triton.MAX_N` and, when
    :data:`~m2bench.kernels.fftconv_triton.LONG_FFT` is off, ``cufft`` beyond it."""
    from m2bench.kernels import fftconv_triton

    beyond = "triton_3pass" if fftconv_triton.LONG_FFT else "cufft"
    return _COVERAGE.format(half=fftconv_triton.MAX_N // 2, beyond=beyond)


def check_kernel(kernel: str) -> str:
    """Return ``kernel`` if it is implemented, else raise.

    Raises:
        ConfigError: for an unknown or not yet implemented kernel.
    """
    if kernel not in KERNELS:
        raise ConfigError(
            f"kernel {kernel!r} is not available; implemented kernels: {', '.join(KERNELS)}"
        )
    return kernel
