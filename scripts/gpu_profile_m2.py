"""Where M2-BERT-80M's forward time goes on a GPU (torch.profiler, top CUDA kernels).

Usage on the device: PYTHONPATH=$PWD python3 scripts/gpu_profile_m2.py [L] [kernel] > profile.txt
Prints the kernels sorted by total CUDA time over 3 forward passes of 65,536 tokens in bf16.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from m2bench.registry import create_model

seq_len = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
kernel = sys.argv[2] if len(sys.argv) > 2 else "torch"
model = create_model("m2_bert_80m", max_len=seq_len, kernel=kernel).cuda().eval()
ids = torch.randint(1000, 29000, (65536 // seq_len, seq_len), device="cuda")
batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def step() -> None:
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.hidden_states(batch)


for _ in range(3):
    step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
print(f"m2_bert_80m L={seq_len} batch={ids.shape[0]} kernel={kernel}, 3 forward passes, bf16")
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
