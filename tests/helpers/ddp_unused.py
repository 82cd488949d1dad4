"""Run under torchrun (2 gloo ranks): a model with a parameter no step uses (like a Hugging Face
encoder's pooler under CLS pooling) trains 3 steps through m2bench.distributed.wrap; prints
``OK <rank> <weight checksum>`` (the ranks must agree: their gradients were averaged)."""

from __future__ import annotations

import torch

from m2bench import distributed


class WithUnused(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Linear(4, 1)
        self.unused = torch.nn.Linear(4, 4)  # trainable, never in the graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def main() -> None:
    st = distributed.init("cpu")
    torch.manual_seed(0)
    model = WithUnused()
    net = distributed.wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        x = torch.full((2, 4), float(st.rank + step + 1))
        net(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    print(f"OK {st.rank} {model.used.weight.sum().item():.6f}", flush=True)


if __name__ == "__main__":
    main()
