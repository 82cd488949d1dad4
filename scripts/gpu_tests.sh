#!/usr/bin/env bash
# Issue #4 GPU parity: every kernel test file on CUDA (the same tests CI runs under
# TRITON_INTERPRET=1, here compiled for the GPU, including their bf16 cases) plus the CUDA-only
# tests: tests/test_gpu_kernels.py (each kernel against its PyTorch twin in fp32 and bf16, odd
# widths, batch 1, lengths at block boundaries) and tests/test_gpu.py (oracle parity, whole-model
# bf16 vs fp32 at L = 4096). Three pytest processes share the GPU (the time goes to Triton
# compiling on the CPU). Log in $OUT/gpu_tests.log. Carry [".gpu_carry/kit_small.tar.xz"];
# run as `bash scripts/gpu_tests.sh` (limit: GPU_TESTS_LIMIT seconds, default 400).
set -uo pipefail
source scripts/gpu_env.sh
limit=${GPU_TESTS_LIMIT:-400}
run() {  # $1: log name, then the test files
  local log=$OUT/gpu_tests_$1.log; shift
  timeout $limit python3 -m pytest -q -rfs -p no:cacheprovider "$@" > $log 2>&1
  echo "exit $? ($*)" >> $log
}
run a tests/test_gpu_kernels.py &
run b tests/test_kernels.py tests/test_kernels_mlp.py &
run c tests/test_kernels_fftconv.py tests/test_gpu.py &
wait
cat $OUT/gpu_tests_{a,b,c}.log > $OUT/gpu_tests.log && rm $OUT/gpu_tests_{a,b,c}.log
grep -E "^(exit|FAILED|ERROR)|passed|failed" $OUT/gpu_tests.log | tail -30
