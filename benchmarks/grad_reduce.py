"""Benchmark: gradient reductions at world size 4 (gloo, CPU): step time and exact resume (issue J).

Each candidate trains the tiny pretraining student (the test recipe's shapes, or `--size tiny_cpu`)
for `--steps` AdamW steps on inputs drawn from (step, rank), twice: uninterrupted, and "resumed":
at step `--restart` the model, optimiser and gradient reducer are rebuilt from a saved state, as a
restarted process would. `exact` says whether both end bitwise equal. Step time is the median over
the steps after the first two, the candidates' steps interleaved; ratios are against plain DDP.

    python benchmarks/grad_reduce.py [--size test|tiny_cpu] [--steps 12] [--restart 5] [--batch 8]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import write_results  # noqa: E402
from personvit.config.pretrain import HeadConfig, PretrainModelConfig  # noqa: E402
from personvit.engine.grad_sync import FlatGradReducer  # noqa: E402
from personvit.models.build import build_student_teacher  # noqa: E402

WORLD = 4
SIZES = {  # (embed_dim, depth, heads, out_dim, hidden, bottleneck, global HxW)
    "test": (64, 2, 2, 256, 128, 32, (64, 32)),  # tests/support/pretrain.py SMALL
    "tiny_cpu": (128, 4, 4, 1024, 256, 64, (64, 32)),  # configs/pretrain/tiny_cpu.yaml
}


def _wrap(name: str, student: torch.nn.Module):
    """(module to call, reducer to run after backward or None) for candidate `name`."""
    if name == "ddp":
        return DistributedDataParallel(student), None
    if name == "ddp_static_graph":
        return DistributedDataParallel(student, static_graph=True), None
    if name == "ddp_one_bucket":
        return DistributedDataParallel(student, bucket_cap_mb=100_000), None
    if name == "ddp_no_rebuild":  # find_unused_parameters=True: DDP keeps its initial buckets
        return DistributedDataParallel(student, find_unused_parameters=True), None
    if name == "flat_after_backward":
        return student, FlatGradReducer(student.parameters())
    raise ValueError(name)


def _inputs(step: int, rank: int, batch: int, hw: tuple[int, int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """2 global + 2 local views and the globals' patch masks (patch 8), drawn from (step, rank)."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    views = [torch.randn(batch, 3, *hw, generator=g) for _ in range(2)] + [
        torch.randn(batch, 3, hw[0] // 2, hw[1] // 2, generator=g) for _ in range(2)
    ]
    return views, torch.rand(2, batch, (hw[0] // 8) * (hw[1] // 8), generator=g) < 0.3


class _Run:
    def __init__(self, name: str, size: str, state: dict | None):
        d, depth, heads, out, hidden, bneck, self.hw = SIZES[size]
        cfg = PretrainModelConfig(arch="vit_tiny", patch_size=8, embed_dim=d, depth=depth, num_heads=heads,
                                  drop_path_rate=0.0, head=HeadConfig(out, out, hidden, bneck))
        self.student, _ = build_student_teacher(cfg, self.hw, seed=0)
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=1e-3)
        if state is not None:
            self.student.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
        self.model, self.reducer = _wrap(name, self.student)

    def step(self, step: int, rank: int, batch: int) -> float:
        t0 = time.perf_counter()
        views, masks = _inputs(step, rank, batch, self.hw)
        out = self.model(views, masks=masks, patch_views=2)
        loss = out.cls.float().logsumexp(-1).mean() + out.patch.float().logsumexp(-1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.reducer is not None:
            self.reducer.all_reduce_mean_()
        self.opt.step()
        return time.perf_counter() - t0

    def state(self) -> dict:
        return {"model": copy.deepcopy(self.student.state_dict()), "opt": copy.deepcopy(self.opt.state_dict())}


def _worker(rank: int, args: argparse.Namespace, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    names = args.candidates.split(",")
    times = {n: [] for n in names}
    straight = {n: _Run(n, args.size, None) for n in names}
    for s in range(args.steps):  # interleaved: load changes on a shared machine hit every candidate alike
        for n in names:
            times[n].append(straight[n].step(s, rank, args.batch))
    exact = {}
    for n in names:
        resumed = _Run(n, args.size, None)
        for s in range(args.restart):
            resumed.step(s, rank, args.batch)
        resumed = _Run(n, args.size, resumed.state())  # a restarted process: fresh reducer, same state
        for s in range(args.restart, args.steps):
            resumed.step(s, rank, args.batch)
        a, b = straight[n].student.state_dict(), resumed.student.state_dict()
        exact[n] = all(torch.equal(a[k], b[k]) for k in a)
    if rank == 0:
        params = sum(p.numel() for p in straight[names[0]].student.parameters())
        out.write_text(json.dumps({"times": times, "exact": exact, "params": params}))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="test")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--restart", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--candidates", default="ddp,ddp_static_graph,ddp_one_bucket,ddp_no_rebuild,flat_after_backward")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("grad_reduce.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = args.out.with_suffix(".tmp")
    mp.spawn(_worker, args=(args, 29000 + os.getpid() % 1000, tmp), nprocs=WORLD, join=True)
    res = json.loads(tmp.read_text())
    tmp.unlink()
    med = {n: statistics.median(t[2:]) for n, t in res["times"].items()}
    base = med.get("ddp")
    print(f"{args.size}: {res['params']:,} trainable parameters, world size {WORLD} (gloo, CPU), batch {args.batch}")
    print(f"{'candidate':22s} {'median s':>9s} {'vs ddp':>7s}  exact resume")
    summary = {}
    for n, m in med.items():
        ratio = m / base if base else float("nan")
        print(f"{n:22s} {m:9.4f} {ratio:7.3f}  {res['exact'][n]}")
        summary[n] = {"median_s": m, "ratio_vs_ddp": ratio, "exact_resume": res["exact"][n]}
    write_results(args.out, {f"{args.size}/{n}": e | {"params": res["params"], "batch": args.batch}
                             for n, e in summary.items()}, threads=1)


if __name__ == "__main__":
    main()
