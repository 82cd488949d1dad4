"""MLflow tracking: the only module that imports mlflow.

Store: ``$MLFLOW_TRACKING_URI`` if set (e.g. a team server), else MLflow's embedded SQLite store
``sqlite:///<cwd>/mlflow.db`` with artifacts under ``<cwd>/mlruns`` -- the same store ``m2bench ui``
opens. One experiment per task (``m2bench/<task>``), one run per (task, model).

Concurrency: SQLite lets one process write at a time. MLflow waits up to 20 s for the lock
(``PRAGMA busy_timeout``) but does not retry when the wait runs out or when SQLite refuses at once
to avoid a deadlock; every m2bench call on an SQLite store therefore retries "database is locked"
with backoff, :data:`LOCK_RETRIES` times, then fails with a one-line :class:`StoreError`. Several
concurrent writers belong on a tracking server (``m2bench server``, see ``m2bench/team.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata as md
import json
import logging
import os
import platform
import random
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from m2bench.errors import StoreError

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_PARAM_LEN = 6000
LOCK_RETRIES = 6  # retries of one store call that SQLite reported locked, with backoff
LOCK_BACKOFF_S = 0.5  # first wait; doubles per retry (capped at 8 s), with jitter


def tracking_uri() -> str:
    """The tracking URI runs go to."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """Artifact folder of the default embedded store."""
    return Path.cwd() / "mlruns"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]) if not uri.startswith("sqlite:////") else Path(uri[9:])


def _check_writable_dir(folder: Path, what: str) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(
            f"{what} {folder} is not writable; choose a writable folder "
            "(or set MLFLOW_TRACKING_URI to another store)"
        )


def _is_locked(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:  # mlflow wraps sqlalchemy, which wraps sqlite3
        if "database is locked" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _retry_locked(uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried while the SQLite store ``uri`` is locked.

    Raises:
        StoreError: the store stayed locked through every retry.
    """
    for attempt in range(LOCK_RETRIES + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_locked(exc):
                raise
        if attempt < LOCK_RETRIES:
            delay = min(8.0, LOCK_BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.5)
            log.info("tracking store %s is locked; retrying in %.1f s", uri, delay)
            time.sleep(delay)
    raise StoreError(
        f"tracking store {uri} stayed locked by other writers ({LOCK_RETRIES} retries); SQLite "
        "takes one writer at a time: run one process at a time, or start a team server "
        "(m2bench server) and set MLFLOW_TRACKING_URI to it"
    ) from None


class _QuietLocks(logging.Filter):
    """Drop MLflow's multi-line traceback for a lock that :func:`_retry_locked` handles."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


class _LockRetryingClient:
    """An ``MlflowClient`` whose calls retry while the SQLite store is locked."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return functools.partial(_retry_locked, self._uri, attr)


@functools.cache
def _client(uri: str) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.getLogger().level or logging.WARNING)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    if _sqlite_path(uri) is None:
        return client
    logging.getLogger("mlflow.store.db.utils").addFilter(_QuietLocks())
    return _LockRetryingClient(client, uri)


@contextlib.contextmanager
def _schema_lock(db: Path | None) -> Any:
    """Hold an exclusive lock on the folder of SQLite store ``db`` (nothing for other stores).

    MLflow creates and migrates the schema of a new SQLite store on first use without a lock;
    two processes doing it at once fail ("duplicate column name"). The lock is on the folder,
    so no lock file is left behind.
    """
    if db is None or not db.parent.is_dir():
        yield
        return
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def experiment_name(task: str) -> str:
    """MLflow experiment of a task."""
    return f"m2bench/{task}"


def preflight(task: str) -> str:
    """Check the store can be written and create the task's experiment; return its id.

    Runs before any compute so that an unwritable store costs nothing.

    Raises:
        StoreError: with the URI and the fix.
    """
    uri = tracking_uri()
    db = _sqlite_path(uri)
    if db is not None:
        _check_writable_dir(db.parent, "tracking store folder")
        if db.exists() and not os.access(db, os.W_OK):
            raise StoreError(f"tracking store {db} is read-only; make it writable or move it")
    if uri.startswith("file:") or (db is None and "://" not in uri):
        _check_writable_dir(Path(urlparse(uri).path or uri), "tracking store folder")
    try:
        name = experiment_name(task)
        with _schema_lock(db):
            client = _client(uri)
            exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if "MLFLOW_TRACKING_URI" not in os.environ:
            root = default_artifact_root()
            _check_writable_dir(root, "artifact folder")
            location = root.as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except StoreError:
            raise
        except Exception:
            exp = client.get_experiment_by_name(name)  # a concurrent run may have created it
            if exp is None:
                raise
            return exp.experiment_id
    except StoreError:
        raise
    except Exception as exc:  # mlflow raises many types; the user needs the URI and the cause
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot write to tracking store {uri}: {first}; check the path/server or set "
            "MLFLOW_TRACKING_URI"
        ) from None


class Run:
    """One MLflow run; created by :func:`start_run`, closed by :meth:`end`."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._buffer: list[Any] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values stringified, truncated to MLflow's limit)."""
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics at ``step``; NaN values are logged as NaN, never dropped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_step(self, metrics: Mapping[str, float], step: int) -> None:
        """Per-step metrics, buffered: written in batches (one store write per 200 values)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= 200:
            self.flush()

    def flush(self) -> None:
        """Write buffered per-step metrics."""
        for i in range(0, len(self._buffer), 500):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 500])
        self._buffer = []

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_artifacts(self, folder: Path) -> None:
        """Upload the files of ``folder`` (flat) as run artifacts; weights (``*.pt``) stay out."""
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and path.suffix != ".pt":
                self.client.log_artifact(self.run_id, str(path))

    def log_text(self, text: str, name: str) -> None:
        """Store ``text`` as the artifact ``name``."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Close the run as FINISHED, FAILED or KILLED, with an ``error`` tag on failure."""
        self.flush()
        if error:
            self.set_tags({"error": error})
        self.client.set_terminated(self.run_id, status=status)


def start_run(task: str, run_name: str, tags: Mapping[str, Any]) -> Run:
    """Open a run in the task's experiment (call :func:`preflight` first)."""
    client = _client(tracking_uri())
    exp = client.get_experiment_by_name(experiment_name(task))
    run = client.create_run(
        exp.experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()}
    )
    return Run(client, run.info.run_id)


def _param_value(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if isinstance(v, dict | list | tuple) else str(v)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "none"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: Any) -> dict[str, str]:
    """Tags naming the hardware of ``device`` (a ``torch.device``)."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return {"hardware": name, "gpu": name, "device": "cuda"}
    return {"hardware": f"cpu: {_cpu_name()} x{os.cpu_count()}", "gpu": "none", "device": "cpu"}


@functools.cache
def provenance() -> dict[str, str]:
    """Code and library provenance tags: git sha/dirty, library versions, python, OS."""
    import torch

    # a copy sent to another machine states its commit (its .git, if any, may be stale)
    sha = os.environ.get("M2BENCH_GIT_SHA") or _git("rev-parse", "HEAD")
    if os.environ.get("M2BENCH_GIT_SHA"):
        dirty = os.environ.get("M2BENCH_GIT_DIRTY", "unknown")
    elif sha:
        dirty = str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower()
    else:
        sha, dirty = "unknown", "unknown"
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "triton": _version("triton"),
        "mlflow": _version("mlflow-skinny") if _version("mlflow") == "none" else _version("mlflow"),
        "datasets": _version("datasets"),
        "lm_eval": _version("lm-eval"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def environment_text() -> str:
    """``name==version`` of every installed distribution (the env.txt artifact)."""
    names = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in md.distributions()}, key=str.lower
    )
    return "\n".join(names) + "\n"


def search_runs(experiment_prefix: str = "m2bench/") -> Any:
    """All runs of m2bench experiments as a pandas DataFrame (``mlflow.search_runs``)."""
    import mlflow
    import pandas as pd

    client = _client(tracking_uri())
    exps = [e for e in client.search_experiments() if e.name.startswith(experiment_prefix)]
    if not exps:
        return pd.DataFrame()
    return _retry_locked(
        tracking_uri(),
        mlflow.search_runs,
        experiment_ids=[e.experiment_id for e in exps],
        max_results=100_000,
        output_format="pandas",
    )
