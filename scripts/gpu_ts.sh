#!/usr/bin/env bash
# Time-series proof on the H200 device (issue: time-series analysis): ETTh1 (the bundled real file,
# read through --data-dir so that the full protocol runs), input 96 -> H in {96, 192, 336, 720},
# --protocol tslib, TSLib's recipe (Adam 1e-4, batch 32, <= 10 epochs, type1, patience 3) and
# TSLib's ETTh1 hyperparameters per model (PatchTST n_heads 2/8/8/16 by horizon), for PatchTST,
# iTransformer, Transformer and their JustDense (_dense) arms, plus DLinear. fp32 (TSLib runs
# without AMP). One process per horizon, concurrently on the one GPU, each with its own MLflow
# store (SQLite allows one writer); the per-horizon leaderboards are concatenated at the end.
# Prepare with scripts/prepare_gpu_carry.sh; carry [".gpu_carry/kit_small.tar.xz"]; call as
# `M2BENCH_GIT_SHA=<commit> M2BENCH_GIT_DIRTY=false bash scripts/gpu_ts.sh [models...]`.
set -euo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
MODELS=${*:-"dlinear patchtst patchtst_dense itransformer itransformer_dense transformer transformer_dense"}
declare -A HEADS=([96]=2 [192]=8 [336]=8 [720]=16)  # TSLib's ETTh1 PatchTST scripts
run_horizon() {
  local h=$1
  export MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow_$h.db
  for m in $MODELS; do
    extra=()
    [[ $m == patchtst* ]] && extra=("model.n_heads=${HEADS[$h]}")
    timeout 560 python3 cli.py run --task ts-forecast:ETTh1 --data-dir tasks/data/ts --model $m \
      --pred-len $h --protocol tslib --out $OUT/runs_$h --no-progress \
      precision=fp32 "${extra[@]}" > $OUT/ts_${m}_$h.log 2>&1 || echo "ETTh1 $m $h exited non-zero"
    tail -n 3 $OUT/ts_${m}_$h.log | head -n 2
  done
  python3 cli.py leaderboard --task ts-forecast --out $OUT/leaderboard_$h.csv > /dev/null
}
for h in 96 192 336 720; do run_horizon $h & done
wait
python3 - <<'EOF'
import glob, os
import pandas as pd
out = os.environ["OUT"]
frames = [pd.read_csv(f) for f in sorted(glob.glob(f"{out}/leaderboard_*.csv"))]
lb = pd.concat(frames, ignore_index=True)
lb.to_csv(f"{out}/ts_forecast_etth1_h200.csv", index=False)
cols = [c for c in ("model", "setting", "mse", "mae", "orig_mse", "params_m", "ETTh1/n_eval",
                    "perf/train_samples_per_s", "perf/infer_samples_per_s") if c in lb.columns]
print(lb[cols].to_string(index=False))
EOF
for f in $OUT/runs_*/ts-forecast/*/metrics.json; do
  d=$(dirname $f); cp $f $OUT/metrics_$(basename $d)_$(basename $(dirname $(dirname $d)) | cut -d_ -f2).json
done
rm -rf $OUT/runs_*/ts-forecast/*/model.pt $OUT/runs_*/ts-forecast/*/checkpoints
# the device returns at most 8 files: the tables, and everything else in one archive
(cd $OUT && tar czf logs.tgz *.log *.db metrics_*.json runs_* && rm -rf *.log *.db metrics_*.json runs_*)
