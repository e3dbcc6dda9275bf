"""Snapshots of a model really sharded by FSDP2 (issue 15 item 4): two CPU processes (gloo), a
model wrapped in ``fully_shard``, AdamW through ``AdaLRSScheduler``. Each rank's snapshot holds
only its shard, and a restore brings back every rank's shard of the parameters and of the
optimizer state exactly."""

from __future__ import annotations

import os
import socket

import pytest
import torch

pytestmark = pytest.mark.slow

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _locals(tensors) -> list[torch.Tensor]:
    return [t.to_local().detach().clone() for t in tensors]


def _opt_locals(opt, params, key) -> list[torch.Tensor]:
    return [opt.state[p][key].to_local().detach().clone() for p in params]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        _check_rank(rank, dist)
        open(os.path.join(out_dir, f"ok{rank}"), "w").close()
        # no rank tears gloo down while the other still talks to it: under a loaded full run
        # one rank's destroy_process_group aborted the other ("terminate called without an
        # active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _check_rank(rank: int, dist) -> None:
    from test_torch_binding import ScriptedController
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from adalrs_ray.torch_binding import AdaLRSScheduler

    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (WORLD,))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4), torch.nn.Linear(4, 1)
    )
    full_param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    params = list(model.parameters())
    assert all(isinstance(p, DTensor) for p in params)
    opt = torch.optim.AdamW(params, lr=1e-2)
    # snapshot after the 2nd step, restore after the 4th
    sched = AdaLRSScheduler(
        opt, ScriptedController({1: ("snapshot", 1.0), 3: ("restore", 1.0)}), model=model
    )
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data, as in training
    saved = None
    for t in range(4):
        x, y = torch.randn(8, 6, generator=gen), torch.randn(8, 1, generator=gen)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t == 3:
            before_restore = _locals(params)
        sched.step(loss.detach())
        if t == 1:
            saved = (
                _locals(params),
                _opt_locals(opt, params, "exp_avg"),
                _opt_locals(opt, params, "exp_avg_sq"),
                [opt.state[p]["step"].detach().clone() for p in params],
            )

    # the snapshot holds this rank's shard only: its bytes are the local shards of the
    # parameters and of both moments plus the per-parameter step counters, each rounded up to
    # the store's alignment
    from adalrs_ray.torch_binding.snapshot import _ALIGN

    def held(t: torch.Tensor) -> int:
        return -(-(t.numel() * t.element_size()) // _ALIGN) * _ALIGN

    local = [p.to_local() for p in params]
    for key in ("exp_avg", "exp_avg_sq"):
        local += [opt.state[p][key].to_local() for p in params]
    local += [opt.state[p]["step"] for p in params]
    assert sched.store.nbytes == sum(held(t) for t in local)
    local_param_bytes = sum(p.to_local().numel() * p.element_size() for p in params)
    assert local_param_bytes < full_param_bytes
    total = torch.tensor([local_param_bytes], dtype=torch.int64)
    dist.all_reduce(total)
    assert int(total) == full_param_bytes  # the shards of all ranks make the whole model once

    # the restore brought back every shard of parameters and optimizer state exactly
    assert any(not torch.equal(a, b) for a, b in zip(before_restore, saved[0]))
    for now, then in zip(_locals(params), saved[0]):
        assert torch.equal(now, then)
    for key, then in (("exp_avg", saved[1]), ("exp_avg_sq", saved[2])):
        for p, want in zip(params, then):
            assert isinstance(opt.state[p][key], DTensor)
            assert torch.equal(opt.state[p][key].to_local(), want)
    # and the step counters (AdamW's bias correction) of the snapshot, not the 4th step's
    assert [float(opt.state[p]["step"]) for p in params] == [2.0] * len(params)
    for p, want in zip(params, saved[3]):
        assert torch.equal(opt.state[p]["step"], want)


def test_fsdp2_snapshot_holds_each_ranks_shard_and_restores_it_exactly(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    assert all((tmp_path / f"ok{r}").exists() for r in range(WORLD))
