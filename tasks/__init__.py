"""Task plugins; importing this package registers them (one line per task)."""

from tasks import glue, imagenet, lm_harness, locov1, mnist, pile, ts_forecast  # noqa: F401
