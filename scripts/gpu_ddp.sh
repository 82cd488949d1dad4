#!/usr/bin/env bash
# Issue #9 part 4 on nvidia-h200-x2: DDP scaling efficiency. M2-BERT-80M (random init: this
# measures throughput, not accuracy) fine-tuned on real GLUE SST-2, the same command once as 1
# process on 1 GPU and once under torchrun on 2 GPUs with NCCL (global batch 256 both times, so
# each GPU gets 128 under DDP), then
# efficiency = tokens/s on 2 GPUs / (2 x tokens/s on 1 GPU) from each run's
# perf/train_tokens_per_s (throughput counts the global batch). Prints one CSV row per run and
# writes $OUT/ddp_scaling.csv. Prepare with scripts/prepare_gpu_carry.sh; carry
# [".gpu_carry/kit_small.tar.xz", ".gpu_carry/glue.tgz"]; run as `M2BENCH_GIT_SHA=<commit> M2BENCH_GIT_DIRTY=false bash scripts/gpu_ddp.sh [steps]`.
set -uo pipefail
steps=${1:-60}
mkdir -p /tmp/glue
source scripts/gpu_env.sh
tar -xzf .gpu_carry/glue.tgz -C /tmp/glue
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
args=(run --task glue:sst2 --data-dir /tmp/glue --model m2_bert_80m --init random
      --max-steps $steps task.batch_size=256 --no-progress)
timeout 110 python3 -m m2bench "${args[@]}" --out $OUT/one > $OUT/ddp_one.log 2>&1
echo "1 GPU exit $?"
timeout 110 torchrun --nproc-per-node 2 -m m2bench "${args[@]}" --out $OUT/two > $OUT/ddp_two.log 2>&1
echo "2 GPUs exit $?"
python3 - "$steps" <<'PY'
import json, sys, glob, os
out = os.environ["OUT"]
rows = []
for n, d in ((1, "one"), (2, "two")):
    files = glob.glob(f"{out}/{d}/glue/m2_bert_80m/metrics.json")
    if not files:
        print(f"{n} GPU(s): no metrics"); continue
    m = json.load(open(files[0]))
    rows.append((n, m["perf/train_tokens_per_s"], m["perf/train_samples_per_s"],
                 m.get("sst2/accuracy", m.get("glue_score")), m.get("sst2/n_eval")))
with open(f"{out}/ddp_scaling.csv", "w") as f:
    f.write("gpus,train_tokens_per_s,train_samples_per_s,sst2_accuracy,n_eval,steps\n")
    for r in rows:
        f.write(",".join(str(v) for v in (*r, sys.argv[1])) + "\n")
print(open(f"{out}/ddp_scaling.csv").read())
if len(rows) == 2:
    print(f"scaling efficiency {rows[1][1] / (2 * rows[0][1]):.3f}")
PY
tail -5 $OUT/ddp_two.log
