"""Tiny pretraining runs for tests: synthetic LUPerson-style shards and a shrunk tiny_cpu recipe.

The shards are made by the real tools (`shard_tools` synth + pack), so tests read what a user's run
would read. The overrides shrink `configs/pretrain/tiny_cpu.yaml` further (depth 2, dim 64, 2 local
views, batch 16) so a run costs seconds of compute; most of a launch is Python/torch start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shard_tools.pack import pack
from shard_tools.synth import make_synthetic

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "pretrain" / "tiny_cpu.yaml"

SMALL = [
    "data.batch_size_per_rank=16", "data.n_local=2",
    "model.depth=2", "model.embed_dim=64", "model.num_heads=2",
    "model.head.out_dim=256", "model.head.patch_out_dim=256", "model.head.hidden_dim=128",
    "model.head.bottleneck_dim=32",
]  # fmt: skip


def synthetic_lup_shards(root: Path, images: int = 128, maxcount: int = 50, seed: int = 0) -> Path:
    """Render `images` unlabeled synthetic pedestrians and pack them as a LUPerson shard set.

    Args:
        root: scratch folder; the shard folder is `root / "shards"`.
        images: unlabeled images.
        maxcount: samples per shard (uneven last shard on purpose).
        seed: synthetic data seed.
    """
    make_synthetic(root / "synth", identities=2, cameras=2, unlabeled=images, seed=seed)
    pack("luperson", root / "synth" / "unlabeled", root / "shards", maxcount=maxcount, progress=False)
    return root / "shards"


def pretrain_cmd(shards: Path, run_dir: Path, *overrides: str, nproc: int = 1) -> list[str]:
    """`personvit pretrain` on the tiny recipe (through torchrun's standalone rendezvous when nproc > 1)."""
    args = ["pretrain", str(TINY_CONFIG), f"data.shards={shards}", f"run.dir={run_dir}", *SMALL, *overrides]
    if nproc == 1:
        return [sys.executable, "-m", "personvit", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "personvit",
        *args,
    ]


def subprocess_env() -> dict[str, str]:
    """The test's environment minus launcher variables, one thread per process (cores are shared)."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env
