#!/usr/bin/env bash
# Issue #4 GPU parity: every kernel test file on CUDA (the same tests CI runs under
# TRITON_INTERPRET=1, here compiled for the GPU, including their bf16 cases) plus the CUDA-only
# tests: tests/test_gpu_kernels.py (each kernel against its PyTorch twin in fp32 and bf16, odd
# widths, batch 1, lengths at block boundaries) and tests/test_gpu.py (oracle parity, whole-model
# bf16 vs fp32 at L = 4096). Log in $OUT/gpu_tests.log. Carry [".gpu_carry/kit_small.tar.xz"];
# run as `bash scripts/gpu_tests.sh` (limit: GPU_TESTS_LIMIT seconds, default 400).
set -uo pipefail
source scripts/gpu_env.sh
timeout ${GPU_TESTS_LIMIT:-400} python3 -m pytest -q -rs -p no:cacheprovider \
  tests/test_gpu_kernels.py tests/test_kernels.py tests/test_kernels_mlp.py \
  tests/test_kernels_fftconv.py tests/test_gpu.py > $OUT/gpu_tests.log 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|FAILED|Error" $OUT/gpu_tests.log | tail -15
