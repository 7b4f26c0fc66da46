"""`shard-tools`: pack, merge, verify, info, synth (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import os
import sys

from shard_tools.sources import SOURCES, SourceError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shard-tools", description="Pack person-image datasets into webdataset shards.")
    sub = p.add_subparsers(dest="cmd", required=True)

    pk = sub.add_parser("pack", help="pack a dataset into {split}-NNNNNN.tar shards + manifest.json")
    pk.add_argument("source", choices=list(SOURCES), help="dataset type")
    pk.add_argument("src", help="dataset folder (or the folder that holds it)")
    pk.add_argument("out", help="output shard folder (empty or new); rerunning into it resumes")
    pk.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default 10000)")
    pk.add_argument("--workers", type=int, default=1, help="writer processes; output is identical for any value")
    pk.add_argument("--fraction", type=float, default=1.0, help="keep this fraction (random, or the top of --cfs-list)")
    pk.add_argument("--cfs-list", default=None, help="pickled score-sorted image names; keeps the top --fraction")
    pk.add_argument("--seed", type=int, default=0, help="seed of the subset and of the train order")
    pk.add_argument("--array-index", type=int, default=None, help="this task's index (default: from $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN)")
    pk.add_argument("--array-count", type=int, default=None, help="number of array tasks (default $SLURM_ARRAY_TASK_COUNT)")
    pk.add_argument("--no-shuffle", action="store_true", help="keep the train split in listing order")
    pk.add_argument("--check", choices=["header", "decode"], default="header",
                    help="header: JPEG marker structure, empty/non-JPEG/truncated files (default, fast); "
                         "decode: also entropy-decode every image (~10x slower)")
    pk.add_argument("--overwrite", action="store_true",
                    help="replace the shards, manifest and pack state another pack left in OUT")
    pk.add_argument("--quiet", action="store_true", help="no progress or summary")

    mg = sub.add_parser("merge", help="write manifest.json once every array task has finished")
    mg.add_argument("out")

    vf = sub.add_parser("verify", help="re-read every shard: sha256, counts, every member decodes")
    vf.add_argument("out")
    vf.add_argument("--workers", type=int, default=1)
    vf.add_argument("--no-decode", action="store_true", help="skip decoding the images")

    inf = sub.add_parser("info", help="table of splits, shards, samples, ids, cameras, bytes")
    inf.add_argument("out")

    sy = sub.add_parser("synth", help="synthetic pedestrians in Market-1501 layout plus unlabeled/")
    sy.add_argument("out")
    sy.add_argument("--identities", type=int, default=200, help="labeled identities (half train, half test)")
    sy.add_argument("--cameras", type=int, default=6, help="labeled cameras, 2..9")
    sy.add_argument("--unlabeled", type=int, default=3000, help="unlabeled images (disjoint identities)")
    sy.add_argument("--unlabeled-cameras", type=int, default=0,
                    help="0: a scene per unlabeled image (default); N: N fixed cameras (scene-dominated)")
    sy.add_argument("--val-identities", type=int, default=0,
                    help="also write val/: a validation split of this many training people")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--workers", type=int, default=1)
    return p


def _array_args(args: argparse.Namespace) -> tuple[int, int]:
    """(index, count) from the flags, else from a Slurm job array, else (0, 1).

    Slurm task ids need not start at 0 (`--array=1-8`), so the index is taken relative to
    SLURM_ARRAY_TASK_MIN.
    """
    if args.array_index is not None or args.array_count is not None:
        if args.array_index is None or args.array_count is None:
            raise SourceError("give both --array-index and --array-count (or neither)")
        return args.array_index, args.array_count
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return index, int(env["SLURM_ARRAY_TASK_COUNT"])
    return 0, 1


def main(argv: list[str] | None = None) -> int:
    """Run one `shard-tools` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "pack":
            from shard_tools.pack import pack

            index, count = _array_args(args)
            pack(args.source, args.src, args.out, maxcount=args.maxcount, workers=args.workers,
                 fraction=args.fraction, cfs_list=args.cfs_list, seed=args.seed, array_index=index,
                 array_count=count, shuffle_train=not args.no_shuffle, decode_check=args.check == "decode",
                 overwrite=args.overwrite, progress=not args.quiet)
        elif args.cmd == "merge":
            from shard_tools.manifest import merge

            m = merge(args.out)
            print(f"wrote {args.out}/manifest.json: " + ", ".join(f"{k} {v['samples']}" for k, v in m["splits"].items()))
        elif args.cmd == "verify":
            from shard_tools.verify import verify

            n, problems = verify(args.out, workers=args.workers, decode=not args.no_decode, progress=True)
            for p in problems:
                print(f"BAD {p}", file=sys.stderr)
            if problems:
                print(f"verify: {len(problems)} bad shard(s) of {n} in {args.out}", file=sys.stderr)
                return 1
            print(f"verify: all {n} shards OK in {args.out}")
        elif args.cmd == "info":
            from shard_tools.info import print_info

            print_info(args.out)
        elif args.cmd == "synth":
            from shard_tools.synth import make_synthetic

            make_synthetic(args.out, identities=args.identities, cameras=args.cameras, unlabeled=args.unlabeled,
                           seed=args.seed, unlabeled_cameras=args.unlabeled_cameras, workers=args.workers,
                           val_identities=args.val_identities,
                           progress=True)
    except (SourceError, ValueError) as e:
        print(f"shard-tools {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C; pack's PackInterrupted says what it kept
        detail = str(e) or ("nothing written yet; rerun the same command" if args.cmd == "pack" else "")
        print(f"shard-tools {args.cmd}: interrupted{'; ' + detail if detail else ''}", file=sys.stderr)
        return 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
    return 0


if __name__ == "__main__":
    sys.exit(main())
