"""Benchmark: `shard-tools pack` files/s (1 and 2 workers) vs `tar cf` of the same files, peak RSS at two
dataset sizes, and shard bytes vs webdataset's ShardWriter writing the same samples.

The dataset is a LUPerson-style folder of synthetic pedestrian JPEGs (128x64, ~3 KB: rendered once,
then copied under new names up to each size). Every command runs in its own process on files
that were just written (warm page cache for tar and pack alike), and each timing is the best of
`--repeats`. Peak RSS is /usr/bin/time's maximum resident size of the pack process (workers are
separate processes with their own, smaller RSS). Targets (issue 3): pack >= 0.7x tar per worker;
RSS flat in the dataset size.

    python benchmarks/pack.py [--sizes 5000 20000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def grow_dataset(root: Path, n: int, base: Path) -> int:
    """Make root/images hold `n` JPEG files (copies of the rendered base set); returns their bytes."""
    files = sorted(base.glob("*.jpg"))
    (root / "images").mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        src = files[i % len(files)]
        dst = root / "images" / f"{i // len(files):03d}_{src.name}"
        if not dst.exists():
            dst.write_bytes(src.read_bytes())
        total += dst.stat().st_size
    return total


def timed(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds user+sys incl. worker processes, peak RSS in KiB) of one command."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *cmd], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{r.stderr}")
    rss, user, sys_ = r.stderr.strip().splitlines()[-1].split()
    return dt, float(user) + float(sys_), int(rss)


def best(cmd: list[str], repeats: int, before=None) -> tuple[float, float, int]:
    """Best wall time and best CPU time over `repeats` runs (the machine is shared), max RSS."""
    runs = []
    for _ in range(repeats):
        if before:
            before()
        runs.append(timed(cmd))
    return min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)


def shardwriter_bytes(src: Path, n: int) -> int:
    """Bytes of webdataset.ShardWriter (defaults) writing the same jpg + json samples."""
    import webdataset as wds

    from shard_tools.pack import sample_json

    out = Path(tempfile.mkdtemp())
    files = sorted((src / "images").iterdir())[:n]
    with wds.ShardWriter(str(out / "w-%06d.tar"), maxcount=10000, verbose=0) as w:
        for i, f in enumerate(files):
            w.write({"__key__": f"k{i:08d}", "jpg": f.read_bytes(),
                     "json": sample_json("luperson", -1, -1, f"images/{f.name}")})
    total = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="packbench-"))
    rows, results = [], {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
                         "cpus": os.cpu_count(), "python": platform.python_version(), "sizes": {}}
    try:
        from shard_tools.synth import make_synthetic

        make_synthetic(work / "base", identities=2, cameras=2, unlabeled=2000, seed=0, workers=2)
        for n in args.sizes:
            src, out = work / "src", work / "out"
            jpeg_bytes = grow_dataset(src, n, work / "base" / "unlabeled")  # just written: in the page cache

            def clean(out=out):
                shutil.rmtree(out, ignore_errors=True)
                (work / "x.tar").unlink(missing_ok=True)

            tar_s, tar_cpu, _ = best(["tar", "cf", str(work / "x.tar"), "-C", str(src), "images"], args.repeats, clean)
            r = {"files": n, "jpeg_bytes": jpeg_bytes, "tar_s": tar_s, "tar_files_per_s": n / tar_s,
                 "tar_files_per_cpu_s": n / max(tar_cpu, 1e-3),
                 "tar_bytes_ratio": (work / "x.tar").stat().st_size / jpeg_bytes}
            for check in ("decode", "header"):
                for workers in (1, 2):
                    cmd = [py, "-m", "shard_tools", "pack", "luperson", str(src), str(out), "--maxcount", "1000",
                           "--workers", str(workers), "--check", check, "--quiet"]
                    s, cpu, rss = best(cmd, args.repeats, clean)
                    tag = f"{check}_w{workers}"
                    r[f"{tag}_s"], r[f"{tag}_files_per_s"], r[f"{tag}_rss_kib"] = s, n / s, rss
                    r[f"{tag}_vs_tar_per_worker"] = (n / s) / workers / r["tar_files_per_s"]
                    r[f"{tag}_files_per_cpu_s"] = n / cpu
                    r[f"{tag}_cpu_vs_tar"] = (n / cpu) / r["tar_files_per_cpu_s"]
            r["pack_bytes_ratio"] = sum(p.stat().st_size for p in out.glob("*.tar")) / jpeg_bytes
            r["shardwriter_bytes_ratio"] = shardwriter_bytes(src, n) / jpeg_bytes
            results["sizes"][str(n)] = r
            rows.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"pack benchmark, {results['date']} on {results['machine']} ({results['cpus']} CPUs); files/s (x tar per worker)")
    print(f"{'files':>7} {'tar cf':>8} {'dec w1':>14} {'dec w2':>14} {'hdr w1':>14} {'hdr w2':>14} "
          f"{'RSS w1':>8} {'RSS w2':>8} {'bytes/JPEG':>10} {'ShardWriter':>11}")
    for r in rows:
        cells = [f"{r[f'{t}_files_per_s']:6.0f} ({r[f'{t}_vs_tar_per_worker']:.2f}x)"
                 for t in ("decode_w1", "decode_w2", "header_w1", "header_w2")]
        print(f"{r['files']:>7} {r['tar_files_per_s']:8.0f} " + " ".join(f"{c:>14}" for c in cells)
              + f" {r['decode_w1_rss_kib'] / 1024:6.0f}MB {r['decode_w2_rss_kib'] / 1024:6.0f}MB"
              + f" {r['pack_bytes_ratio']:10.2f} {r['shardwriter_bytes_ratio']:11.2f}")
    print("per CPU-second (user+sys, all processes; robust to other load on the machine): files/CPU-s (x tar)")
    for r in rows:
        print(f"{r['files']:>7} {r['tar_files_per_cpu_s']:8.0f} " + " ".join(
            f"{r[f'{t}_files_per_cpu_s']:6.0f} ({r[f'{t}_cpu_vs_tar']:.2f}x)".rjust(14)
            for t in ("decode_w1", "decode_w2", "header_w1", "header_w2")))
    a, b = rows[0], rows[-1]
    results["rss_growth_w1"] = b["decode_w1_rss_kib"] / a["decode_w1_rss_kib"]
    print(f"peak RSS (1 worker) {a['files']} -> {b['files']} files: x{results['rss_growth_w1']:.2f}")
    Path(__file__).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
