"""Task plugins; importing this package registers them (one line per task)."""

from tasks import locov1  # noqa: F401
