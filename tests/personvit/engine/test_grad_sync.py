"""`FlatGradReducer` on a real 4-process gloo group: the mean over ranks, the same bits whatever the
process's history (a reducer built fresh mid-run, as after a restart), and None gradients as zeros."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from personvit.engine.grad_sync import FlatGradReducer

WORLD = 4


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 300), nn.GELU(), nn.Linear(300, 300), nn.GELU(), nn.Linear(300, 4))


def _train(rank: int, steps: int, restart_at: int | None) -> dict[str, torch.Tensor]:
    """AdamW on (step, rank)-seeded inputs; at `restart_at` rebuild net, optimiser and reducer."""
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    reducer = FlatGradReducer(net.parameters())
    for step in range(steps):
        if step == restart_at:
            state = ({k: v.clone() for k, v in net.state_dict().items()}, opt.state_dict())
            net = _net()
            opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
            net.load_state_dict(state[0])
            opt.load_state_dict(state[1])
            reducer = FlatGradReducer(net.parameters())
        g = torch.Generator().manual_seed(100 * step + rank)
        x = torch.randn(8, 16, generator=g) * (rank + 1)  # ranks see different data on purpose
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        reducer.all_reduce_mean_()
        opt.step()
    return net.state_dict()


def _worker(rank: int, port: int, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        # 1. The mean over ranks, and None gradients counted as zeros (and then set).
        net = _net()
        x = torch.full((2, 16), float(rank))
        net(x).sum().backward()
        local = [p.grad.clone() for p in net.parameters()]
        if rank == 1:
            net[0].bias.grad = None  # rank 1 has no gradient for it
        gathered = [[torch.empty_like(g) for _ in range(WORLD)] for g in local]
        for g, slots in zip(local, gathered, strict=True):
            dist.all_gather(slots, g)
        FlatGradReducer(net.parameters()).all_reduce_mean_()
        for i, (p, slots) in enumerate(zip(net.parameters(), gathered, strict=True)):
            if i == 1:  # the bias of the first layer: rank 1 contributed zeros
                slots = [torch.zeros_like(s) if r == 1 else s for r, s in enumerate(slots)]
            torch.testing.assert_close(p.grad, torch.stack(slots).mean(0))
        # 2. Restarting mid-run changes no bit; the ranks agree on the result.
        straight, restarted = _train(rank, 6, None), _train(rank, 6, 3)
        same = all(torch.equal(straight[k], restarted[k]) for k in straight)
        flat = torch.cat([v.reshape(-1) for v in straight.values()])
        copies = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(copies, flat)
        out[rank] = (same, all(torch.equal(c, flat) for c in copies))
    finally:
        dist.destroy_process_group()


def test_four_ranks_mean_and_history_independence():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(port, out), nprocs=WORLD, join=True)
        assert dict(out) == {r: (True, True) for r in range(WORLD)}


def test_no_trainable_parameters_is_refused():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        FlatGradReducer(frozen.parameters())
