"""Task plugins; importing this package registers them (one line per task)."""

from tasks import glue, locov1  # noqa: F401
