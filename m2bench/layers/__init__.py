"""Monarch Mixer building blocks, one per file.

- ``monarch.py``: order-2 Monarch matrices and the single-factor block-diagonal linear map.
- ``long_conv.py``: FFT long convolutions (causal and bidirectional) and the implicit Hyena filter.
- ``mixer.py``: the M2 sequence mixer and the gated block-diagonal GLU MLP (dimension mixer).
- ``heads.py``: pooler, masked-LM head and classification head.

Every layer takes ``kernel``: the implementation of its hot loop. Only ``"torch"`` (plain
PyTorch) exists so far; a later change adds Triton kernels behind the same switch. Anything else
raises :class:`~m2bench.errors.ConfigError` instead of silently running another implementation.
"""

from __future__ import annotations

from m2bench.errors import ConfigError

#: Implementations a layer can run with.
KERNELS = ("torch",)


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
