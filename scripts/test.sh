#!/usr/bin/env bash
# The test suite (pytest; CPU, offline). Installs into ./.venv on first use. Extra args go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAX_PLATFORMS=cpu TRITON_INTERPRET=1
exec "$root/.venv/bin/python" -m pytest -q "$@"
