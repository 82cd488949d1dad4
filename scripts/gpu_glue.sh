#!/usr/bin/env bash
# GLUE proof on the H200 device: all-MiniLM-L6-v2 fine-tuned with the Transformer-baseline recipe
# on SST-2, RTE, CoLA, STS-B and MRPC (real GLUE files), evaluated on dev.
# Prepare with scripts/prepare_gpu_carry.sh; call with carry [".gpu_carry"], as
# `M2BENCH_GIT_SHA=<commit> bash scripts/gpu_glue.sh` (the copy on the device has no .git).
set -euo pipefail
mkdir -p /tmp/glue /tmp/minilm
source scripts/gpu_env.sh
cp -r .gpu_carry/minilm/. /tmp/minilm/
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('/tmp/minilm/model.safetensors.xz'), open('/tmp/minilm/model.safetensors', 'wb'))"
rm /tmp/minilm/model.safetensors.xz
tar -xzf .gpu_carry/glue.tgz -C /tmp/glue
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 cli.py run --task glue --data-dir /tmp/glue --model minilm_l6 --checkpoint /tmp/minilm \
  --out $OUT/runs --no-progress --batch-size 256 "$@" 2>&1 | tee $OUT/glue_minilm.log
python3 cli.py leaderboard --task glue --out $OUT/leaderboard_glue.csv
cp $OUT/runs/glue/minilm_l6/metrics.json $OUT/metrics_glue_minilm.json
tar czf $OUT/runs.tgz -C $OUT runs && rm -rf $OUT/runs
