#!/usr/bin/env bash
# Create ./.venv with m2bench and its dependencies, once; later calls return at once.
# Reinstalls when pyproject.toml changes. M2BENCH_TORCH overrides the torch requirement
# (default: torch 2.14.1 with torchvision 0.29.1 from the local wheel files on machines without an
# NVIDIA GPU, any recent torch otherwise; timm needs torchvision, which needs its matching torch).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.m2bench-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "m2bench: installing into $venv (first use; a few minutes)..." >&2
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "m2bench needs Python >= 3.11 (found $(python3 --version))" >&2; exit 1; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  if [ -n "${M2BENCH_TORCH:-}" ]; then torch="$M2BENCH_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1; then torch="torch>=2.4 torchvision"
  else torch="torch==2.14.1 torchvision==0.29.1"; fi
  "${pip[@]}" $torch 2> >(grep -v "is ignored: it is neither" >&2)
fi
"${pip[@]}" -e "$root[dev,vision,lm]" 2> >(grep -v -e "is ignored: it is neither" -e "^ *$" >&2)
# lm-eval has no plugin hook for models: a .pth line lets `lm_eval --model m2bench` find the adapter
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import _m2bench_lm_eval_hook" > "$site/m2bench-lm-eval.pth"
echo "$want" > "$stamp"
echo "m2bench: installed ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
