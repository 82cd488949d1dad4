#!/usr/bin/env bash
# Throughput of M2-BERT-80M (PyTorch path, no Triton kernels yet) against Hugging Face BERT-base
# (SDPA and eager attention) on the H200, as in the M2 throughput protocol: bf16, 65,536 tokens
# per batch, 12 layers, width 768. Writes results/bench_nvidia_h200.csv (+ .png) under $OUT.
# Call with carry [".gpu_carry"] (scripts/prepare_gpu_carry.sh), as
# `M2BENCH_GIT_SHA=<commit> bash scripts/gpu_bench.sh` (the copy on the device has no .git).
set -euo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
csv=$OUT/bench_nvidia_h200.csv
python3 cli.py bench --model m2_bert_80m --model bert_base_sdpa \
  --seq-len 512,1024,2048,4096,8192,16384,32768 --mode fwd,fwdbwd --warmup 2 --repeats 5 \
  --out $csv --no-progress 2>&1 | tee $OUT/bench.log
python3 cli.py bench --model bert_base_eager --seq-len 512,1024,2048,4096,8192 --mode fwd \
  --warmup 2 --repeats 5 --out $csv --append --no-progress 2>&1 | tee -a $OUT/bench.log
