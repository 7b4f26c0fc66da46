"""Benchmark: our ViT-S/16 at 256x128 vs timm's ViT-S/16 with the same weights (issue 4).

1. Both backbones, same weights and inputs, forward + backward, interleaved repetitions, median
   time; outputs and gradients compared. Target: ours <= 1.05x timm's time, equal outputs.
   Memory: on CUDA the peak allocated bytes of a step; on the CPU the bytes autograd saves for
   the backward pass (the activation memory of training), counted per storage.
2. CUDA only: xformers vs SDPA attention in bf16 (time, peak memory, max output difference).
3. CUDA only: one full pretraining step (teacher 2 globals, student 2 masked globals + 6 locals,
   iBOT heads with 8192 prototypes, DINO+MIM loss, AdamW, EMA) and its MFU against the card's
   dense bf16 peak, with FLOPs counted analytically.
Without CUDA, parts 2 and 3 print "skipped: no CUDA".

    python benchmarks/vit_step.py [--batch 8] [--reps 7] [--threads 2] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import timm
import torch

from personvit.losses import DINOMIMLoss
from personvit.masking import view_masks
from personvit.models import DINOHead, MultiCropWrapper, build_vit, num_flops_forward, xformers_available

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_fn(
    model: torch.nn.Module, fwd: Callable, x: torch.Tensor, dtype: torch.dtype | None
) -> Callable[[], None]:
    """One forward + backward of `fwd(x)`, under autocast when `dtype` is given."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = fwd(x)
        out.float().square().mean().backward()

    return run


def time_interleaved(
    fns: dict[str, Callable[[], None]], reps: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call, all repetitions; the order alternates so drift hits every variant equally."""
    for fn in fns.values():  # warm-up (allocator, kernels, autotuning)
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summarise(times: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(median, min) per variant; the minimum is the least disturbed by other load on the machine."""
    return {k: statistics.median(v) for k, v in times.items()}, {k: min(v) for k, v in times.items()}


def saved_activation_bytes(fn: Callable[[], None]) -> int:
    """Bytes autograd keeps for backward during `fn` (unique storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_cuda_bytes(fn: Callable[[], None]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def bench_vs_timm(batch: int, reps: int, device: torch.device) -> dict:
    """Part 1: our backbone vs timm's, same weights."""
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_224", img_size=(256, 128), pretrained=False, num_classes=0).to(
        device
    )
    ours = build_vit("vit_small", attn_backend="sdpa").to(device)
    ours.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(batch, 3, 256, 128, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        max_diff = (ours.forward_features(x).float() - ref.forward_features(x).float()).abs().max().item()
    fns = {
        "ours": step_fn(ours, ours.forward_features, x, dtype),
        "timm": step_fn(ref, ref.forward_features, x, dtype),
    }
    fns["ours"]()
    grad_ours = ours.blocks[0].attn.qkv.weight.grad.clone()
    fns["timm"]()
    grad_diff = (grad_ours - ref.blocks[0].attn.qkv.weight.grad).abs().max().item()
    t, t_min = summarise(time_interleaved(fns, reps, device))
    mem = {
        k: (peak_cuda_bytes(f) if device.type == "cuda" else saved_activation_bytes(f))
        for k, f in fns.items()
    }
    return {
        "batch": batch,
        "reps": reps,
        "dtype": "bf16 autocast" if dtype else "float32",
        "time_s": t,
        "min_time_s": t_min,
        "img_per_s": {k: batch / v for k, v in t.items()},
        "time_ratio_ours_over_timm": t["ours"] / t["timm"],
        "min_time_ratio_ours_over_timm": t_min["ours"] / t_min["timm"],
        "memory_kind": "peak allocated (CUDA)" if device.type == "cuda" else "saved activations (autograd)",
        "memory_mib": {k: v / 2**20 for k, v in mem.items()},
        "memory_ratio_ours_over_timm": mem["ours"] / mem["timm"],
        "max_abs_output_diff": max_diff,
        "max_abs_grad_diff_qkv0": grad_diff,
    }


def bench_backends(batch: int, reps: int) -> dict:
    """Part 2 (CUDA): xformers vs SDPA, bf16 autocast, same model."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    if not xformers_available():
        return {"skipped": "xformers not installed"}
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_vit("vit_small", attn_backend="sdpa").to(device)
    x = torch.randn(batch, 3, 256, 128, device=device)
    outs, fns = {}, {}
    for backend in ("sdpa", "xformers"):
        model.set_attn_backend(backend)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            outs[backend] = model(x).float()

        def run(backend: str = backend) -> None:
            model.set_attn_backend(backend)
            step_fn(model, model.forward_features, x, torch.bfloat16)()

        fns[backend] = run
    t, _ = summarise(time_interleaved(fns, reps, device))
    mem = {k: peak_cuda_bytes(f) / 2**20 for k, f in fns.items()}
    return {
        "batch": batch,
        "time_s": t,
        "time_ratio_xformers_over_sdpa": t["xformers"] / t["sdpa"],
        "peak_mib": mem,
        "max_abs_output_diff": (outs["sdpa"] - outs["xformers"]).abs().max().item(),
    }


def head_flops(head: DINOHead, tokens: int) -> float:
    """Forward FLOPs of the head for `tokens` tokens (MLP + prototype layer)."""
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    per_token = sum(2 * m.in_features * m.out_features for m in linears)
    per_token += 2 * head.last_layer.weight_v.numel()
    return float(tokens * per_token)


def bench_pretrain_step(batch: int, reps: int, smoke: bool = False) -> dict:
    """Part 3 (CUDA): one full DINO+MIM step and its MFU.

    Args:
        batch: images per GPU.
        reps: timed repetitions.
        smoke: run the same code on the CPU with a 1-block ViT and 256 prototypes, to check the
            script where no GPU is at hand (its timings mean nothing).
    """
    if not (torch.cuda.is_available() or smoke):
        return {"skipped": "no CUDA"}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    depth, protos = (1, 256) if smoke else (12, 8192)
    torch.manual_seed(0)
    backbone = build_vit("vit_small", drop_path_rate=0.1, depth=depth)
    student = MultiCropWrapper(backbone, DINOHead(384, protos, protos)).to(device)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    loss_fn = DINOMIMLoss(protos, protos).to(device)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=device.type == "cuda")
    globals_ = [torch.randn(batch, 3, 256, 128, device=device) for _ in range(2)]
    locals_ = [torch.randn(batch, 3, 96, 64, device=device) for _ in range(6)]
    rng = np.random.default_rng(0)
    masks = torch.stack([view_masks((16, 8), batch, [0.0, 0.3], [0.0, 0.2], rng) for _ in range(2)]).to(
        device
    )
    params_s, params_t = list(student.parameters()), list(teacher.parameters())

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            with torch.no_grad():
                t = teacher(globals_)
            s = student(globals_ + locals_, masks)
            loss = loss_fn(s.cls, s.patch, t.cls, t.patch, masks, epoch=0).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(params_t, params_s, 1 - 0.996)

    t = summarise(time_interleaved({"step": step}, reps, device))[0]["step"]
    peak = peak_cuda_bytes(step) if device.type == "cuda" else 0
    g_fwd = num_flops_forward(backbone, (256, 128)) + head_flops(student.head, 129)
    l_fwd = num_flops_forward(backbone, (96, 64)) + head_flops(student.head, 1)
    flops = batch * (2 * g_fwd + 3 * (2 * g_fwd + 6 * l_fwd))  # teacher fwd; student fwd + 2x bwd
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak_flops = next((v for k, v in PEAK_BF16.items() if k in name), None)
    achieved = flops / t
    return {
        "smoke_on_cpu": smoke and device.type == "cpu",
        "batch_per_gpu": batch,
        "step_s": t,
        "img_per_s": batch / t,
        "gflop_per_image": flops / batch / 1e9,
        "achieved_tflops": achieved / 1e12,
        "peak_bf16_tflops": peak_flops / 1e12 if peak_flops else None,
        "mfu": achieved / peak_flops if peak_flops else None,
        "peak_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 8 CPU, 64 CUDA)")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per variant")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="without CUDA, run part 3 on the CPU with a 1-block ViT (checks the code only)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (64 if device.type == "cuda" else 8)

    if args.smoke and device.type == "cpu":
        part3 = bench_pretrain_step(args.batch or 2, args.reps, smoke=True)
        print(f"smoke run of the pretraining step on the CPU (timings meaningless, no JSON written): {part3}")
        return
    part1 = bench_vs_timm(batch, args.reps, device)
    part2 = bench_backends(batch, args.reps)
    part3 = bench_pretrain_step(batch, args.reps)
    machine = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
    )
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "vs_timm": part1,
        "xformers_vs_sdpa": part2,
        "pretrain_step": part3,
    }

    print(f"ViT-S/16 256x128 fwd+bwd, batch {batch}, {part1['dtype']}, {machine}")
    print(f"{'model':<8}{'median s':>10}{'min s':>10}{'img/s':>10}{'memory MiB':>14}")
    for k in ("ours", "timm"):
        print(
            f"{k:<8}{part1['time_s'][k]:>10.4f}{part1['min_time_s'][k]:>10.4f}{part1['img_per_s'][k]:>10.1f}"
            f"{part1['memory_mib'][k]:>14.1f}"
        )
    print(
        f"ratio ours/timm: time {part1['time_ratio_ours_over_timm']:.3f} median, "
        f"{part1['min_time_ratio_ours_over_timm']:.3f} min (target <= 1.05), "
        f"memory {part1['memory_ratio_ours_over_timm']:.3f} [{part1['memory_kind']}]; "
        f"max |out diff| {part1['max_abs_output_diff']:.2e}, max |grad diff| {part1['max_abs_grad_diff_qkv0']:.2e}"
    )
    if "skipped" in part2:
        print(f"xformers vs SDPA (bf16): skipped: {part2['skipped']}")
    else:
        print(
            f"xformers vs SDPA (bf16): time ratio {part2['time_ratio_xformers_over_sdpa']:.3f}, peak MiB "
            f"{part2['peak_mib']['xformers']:.0f} vs {part2['peak_mib']['sdpa']:.0f}, max |diff| {part2['max_abs_output_diff']:.2e}"
        )
    if "skipped" in part3:
        print(f"pretraining step MFU: skipped: {part3['skipped']}")
    else:
        mfu = f"{100 * part3['mfu']:.1f}%" if part3["mfu"] is not None else "n/a (unknown card peak)"
        print(
            f"pretraining step (batch {batch}/GPU): {part3['step_s'] * 1e3:.1f} ms, {part3['img_per_s']:.0f} img/s, "
            f"{part3['gflop_per_image']:.1f} GFLOP/img, {part3['achieved_tflops']:.1f} TFLOP/s, MFU {mfu}, "
            f"peak {part3['peak_mib']:.0f} MiB"
        )
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
