"""User-facing errors: each one is a single line naming the cause and the fix.

The CLI prints ``error: <message>`` for these and exits non-zero without a traceback.
"""

from __future__ import annotations


class M2BenchError(Exception):
    """Base class of every error m2bench reports to a user in one line."""


class UnknownNameError(M2BenchError, KeyError):
    """A task, model or config key that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(M2BenchError):
    """Missing or malformed data: names the file/row/field and how to provide it."""


class ConfigError(M2BenchError):
    """Bad configuration value or override."""


class StoreError(M2BenchError):
    """The tracking store or output directory cannot be written."""


class WeightsUnavailable(M2BenchError):
    """Pretrained weights for a model cannot be obtained; the model is skipped, never run random."""


class ModelFailure(M2BenchError):
    """A model failed during a run (NaN outputs, out of memory); the run is recorded as FAILED."""
