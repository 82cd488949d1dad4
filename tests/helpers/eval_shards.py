"""Run under torchrun (gloo): Pile's evaluation sharded over the ranks scores every token once.

Prints ``OK <rank> <nats> <count>`` on each rank; the caller compares with a single-process run.
The ranks share one stdout, so their lines may interleave: the caller matches them by pattern.
"""

from __future__ import annotations

import faulthandler
from types import SimpleNamespace

import numpy as np
import torch

faulthandler.dump_traceback_later(120, exit=True)

from m2bench import distributed  # noqa: E402
from m2bench.registry import create_model  # noqa: E402
from tasks.pile import evaluate_stream  # noqa: E402

distributed.init("cpu")
torch.manual_seed(0)
model = create_model("gpt_tiny").eval()
stream = np.random.default_rng(0).integers(0, 50257, size=1000)  # 1001 tokens: 16 windows of 64
ctx = SimpleNamespace(device=torch.device("cpu"), precision="fp32")
nats, count, _ = evaluate_stream(model, stream, 64, 4, ctx)
print(f"OK {distributed.state().rank} {nats:.6f} {count}", flush=True)
if distributed.state().active:
    torch.distributed.destroy_process_group()
