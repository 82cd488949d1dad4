#!/usr/bin/env bash
# Issue #4 tuning on the H200: scripts/gpu_tune_probe.py (FFT convolution shapes/warps/tables,
# forced GLU and block-diagonal tile configs, short-conv tiles), output in $OUT/tune.txt.
# Carry [".gpu_carry/kit_small.tar.xz"].
set -uo pipefail
source scripts/gpu_env.sh
timeout ${PROBE_LIMIT:-540} python3 scripts/gpu_tune_probe.py 2>&1 | tee $OUT/tune.txt | grep -v "^$" | tail -80
