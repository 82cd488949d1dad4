"""Task plugins; importing this package registers them (one line per task)."""

from tasks import (  # noqa: F401
    glue,
    imagenet,
    lm_harness,
    locov1,
    mnist,
    pile,
    ts_anomaly,
    ts_classify,
    ts_forecast,
    ts_impute,
    ts_short,
)
