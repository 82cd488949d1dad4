"""The one training loop: schedules, checkpoints and resumption after an interruption."""

from __future__ import annotations

import math

import pytest
import torch

from m2bench import loop
from m2bench.errors import DataError


def _data(epoch: int):
    g = torch.Generator().manual_seed(100 + epoch)  # the same batches for the same epoch
    for _ in range(5):
        x = torch.randn(4, 3, generator=g)
        yield x, x.sum(1, keepdim=True)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))


def _loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


CFG = loop.TrainConfig(lr=1e-2, grad_accum=2, epochs=4, warmup_frac=0.2, schedule="cosine",
                       min_lr_frac=0.1, max_grad_norm=1.0)  # fmt: skip


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    n = 100
    f = [loop.lr_factor(CFG, s, n) for s in range(n + 1)]
    assert f[0] == pytest.approx(1 / 21) and f[19] == pytest.approx(20 / 21)  # 20 warm-up steps
    assert f[20] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert f[100] == pytest.approx(0.1) and all(
        a >= b for a, b in zip(f[20:], f[21:], strict=False)
    )


def test_interrupted_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(
    tmp_path,
):
    cpu = torch.device("cpu")
    straight = _model()
    full = loop.train(straight, _data, _loss, 5, CFG, device=cpu, progress=False)
    assert full.steps == 10  # 4 epochs x 5 micro-batches / 2 per step

    ckpt = loop.Checkpointing(tmp_path / "ckpt", every=3)
    interrupted = _model()

    class Stop(Exception):
        pass

    def stop_at_7(step, loss, lr):
        if step == 7:
            raise Stop

    with pytest.raises(Stop):  # killed after step 7: the last checkpoint is step 6
        loop.train(interrupted, _data, _loss, 5, CFG, device=cpu, progress=False,
                   on_step=stop_at_7, checkpointing=ckpt)  # fmt: skip
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["step"] == 6

    resumed = _model()  # a new process: fresh weights, then the checkpoint
    torch.manual_seed(12345)  # the checkpoint's RNG state must win over this
    ck = loop.Checkpointing(tmp_path / "ckpt", every=3, resume=True)
    again = loop.train(resumed, _data, _loss, 5, CFG, device=cpu, progress=False, checkpointing=ck)
    assert again.resumed_from == 6 and again.steps == 10
    assert again.losses == pytest.approx(full.losses)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_resume_without_a_checkpoint_starts_afresh_and_a_corrupt_one_is_refused(tmp_path):
    cpu = torch.device("cpu")
    ck = loop.Checkpointing(tmp_path, every=100, resume=True)
    out = loop.train(_model(), _data, _loss, 5, CFG, device=cpu, progress=False, checkpointing=ck)
    assert out.resumed_from == 0 and out.steps == 10 and (tmp_path / "last.pt").is_file()
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot resume from .*last.pt.*delete it"):
        loop.train(_model(), _data, _loss, 5, CFG, device=cpu, progress=False, checkpointing=ck)


def test_throughput_is_reported_every_n_steps():
    seen = []
    loop.train(_model(), _data, _loss, 5, CFG, device=torch.device("cpu"), progress=False,
               tokens=lambda b: b[0].numel(), batch_size=lambda b: len(b[0]), throughput_every=4,
               on_throughput=lambda s, sps, tps: seen.append((s, sps, tps)))  # fmt: skip
    assert [s for s, _, _ in seen] == [4, 8]
    assert all(sps > 0 and tps == pytest.approx(3 * sps) for _, sps, tps in seen)


def test_on_step_gets_the_lr_the_step_used():
    cfg = loop.TrainConfig(lr=3e-3, grad_accum=1, max_steps=5, warmup_frac=0.0)
    model, used, logged = _model(), [], []

    def factory(net, n_steps):
        opt, set_lr = loop.warmup_linear(cfg)(net, n_steps)
        step = opt.step

        def recording_step(*args, **kwargs):
            used.append(opt.param_groups[-1]["lr"])
            return step(*args, **kwargs)

        opt.step = recording_step
        return opt, set_lr

    loop.train(model, _data, _loss, 5, cfg, device=torch.device("cpu"), progress=False,
               optimizer=factory, on_step=lambda s, v, lr: logged.append(lr))  # fmt: skip
    assert logged == used == pytest.approx([3e-3, 2.4e-3, 1.8e-3, 1.2e-3, 0.6e-3])
