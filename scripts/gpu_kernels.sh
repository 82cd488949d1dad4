#!/usr/bin/env bash
# On the H200 device: the Triton kernel parity tests on CUDA (tests/test_kernels.py and
# tests/test_gpu.py), then M2-BERT-80M with kernel=triton (Triton block-diagonal MLP and fused
# gating around the PyTorch FFT convolution; the Monarch multiply is tested, no model uses it)
# added to the committed bench CSV. Carry [".gpu_carry"]
# (scripts/prepare_gpu_carry.sh); run as `M2BENCH_GIT_SHA=<commit> bash scripts/gpu_kernels.sh`.
set -euo pipefail
mkdir -p /tmp/m2kit
python3 -c "import tarfile; tarfile.open('.gpu_carry/kit_small.tar.xz').extractall('/tmp/m2kit', filter='data')"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site /tmp/m2kit/*.whl
export PYTHONPATH=/tmp/site:$PWD MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow.db \
  HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
python3 -m pytest -q -s -p no:cacheprovider tests/test_kernels.py tests/test_gpu.py 2>&1 \
  | tee $OUT/gpu_kernel_tests.log || true
cp results/bench_nvidia_h200.csv $OUT/bench_nvidia_h200.csv
python3 cli.py bench --model m2_bert_80m --seq-len 512,1024,2048,4096,8192,16384,32768 \
  --mode fwd,fwdbwd --warmup 2 --repeats 5 --out $OUT/bench_nvidia_h200.csv --append \
  --no-progress model.kernel=triton 2>&1 | tee $OUT/bench_triton.log
