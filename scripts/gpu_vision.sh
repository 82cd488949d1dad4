#!/usr/bin/env bash
# Vision proof on the H200 device (issue: M2-ViT and timm ViTs):
# 1. MNIST, bundled protocol (tasks/data/mnist: train = mnist_5k + even test images, eval = odd test
#    images): m2_vit_tiny, vit_tiny (equal parameters) and dense_vit_tiny trained with the task's
#    recipe (40 epochs, batch 128, AdamW 1e-3, cosine), top-1 and images/s side by side.
# 2. ImageNet pipeline at 224 px: the bundled 1,000-image sample evaluated as built (random init)
#    with m2_vit_b16, vit_base_patch16_224 and vit_small_patch16_224: inference images/s only.
# 3. ImageNet recipe at 224 px (RandAugment, mixup/cutmix, random erasing; batch 128, no
#    accumulation): 60 training steps on the same 1,000 images laid out as an ImageFolder
#    (train = val; a throughput check of the whole pipeline, not a quality result).
# Prepare with scripts/prepare_gpu_carry.sh; call with carry [".gpu_carry/kit_small.tar.xz"], as
# `M2BENCH_GIT_SHA=<commit> M2BENCH_GIT_DIRTY=false bash scripts/gpu_vision.sh [all|mnist|imagenet]`
# (the copy there has no usable .git, so it states its commit).
set -euo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, torchvision; print('torch', torch.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__)"
part=${1:-all}
if [ "$part" != mnist ]; then
python3 cli.py run --task imagenet --sample --model m2_vit_b16 --model vit_base_patch16_224 \
  --model vit_small_patch16_224 --init random --batch-size 250 --out $OUT/runs --no-progress \
  2>&1 | tee $OUT/imagenet_sample.log || echo "imagenet sample exited non-zero"
fi
if [ "$part" != imagenet ]; then
for m in m2_vit_tiny vit_tiny dense_vit_tiny; do  # one call each: a finished model stays recorded
  python3 cli.py run --task mnist --data-dir tasks/data/mnist --model $m --batch-size 500 \
    --out $OUT/runs --no-progress 2>&1 | tee $OUT/mnist_$m.log || echo "mnist $m exited non-zero"
  cp $OUT/runs/mnist/$m/metrics.json $OUT/metrics_mnist_$m.json || true
done
python3 cli.py leaderboard --task mnist --out $OUT/leaderboard_mnist.csv
fi
if [ "$part" != mnist ]; then
mkdir -p /tmp/inet
python3 - <<'PY'
import csv, os
rows = list(csv.DictReader(open("tasks/data/imagenet_sample/labels_1000.csv")))
for split in ("train", "val"):
    for r in rows:
        os.makedirs(f"/tmp/inet/{split}/{r['wnid']}", exist_ok=True)
        os.symlink(os.path.abspath(f"tasks/data/imagenet_sample/images/{r['file']}"),
                   f"/tmp/inet/{split}/{r['wnid']}/{r['file'][:-4]}.JPEG")
PY
python3 cli.py run --task imagenet --data-dir /tmp/inet --model m2_vit_b16 \
  --model vit_base_patch16_224 --init random --max-steps 60 task.accum=1 task.workers=14 \
  --batch-size 250 --out $OUT/runs_train --no-progress 2>&1 | tee $OUT/imagenet_train224.log \
  || echo "imagenet training check exited non-zero"
python3 cli.py leaderboard --task imagenet --include-sample --out $OUT/leaderboard_imagenet.csv
fi
tar czf $OUT/runs.tgz -C $OUT $(cd $OUT && ls -d runs*) && rm -rf $OUT/runs $OUT/runs_train
