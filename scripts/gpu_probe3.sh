#!/usr/bin/env bash
# Issue #4: CUDA kernel tests, kernel timings (block-diagonal, GLU, LayerNorm), the whole-model
# error check, M2-BERT-80M kernel=triton vs BERT SDPA over L, and a profile at 4096.
# Carry [".gpu_carry/kit_small.tar.xz"].
set -uo pipefail
source scripts/gpu_env.sh
mkdir -p $OUT/logs
timeout 120 python3 scripts/gpu_kernel_probe.py 2>&1 | tee $OUT/logs/probe.txt | head -20
timeout 150 python3 scripts/gpu_model_check.py 2>&1 | tee $OUT/logs/model_check.txt | tail -4
timeout 200 python3 cli.py bench --model m2_bert_80m --model bert_base_sdpa \
  --seq-len 512,1024,2048,4096,8192,16384,32768 --mode fwd --warmup 2 --repeats 5 \
  --out $OUT/logs/bench.csv --no-progress model.kernel=triton > $OUT/logs/bench.log 2>&1
cut -d, -f1-6 $OUT/logs/bench.csv; tail -3 $OUT/logs/bench.log
timeout 60 python3 scripts/gpu_profile_m2.py 4096 triton > $OUT/logs/profile_triton_L4096.txt 2>&1
grep -v "^ *$" $OUT/logs/profile_triton_L4096.txt | cut -c1-60,150-230 | sed -n 4,30p
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_kernels_mlp.py \
  tests/test_gpu.py > $OUT/logs/gpu_kernel_tests.log 2>&1; tail -3 $OUT/logs/gpu_kernel_tests.log
tar -C $OUT -czf $OUT/logs.tgz logs && rm -rf $OUT/logs
