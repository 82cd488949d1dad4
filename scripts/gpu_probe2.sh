#!/usr/bin/env bash
# Issue #4: the Triton FFT convolution on the GPU (scripts/gpu_fftconv_probe.py), the CUDA
# kernel tests, and M2-BERT-80M kernel=triton timings + profile. Carry [".gpu_carry/kit_small.tar.xz"].
set -euo pipefail
source scripts/gpu_env.sh
mkdir -p $OUT/logs
python3 scripts/gpu_fftconv_probe.py 2>&1 | tee $OUT/logs/fftconv_probe.txt
python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_gpu.py \
  > $OUT/logs/gpu_kernel_tests.log 2>&1 || true
tail -3 $OUT/logs/gpu_kernel_tests.log
python3 cli.py bench --model m2_bert_80m --model bert_base_sdpa --seq-len 512,2048,4096 --mode fwd \
  --warmup 2 --repeats 5 --out $OUT/logs/bench.csv --no-progress model.kernel=triton \
  > $OUT/logs/bench.log 2>&1 || true
cut -d, -f1-6 $OUT/logs/bench.csv
python3 scripts/gpu_profile_m2.py 4096 triton > $OUT/logs/profile_triton_L4096.txt 2>&1 || true
grep -v "^ *$" $OUT/logs/profile_triton_L4096.txt | cut -c1-60,150-230 | head -32
tar -C $OUT -czf $OUT/logs.tgz logs && rm -rf $OUT/logs
