#!/usr/bin/env bash
# More time-series runs on the H200 device, six processes at once (each with its own MLflow store):
#   ltf_a, ltf_b, ltf_c: ETTh1 96 -> 96, --protocol tslib: Informer, Autoformer, Mamba, S-Mamba
#     with their JustDense arms, and the M2 (Monarch) arms of PatchTST, iTransformer, Transformer;
#   impute: ETTh1, mask 25%, --protocol clean (fixed test masks), TSLib's imputation sizes
#     (d_model 128, d_ff 128, 1 layer; batch 16, lr 1e-3);
#   classify: JapaneseVowels (bundled), both protocols, TSLib's sizes (d_model 128, d_ff 256);
#   short: the M1-Yearly stand-in (bundled; not M4), clean.
# Prepare with scripts/prepare_gpu_carry.sh; carry [".gpu_carry/kit_small.tar.xz"]; call as
# `M2BENCH_GIT_SHA=<commit> M2BENCH_GIT_DIRTY=false bash scripts/gpu_ts_more.sh`.
set -euo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
one() {  # one run: <group> <log name> <args...>
  local g=$1 name=$2
  shift 2
  MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow_$g.db timeout 500 python3 cli.py run "$@" \
    precision=fp32 --out $OUT/runs_$g --no-progress > $OUT/${g}_$name.log 2>&1 \
    || echo "$g $name exited non-zero"
}
ltf() {  # <group> <models...>
  local g=$1
  shift
  for m in "$@"; do
    extra=()
    [[ $m == s_mamba* ]] && extra=("task.lr=7e-5")  # TSLib/JustDense S-Mamba ETTh1-96
    one $g $m --task ts-forecast:ETTh1 --data-dir tasks/data/ts --model $m --pred-len 96 \
      --protocol tslib "${extra[@]}"
  done
}
impute() {
  for m in patchtst patchtst_dense itransformer itransformer_dense; do
    one impute $m --task ts-impute:ETTh1 --data-dir tasks/data/ts --model $m \
      model.d_model=128 model.d_ff=128 model.e_layers=1
  done
  one impute dlinear --task ts-impute:ETTh1 --data-dir tasks/data/ts --model dlinear
}
classify() {
  for p in clean tslib; do
    for m in patchtst patchtst_dense itransformer itransformer_dense; do
      one classify ${m}_$p --task ts-classify:JapaneseVowels --sample --model $m --protocol $p \
        --max-steps 100000 \
        model.d_model=128 model.d_ff=256
    done
    one classify dlinear_$p --task ts-classify:JapaneseVowels --sample --model dlinear --protocol $p \
      --max-steps 100000
  done
}
short() {
  for m in dlinear itransformer itransformer_dense; do
    one short $m --task ts-short:M1-Yearly --sample --model $m --max-steps 100000
  done
}
ltf ltf_a informer informer_dense autoformer autoformer_dense &
ltf ltf_b mamba mamba_dense s_mamba s_mamba_dense &
ltf ltf_c patchtst_monarch itransformer_monarch transformer_monarch &
impute &
classify &
short &
wait
for g in ltf_a ltf_b ltf_c impute classify short; do
  MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow_$g.db python3 cli.py leaderboard --include-sample \
    --out $OUT/leaderboard_$g.csv > /dev/null || echo "leaderboard $g failed"
done
python3 - <<'EOF'
import glob, os
import pandas as pd
out = os.environ["OUT"]
for f in sorted(glob.glob(f"{out}/leaderboard_*.csv")):
    lb = pd.read_csv(f)
    cols = [c for c in lb.columns if c in ("task", "model", "setting", "score", "mse", "mae",
            "accuracy", "smape", "owa", "params_m", "perf/train_samples_per_s")]
    print(os.path.basename(f)); print(lb[cols].to_string(index=False))
EOF
rm -rf $OUT/runs_*/*/*/model.pt $OUT/runs_*/*/*/checkpoints
# the device returns at most 8 files: the six tables, and everything else in one archive
(cd $OUT && tar czf logs.tgz *.log *.db runs_* && rm -rf *.log *.db runs_*)
