#!/usr/bin/env bash
# Issue #4, first probe of a session: CUDA parity tests of the kernels, ceilings and kernel
# timings (scripts/gpu_kernel_probe.py), and where M2-BERT-80M's forward time goes with
# kernel=triton (scripts/gpu_profile_m2.py). Carry [".gpu_carry/kit_small.tar.xz"].
set -euo pipefail
source scripts/gpu_env.sh
mkdir -p $OUT/logs
python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_gpu.py \
  > $OUT/logs/gpu_kernel_tests.log 2>&1 || true
tail -5 $OUT/logs/gpu_kernel_tests.log
python3 scripts/gpu_profile_m2.py 4096 triton > $OUT/logs/profile_triton_L4096.txt 2>&1 || true
python3 scripts/gpu_kernel_probe.py 2>&1 | tee $OUT/logs/probe.txt
grep -v "^ *$" $OUT/logs/profile_triton_L4096.txt | cut -c1-70,150-220 | head -40
tar -C $OUT -czf $OUT/logs.tgz logs && rm -rf $OUT/logs
