#!/usr/bin/env bash
# On the H200 device (see ../shared/gpu/README.md): GPU tests, then LoCoV1 on the bundled sample
# with the M2-BERT retrieval encoders (random init: no weights reach the device, so these runs
# measure throughput and the CUDA path, not quality) and BM25. Results land in $OUT.
# Call with carry [".whl"] after `../shared/gpu/fetch_wheels.sh --pack`.
set -euo pipefail
python3 -c "import tarfile; tarfile.open('.whl/kit.tar.xz').extractall('/tmp/whl', filter='data')"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site /tmp/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow.db \
  HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu.py 2>&1 | tee $OUT/gpu_tests.log || true
python3 cli.py run --task locov1 --sample --no-progress --out $OUT/runs --init random \
  --model bm25 --model m2_bert_80m_2k_retrieval --model m2_bert_80m_8k_retrieval \
  --model m2_bert_80m_32k_retrieval --batch-size 4 2>&1 | tee $OUT/locov1_sample.log
python3 cli.py leaderboard --include-sample --out $OUT/leaderboard_gpu.csv --plot
tar czf $OUT/runs.tgz -C $OUT runs && rm -rf $OUT/runs
