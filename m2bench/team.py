"""Team tracking: a local PostgreSQL cluster and an MLflow tracking server in front of it.

SQLite (the default store) takes one writer at a time; a team, or one person running several
jobs at once, points ``MLFLOW_TRACKING_URI`` at the server started here instead. Layout of the
data folder ``DIR`` (reused on the next start):

- ``DIR/pg/data``: the PostgreSQL cluster (Debian's PostgreSQL binaries; owned by the
  ``postgres`` user when we run as root, since PostgreSQL refuses to run as root)
- ``DIR/pg/server.log``, ``DIR/mlflow.log``: server logs
- ``DIR/pg/password``: the generated password of the role ``m2bench`` (mode 600)
- ``DIR/artifacts``: run artifacts, served by the MLflow server

Both servers listen on 127.0.0.1 only. The database role and database are both ``m2bench``;
the password reaches MLflow through ``PGPASSWORD``, never on a command line. The plain-shell
equivalent is ``scripts/mlflow_server.sh``.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from m2bench.errors import StoreError

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
DB = "m2bench"  # role and database


def pg_bin(name: str) -> str:
    """Path of the PostgreSQL program ``name`` (initdb, pg_ctl, createdb).

    Taken from the folder initdb really lives in (``/usr/lib/postgresql/<version>/bin`` on
    Debian), so that all programs are of one version.

    Raises:
        StoreError: PostgreSQL is not installed.
    """
    initdb = (
        shutil.which("initdb")
        or (sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [None])[-1]
    )
    found = Path(os.path.realpath(initdb)).parent / name if initdb else None
    if found is None or not os.access(found, os.X_OK):
        raise StoreError(
            f"PostgreSQL's {name} was not found; install PostgreSQL (apt-get install postgresql) "
            "or put its bin folder on PATH"
        )
    return str(found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int, what: str, option: str) -> None:
    """Raise a one-line :class:`StoreError` if ``port`` on 127.0.0.1 is taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            raise StoreError(
                f"port {port} on {HOST} is in use; pass another {option} for the {what}"
            ) from None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise StoreError("running as root needs runuser (util-linux) to start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 120):
    try:
        out = subprocess.run(
            cmd, cwd="/", env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise StoreError(f"{what} did not finish within {timeout:.0f} s") from None
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines() or ["no output"]
        raise StoreError(f"{what} failed: {lines[-1].strip()[:300]}")
    return out


@dataclass
class Postgres:
    """A running PostgreSQL cluster on 127.0.0.1; :meth:`stop` shuts it down."""

    data: Path
    port: int
    password: str = field(repr=False)

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the ``m2bench`` database (password left out: use PGPASSWORD)."""
        return f"postgresql+psycopg2://{DB}@{HOST}:{self.port}/{DB}"

    def stop(self) -> None:
        """Fast shutdown (open sessions are disconnected); a stopped cluster is left as is."""
        if not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(
            _as_postgres([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            cwd="/",
            capture_output=True,
            timeout=60,
            check=False,
        )


def _prepare_pg_dir(root: Path) -> Path:
    pg = root / "pg"
    try:
        pg.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pg, "postgres", "postgres")
        pg.chmod(0o700)
    except (OSError, LookupError) as exc:
        raise StoreError(
            f"data dir {root} is not writable ({exc}); pass --data-dir with a writable folder"
        ) from None
    if os.geteuid() == 0:  # every folder above must let the postgres user through
        probe = subprocess.run(
            _as_postgres(["test", "-w", str(pg)]), cwd="/", capture_output=True, check=False
        )
        if probe.returncode != 0:
            raise StoreError(
                f"the postgres user cannot reach {pg} (a folder above it is private); "
                "pass --data-dir under a folder others can enter, e.g. /srv or /tmp"
            )
    return pg


def start_postgres(root: Path, port: int | None = None, timeout: float = 60) -> Postgres:
    """Start (creating on first use) a cluster under ``root/pg`` with role and database m2bench.

    Args:
        root: data folder (created if missing).
        port: TCP port on 127.0.0.1; a free one if None.
        timeout: seconds to wait for the server to accept connections.

    Raises:
        StoreError: binaries missing, port busy, folder unusable, or the server did not start.
    """
    initdb, pg_ctl, createdb = pg_bin("initdb"), pg_bin("pg_ctl"), pg_bin("createdb")
    port = port or free_port()
    check_port(port, "PostgreSQL server", "--pg-port")
    root = Path(root).resolve()
    pg = _prepare_pg_dir(root)
    data, pwfile = pg / "data", pg / "password"
    if not (data / "PG_VERSION").exists():
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        _run(
            _as_postgres(
                [initdb, "-D", str(data), "-U", DB, f"--pwfile={pwfile}", "--auth=scram-sha-256"]
                + ["-E", "UTF8", "--no-instructions"]
            ),
            "initdb",
        )
        with open(data / "postgresql.conf", "a") as conf:  # TCP on loopback only, no socket file
            conf.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    password = pwfile.read_text().strip()
    if (data / "postmaster.pid").exists():
        raise StoreError(
            f"a PostgreSQL server already runs on {data} (or crashed: see {pg / 'server.log'}); "
            f"stop it with: pg_ctl -D {data} stop"
        )
    start = [pg_ctl, "-D", str(data), "-l", str(pg / "server.log"), "-w", "-t", str(int(timeout))]
    _run(_as_postgres([*start, "-o", f"-p {port}", "start"]), "pg_ctl start", timeout=timeout + 10)
    server = Postgres(data, port, password)
    env = {**os.environ, "PGPASSWORD": password}
    try:
        out = subprocess.run(
            [createdb, "-h", HOST, "-p", str(port), "-U", DB, DB],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0 and "already exists" not in out.stderr:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            raise StoreError(f"createdb {DB} failed: {last[:300]}")
    except BaseException:  # Ctrl-C included: never leave a cluster running behind an error
        server.stop()
        raise
    return server


@dataclass
class MlflowServer:
    """A running ``mlflow server`` (its own process group); :meth:`stop` ends it."""

    proc: subprocess.Popen = field(repr=False)
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """The tracking URI teammates set as MLFLOW_TRACKING_URI."""
        return f"http://{HOST}:{self.port}"

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the server and its workers, SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)  # the group we created: server and its workers
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_mlflow_server(
    backend_uri: str,
    artifacts: Path,
    port: int,
    *,
    password: str | None = None,
    workers: int | None = None,
    log_path: Path | None = None,
    timeout: float = 180,
) -> MlflowServer:
    """Start ``mlflow server`` on 127.0.0.1:``port`` and wait until ``/health`` answers.

    Args:
        backend_uri: database URI of the run store.
        artifacts: folder the server stores (and serves) artifacts in.
        port: TCP port.
        password: database password, handed over as PGPASSWORD.
        workers: uvicorn workers; default min(4, CPUs): writes wait on the database, not the CPU.
        log_path: server output [``artifacts/../mlflow.log``].
        timeout: seconds to wait (the first start creates the schema: tens of seconds).

    Raises:
        StoreError: port busy, mlflow missing, or the server exited or did not answer in time.
    """
    check_port(port, "MLflow server", "--port")
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    if exe is None:
        raise StoreError("the mlflow command is not installed; pip install 'mlflow>=3.17,<3.19'")
    artifacts = Path(artifacts).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path = log_path or artifacts.parent / "mlflow.log"
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    cmd = [exe, "server", "--backend-store-uri", backend_uri]
    cmd += ["--artifacts-destination", str(artifacts), "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    # the GenAI job runner (a dozen worker processes) serves nothing m2bench logs
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = MlflowServer(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"mlflow server exited ({_last_line(log_path)}); see {log_path}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise StoreError(f"mlflow server did not answer within {timeout:.0f} s; see {log_path}")


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "no output"


@dataclass
class Team:
    """PostgreSQL plus the MLflow server in front of it; a context manager that stops both."""

    postgres: Postgres
    server: MlflowServer

    @property
    def url(self) -> str:
        """The tracking URI (MLFLOW_TRACKING_URI) of the server."""
        return self.server.url

    def stop(self) -> None:
        """Stop the MLflow server, then PostgreSQL."""
        try:
            self.server.stop()
        finally:
            self.postgres.stop()

    def __enter__(self) -> Team:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_team(
    data_dir: str | Path,
    port: int = 5000,
    pg_port: int | None = None,
    workers: int | None = None,
    timeout: float = 180,
) -> Team:
    """Start PostgreSQL and the MLflow server on 127.0.0.1 with everything under ``data_dir``.

    Raises:
        StoreError: see :func:`start_postgres` and :func:`start_mlflow_server`.
    """
    root = Path(data_dir).resolve()
    check_port(port, "MLflow server", "--port")  # before starting anything
    postgres = start_postgres(root, pg_port)
    try:
        server = start_mlflow_server(
            postgres.uri,
            root / "artifacts",
            port,
            password=postgres.password,
            workers=workers,
            log_path=root / "mlflow.log",
            timeout=timeout,
        )
    except BaseException:
        postgres.stop()
        raise
    return Team(postgres, server)
