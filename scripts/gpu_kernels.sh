#!/usr/bin/env bash
# Issue #4 on the H200: the CUDA parity tests of every kernel, kernel timings against the copy
# bandwidth (scripts/gpu_kernel_probe.py), the whole-model bf16-vs-fp32 check
# (scripts/gpu_model_check.py), `m2bench bench` of M2-BERT-80M with kernel=triton against
# Hugging Face BERT-base (SDPA, eager, and FlashAttention-2 when flash-attn is installed) in the
# same run, appended to the committed
# results/bench_nvidia_h200.csv (+ .png), and a profile at L=4096. Logs in $OUT/logs.tgz.
# Carry [".gpu_carry/kit_small.tar.xz"] (scripts/prepare_gpu_carry.sh); run as
# `M2BENCH_GIT_SHA=<commit> M2BENCH_GIT_DIRTY=false bash scripts/gpu_kernels.sh`.
set -uo pipefail
source scripts/gpu_env.sh
# the stages to run (default all; e.g. M2BENCH_STAGES="tests probe check profile" then "bench"
# to split the work over two device calls)
stages=" ${M2BENCH_STAGES:-tests probe check bench profile} "
mkdir -p $OUT/logs
if [[ $stages == *" tests "* ]]; then
  bash scripts/gpu_tests.sh; mv $OUT/gpu_tests.log $OUT/logs/
fi
if [[ $stages == *" probe "* ]]; then
  timeout 100 python3 scripts/gpu_kernel_probe.py > $OUT/logs/probe.txt 2>&1; tail -22 $OUT/logs/probe.txt
fi
if [[ $stages == *" check "* ]]; then
  timeout 120 python3 scripts/gpu_model_check.py 2>&1 | tee $OUT/logs/model_check.txt | tail -2
fi
if [[ $stages == *" bench "* ]]; then
  csv=$OUT/bench_nvidia_h200.csv
  cp results/bench_nvidia_h200.csv $csv
  fa2=""  # FlashAttention-2 BERT too when flash-attn is installed on the machine
  python3 -c "import flash_attn" 2>/dev/null && fa2="--model bert_base_fa2"
  timeout 300 python3 cli.py bench --model m2_bert_80m --model bert_base_sdpa $fa2 \
    --seq-len 512,1024,2048,4096,8192,16384,32768 --mode fwd,fwdbwd --warmup 2 --repeats 5 \
    --out $csv --append --no-progress model.kernel=triton > $OUT/logs/bench.log 2>&1
  timeout 100 python3 cli.py bench --model bert_base_eager --seq-len 512,1024,2048,4096,8192 \
    --mode fwd --warmup 2 --repeats 5 --out $csv --append --no-progress >> $OUT/logs/bench.log 2>&1
  grep -E "^(m2_bert_80m|bert_base|model)" $OUT/logs/bench.log | tail -12
fi
if [[ $stages == *" profile "* ]]; then
  timeout 60 python3 scripts/gpu_profile_m2.py 4096 triton > $OUT/logs/profile_triton_L4096.txt 2>&1
fi
tar -C $OUT -czf $OUT/logs.tgz logs && rm -rf $OUT/logs
