"""Run under torchrun: checkpoint save/restore of m2bench.loop with DDP or FSDP (argv[1]).

Rank 0 writes the full weights and optimizer state; a fresh sharded model restored from them must
hold the same full weights. Prints one line ``OK <sum of weights>`` per rank.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import torch

faulthandler.dump_traceback_later(120, exit=True)
os.environ["M2BENCH_PARALLEL"] = sys.argv[1]
folder = Path(sys.argv[2])

from m2bench import distributed, loop  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def full_sum(model: torch.nn.Module) -> float:
    from torch.distributed.checkpoint import state_dict as dcp

    sd = dcp.get_model_state_dict(model, options=dcp.StateDictOptions(full_state_dict=True))
    return float(sum(v.double().sum() for v in sd.values()))


distributed.init("cpu")
torch.manual_seed(0)
model = Net()
net = distributed.wrap(model)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(2):
    net(torch.randn(4, 8)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
loop._save(folder, model, opt, loop.TrainResult(steps=2, micro_batches=2), 0, 2)
distributed.barrier()
torch.manual_seed(1)  # different initial weights
fresh = Net()
distributed.wrap(fresh)
fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)
result = loop.TrainResult(steps=0, micro_batches=0)
assert loop._restore(folder, fresh, fresh_opt, result) == (0, 2) and result.steps == 2
expect, got = full_sum(model), full_sum(fresh)
assert abs(expect - got) < 1e-6, (expect, got)
print(f"OK {got:.6f}", flush=True)
torch.distributed.destroy_process_group()
