#!/usr/bin/env bash
# Team tracking in plain shell: PostgreSQL + an MLflow tracking server on 127.0.0.1, until Ctrl-C.
# Same layout as `m2bench server --data-dir DIR` (either can restart what the other created).
#
#   scripts/mlflow_server.sh DIR [MLFLOW_PORT=5000] [PG_PORT=5433]
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000     # in every shell that runs m2bench
#
# The embedded SQLite store (./mlflow.db) takes one writer at a time: concurrent runs wait, retry
# and may fail with "locked". Use this server for several concurrent runs or several people.
# Needs Debian's PostgreSQL (apt-get install postgresql) and the venv (.venv, with psycopg2).
# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user, and DIR
# must lie where that user can enter (e.g. /srv/m2bench or /tmp/m2bench, not under /root).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [MLFLOW_PORT] [PG_PORT]" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1" && dir="$(cd "$1" && pwd)"
port="${2:-5000}"
pg_port="${3:-5433}"
initdb="$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1)" || true
pgbin="$(dirname "$(readlink -f "${initdb:-/nonexistent/initdb}")")"   # one version's programs
mlflow="$root/.venv/bin/mlflow"
[ -x "$pgbin/initdb" ] || { echo "error: PostgreSQL's initdb not found; apt-get install postgresql" >&2; exit 2; }
[ -x "$mlflow" ] || { echo "error: $mlflow missing; run scripts/bootstrap.sh" >&2; exit 2; }

as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
pg="$dir/pg"
mkdir -p "$pg" "$dir/artifacts"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$pg"
chmod 700 "$pg"

if [ ! -f "$pg/data/PG_VERSION" ]; then                       # first start: create the cluster
  (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$pg/password")
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg/password"
  (cd / && "${as_pg[@]}" "$pgbin/initdb" -D "$pg/data" -U m2bench --pwfile="$pg/password" \
    --auth=scram-sha-256 -E UTF8 --no-instructions >/dev/null)
  printf "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" >> "$pg/data/postgresql.conf"
fi
export PGPASSWORD="$(cat "$pg/password")"
(cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -o "-p $pg_port" start)
stop_pg() { (cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -m fast -w stop) || true; }
trap stop_pg EXIT
if ! err="$("$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U m2bench m2bench 2>&1)"; then
  case "$err" in *"already exists"*) ;; *) echo "error: createdb: $err" >&2; exit 2 ;; esac
fi

echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$port"
# Ctrl-C stops mlflow (foreground), then the EXIT trap stops PostgreSQL; the GenAI job runner
# (a dozen worker processes) serves nothing m2bench logs
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
"$mlflow" server --backend-store-uri "postgresql+psycopg2://m2bench@127.0.0.1:$pg_port/m2bench" \
  --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$port" \
  --workers "$(( $(nproc) < 4 ? $(nproc) : 4 ))" || true
