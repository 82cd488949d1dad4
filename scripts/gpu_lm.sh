#!/usr/bin/env bash
# Causal-LM proof on the H200 device (issue: M2-GPT and GPT baselines): m2_gpt_20m (19.3M params)
# against gpt_20m (GPT-2-style, 19.4M) trained on the same tokens of the bundled stand-in text
# (`--sample`: tinyshakespeare first 90% for training; validation = its last 10%; test =
# WikiText-2 raw test), seq_len 256, batch 32, AdamW 6e-4, cosine, bf16; two budgets (150 and 450
# steps = ~4.5 and ~14 epochs; --epochs 1000 lets --max-steps decide). Prints validation/test perplexity, tokens/s and MFU per run.
# Prepare with scripts/prepare_gpu_carry.sh; carry [".gpu_carry/kit_small.tar.xz"]; call as
# `M2BENCH_GIT_SHA=<commit> M2BENCH_GIT_DIRTY=false bash scripts/gpu_lm.sh`.
set -euo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import zstandard" 2>/dev/null || echo "zstandard not installed (not needed for --sample)"
for steps in 150 450; do
  for m in m2_gpt_20m gpt_20m; do
    timeout 200 python3 cli.py run --task pile --sample --model $m --max-steps $steps --epochs 1000 \
      task.seq_len=256 task.batch_size=32 model.dropout=0.1 --batch-size 64 \
      --out $OUT/runs_$steps --no-progress 2>&1 | tee $OUT/lm_${m}_${steps}.log \
      || echo "pile $m $steps exited non-zero"
  done
done
python3 cli.py leaderboard --task pile --include-sample --out $OUT/leaderboard_pile.csv
for f in $OUT/runs_*/pile/*/metrics.json; do
  d=$(dirname $f); cp $f $OUT/metrics_$(basename $d)_$(basename $(dirname $(dirname $d))).json
done
rm -rf $OUT/runs_*/pile/*/model.pt $OUT/runs_*/pile/*/checkpoints
