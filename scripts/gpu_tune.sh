#!/usr/bin/env bash
# Issue #4 tuning on the H200: scripts/gpu_tune_probe.py (FFT convolution shapes/warps/tables,
# forced GLU and block-diagonal tile configs, short-conv tiles), output in $OUT/tune.txt.
# Carry [".gpu_carry/kit_small.tar.xz"].
set -uo pipefail
mkdir -p /tmp/m2kit
python3 -c "import tarfile; tarfile.open('.gpu_carry/kit_small.tar.xz').extractall('/tmp/m2kit', filter='data')"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site /tmp/m2kit/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu \
  PYTHONUNBUFFERED=1
timeout 540 python3 scripts/gpu_tune_probe.py 2>&1 | tee $OUT/tune.txt | grep -v "^$" | tail -80
