"""Centre EMA averaged across ranks in a real 2-process gloo group."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from personvit.losses import DINOMIMLoss

K, KP, N = 16, 12, 6


def teacher_outputs(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-specific teacher logits; ranks hold different batch sizes (3 and 5)."""
    g = torch.Generator().manual_seed(100 * rank + step)
    batch = 3 + 2 * rank
    return torch.randn(2, batch, K, generator=g) + rank, torch.randn(2, batch, N, KP, generator=g) - rank


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        loss = DINOMIMLoss(K, KP)
        for step in range(2):
            t_cls, t_patch = teacher_outputs(rank, step)
            s_cls = torch.randn(4, t_cls.shape[1], K)
            s_patch = torch.randn(2, t_cls.shape[1], N, KP)
            masks = torch.ones(2, t_cls.shape[1], N, dtype=torch.bool)
            loss(s_cls, s_patch, t_cls, t_patch, masks, epoch=step)
        torch.save({"center": loss.center, "center2": loss.center2}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_centres_are_averaged_over_all_ranks_then_ema(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(results[0]["center"], results[1]["center"])
    assert torch.equal(results[0]["center2"], results[1]["center2"])

    center, center2 = torch.zeros(K), torch.zeros(KP)
    for step in range(2):
        outs = [teacher_outputs(r, step) for r in range(2)]
        # The mean over every image of both ranks (8 per view), not the mean of the two rank means.
        cls_mean = torch.cat([o[0] for o in outs], dim=1).mean(dim=(0, 1))
        patch_mean = torch.cat([o[1] for o in outs], dim=1).mean(dim=(0, 1, 2))
        center = 0.9 * center + 0.1 * cls_mean
        center2 = 0.9 * center2 + 0.1 * patch_mean
    torch.testing.assert_close(results[0]["center"], center)
    torch.testing.assert_close(results[0]["center2"], center2)
    rank0_only = 0.1 * teacher_outputs(0, 0)[0].mean(dim=(0, 1))
    assert not torch.allclose(
        results[0]["center"], 0.9 * rank0_only + 0.1 * teacher_outputs(0, 1)[0].mean(dim=(0, 1))
    )
