"""`python -m examples.demo` (`make demo`): the whole path on synthetic pedestrians, in minutes on a CPU.

Stages: synthetic images -> shards (Market-1501 layout packed as labeled, its validation split of
training people for the kNN monitor, `unlabeled/` as LUPerson) -> verify -> tiny pretraining, DINO+MIM
and the paper's DINO-only ablation (one two-task job array) -> retrieval and the person-vs-scene test
with the pretrained teachers vs random features, no fine-tuning -> fine-tuning from each teacher and
from random init over seeds (one job array) -> the four visualisations -> `<out>/RESULTS.md`,
`<out>/summary.json` and the printed table.

Jobs go through a local Slurm cluster (`slurm.local_cluster.LocalSlurm`) when one can be started here
(root and the Slurm packages), else through submitit's local executor; the first line says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # examples/demo/run.py -> the repository
PRETRAIN_CFG = REPO / "configs" / "pretrain" / "tiny_cpu.yaml"
FINETUNE_CFG = REPO / "configs" / "finetune" / "tiny_cpu.yaml"
VIZ_KINDS = ("attention", "patch-clusters", "correspondence", "ranks")


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: data, pretraining and fine-tuning length."""

    identities: int  # labeled people, half train / half test
    val_identities: int  # training people also held out as the validation split (kNN monitor, tuning)
    unlabeled: int  # pretraining images
    pretrain_epochs: int
    finetune_epochs: int
    pretrain_batch: int
    loader_workers: int  # pretraining loader processes (one overlaps decoding with the step on 2 cores)


SIZES = {
    "full": DemoSize(
        identities=200,
        val_identities=30,
        unlabeled=3000,
        pretrain_epochs=10,
        # 20, not 10: on the validation split 10 epochs left random init at 28.8 mAP (train accuracy
        # 12%, below raw pixels' 45), 20 reach 44.6 / 43.9 and the start shows (README "Demo data").
        finetune_epochs=20,
        pretrain_batch=64,
        loader_workers=1,
    ),
    "small": DemoSize(
        identities=20,
        val_identities=4,
        unlabeled=128,
        pretrain_epochs=1,
        finetune_epochs=1,
        pretrain_batch=32,
        loader_workers=0,
    ),
}

# The tiny recipe's augmentations with the blur scaled to 64x32 (the paper's sigma 0.1-2.0 is for
# 256x128 crops; at a quarter of the size it wiped out the clothing patterns), without grayscale and
# hue jitter (brightness, contrast and saturation jitter stay). Measured on the validation split
# (README "Demo data"): with the paper's grayscale and hue, fine-tuning from the 10-epoch teacher
# reached 7.1 / 5.9 mAP (random init 28.8 / 28.5) and its targets drifted to uniform; without them
# 22.8 / 19.4, teacher entropy steady, kNN CLS 10.3 (random 6.6), and MIM helped (DINO only 19.4 / 16.0).
PRETRAIN_AUG = ["data.blur_sigma=[0.1,0.5]", "data.grayscale_p=0", "data.hue=0"]


class Stages:
    """Announces each stage with wall-clock timings and keeps them for the report."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.times: dict[str, float] = {}

    def say(self, msg: str) -> None:
        print(f"[demo {time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def run(self, name: str, fn, *args, **kwargs):
        self.say(f"== {name} ...")
        start = time.monotonic()
        out = fn(*args, **kwargs)
        self.times[name] = time.monotonic() - start
        self.say(f"== {name} done in {self.times[name]:.1f} s")
        return out


# ---------------------------------------------------------------------------------------------- executor
def choose_executor(wanted: str) -> tuple[str, str]:
    """(`slurm` or `local`, why) for `--executor auto|slurm|local`."""
    from slurm.local_cluster import missing_requirements

    if wanted == "local":
        return "local", "asked for with --executor local"
    why = missing_requirements(accounting=True)
    if why is None:
        return "slurm", "root and the Slurm packages are present"
    if wanted == "slurm":
        raise SystemExit(f"demo: --executor slurm impossible here: {why}")
    return "local", f"no local Slurm: {why}"


def start_slurm(root: Path):
    """A running local cluster with SLURM_CONF/PYTHONPATH exported for submitit and the jobs."""
    from slurm.local_cluster import LocalSlurm

    cluster = LocalSlurm(root, accounting=True).start()
    os.environ["SLURM_CONF"] = str(cluster.conf)
    return cluster


def wait_jobs(stages: Stages, jobs: list, run_dirs: list[Path], every_s: float = 15.0) -> None:
    """Block until every job ends, printing each run's latest logged step meanwhile; raise on failure."""
    last = 0.0
    while not all(j.done() for j in jobs):
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            for job, run_dir in zip(jobs, run_dirs):
                stages.say(f"   job {job.job_id} {job.state:<9} {run_dir.name}: {_latest_metrics(run_dir)}")
        time.sleep(1.0)
    for job, run_dir in zip(jobs, run_dirs):
        try:
            job.result()
        except Exception as e:  # the job's own error, with submitit's log path
            raise SystemExit(
                f"demo: job {job.job_id} ({run_dir}) failed: "
                f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}; "
                f"log: {job.paths.stderr}"
            ) from None


def _latest_metrics(run_dir: Path) -> str:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return "starting"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return "starting"
    row = json.loads(lines[-1])
    shown = {k: row[k] for k in ("step", "epoch", "loss", "dino", "mim") if k in row}
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def submit_jobs(executor: str, folder: Path, name: str, jobs: list) -> list:
    """Submit TrainJobs (several = one array) through the profile of `executor`; returns submitit jobs."""
    from slurm.launch import submit
    from slurm.profiles import load_profile

    profile = load_profile(
        "localhost_slurm" if executor == "slurm" else "local", ["timeout_min=60", "max_requeues=0"]
    )
    return submit(profile, folder / "%j", name, jobs).jobs  # submitit fills %j with <array>_<task> too


# ---------------------------------------------------------------------------------------------- stages
def make_data(out: Path, size: DemoSize) -> dict[str, Path]:
    from shard_tools.pack import pack
    from shard_tools.synth import make_synthetic

    synth = out / "data" / "synth"
    counts = make_synthetic(
        synth, identities=size.identities, unlabeled=size.unlabeled, seed=0, workers=os.cpu_count() or 1,
        val_identities=size.val_identities,
    )
    print(f"   rendered {counts}", flush=True)
    market, val, lup = (out / "data" / f"{name}-shards" for name in ("market", "val", "luperson"))
    pack("market1501", synth, market, maxcount=500, progress=False)
    pack("market1501", synth / "val", val, maxcount=500, progress=False)
    pack("luperson", synth / "unlabeled", lup, maxcount=500, progress=False)
    return {"market": market, "val": val, "luperson": lup}


def pretrain_report(pre_dir: Path) -> None:
    from personvit.report.cli import report as write_report

    files = write_report(pre_dir)
    print(f"   {len(files)} files in {files[-1].parent}", flush=True)


def verify_data(shards: dict[str, Path]) -> None:
    from shard_tools.verify import verify

    for name, folder in shards.items():
        checked, problems = verify(folder, workers=1, decode=True)
        if problems:
            raise SystemExit(f"demo: shard verification of {folder} failed: {problems[0]}")
        print(f"   {name}: {checked} shards verified (sha256, counts, every image decodes)", flush=True)


def evaluate_features(out: Path, market: Path, init: str, name: str) -> dict:
    """Retrieval with backbone features, no fine-tuning (`init` = a pretraining run, or '' = random)."""
    from examples.demo.report import feature_diagnostics, read_results
    from personvit.engine.evaluate import main as evaluate_main

    run_dir = out / "eval-no-finetune" / name
    evaluate_main([str(FINETUNE_CFG), f"data.shards={market}", f"model.init={init}", f"run.dir={run_dir}",
                   *([] if init else ["--random-init"])])
    return {**read_results(run_dir), **feature_diagnostics(run_dir / "features.npz")}


def visualize(out: Path, pretrain_dir: Path, market: Path, ranks_from: Path) -> list[str]:
    from personvit.viz.cli import main as viz_main

    pngs: list[str] = []
    for kind in VIZ_KINDS:
        dest = out / "viz" / kind
        if kind == "ranks":
            argv = [
                "ranks",
                "--features",
                str(ranks_from),
                "--shards",
                str(market),
                "--num",
                "4",
                "--out",
                str(dest),
            ]
        else:
            argv = [kind, "--ckpt", str(pretrain_dir), "--shards", str(market), "--out", str(dest)]
        if viz_main(argv) != 0:
            raise SystemExit(f"demo: personvit visualize {kind} failed")
        found = sorted(dest.glob("*.png"))
        if not found:
            raise SystemExit(f"demo: personvit visualize {kind} wrote no PNG into {dest}")
        pngs += [str(p.relative_to(out)) for p in found]
    return pngs


# ---------------------------------------------------------------------------------------------- main
# Pretraining runs of the demo: (folder, table name, overrides beyond the tiny recipe). The second is
# the paper's "w/o MIM" ablation (Table 4): the same run without the masked-patch term.
# (run folder, fine-tuning folder tag, table name, overrides)
PRETRAININGS = (
    ("pretrain", "pretrained", "pretrained teacher", ()),
    ("pretrain-dino-only", "dino-only", "DINO-only teacher", ("loss.lambda2=0",)),
)


def pretrain_stage(stages: Stages, executor: str, out: Path, shards: dict[str, Path], size: DemoSize) -> list[Path]:
    """Both pretraining runs as one two-task array (one thread each: two jobs fill the two cores)."""
    from slurm.jobs import TrainJob

    common = [
        f"data.shards={shards['luperson']}",
        f"train.epochs={size.pretrain_epochs}",
        f"data.batch_size_per_rank={size.pretrain_batch}",
        f"data.num_workers={size.loader_workers}",
        "run.log_every_steps=2",
        "checkpoint.keep_every_epochs=0",
        # The kNN monitor on the validation split of training people (its labels never reach training).
        f"monitor.shards={shards['val']}",
        f"monitor.every_epochs={max(1, size.pretrain_epochs // 4)}",
        *PRETRAIN_AUG,
    ]
    dirs = [out / folder for folder, *_ in PRETRAININGS]
    tasks = [TrainJob("pretrain", str(PRETRAIN_CFG), [*common, *extra], run_dir=str(d), max_requeues=0)
             for d, (*_, extra) in zip(dirs, PRETRAININGS)]
    os.environ["OMP_NUM_THREADS"] = "1"
    jobs = submit_jobs(executor, out / "jobs", "demo-pretrain", tasks)
    stages.run(f"pretraining ({len(tasks)}-task job array: DINO+MIM, DINO only)", wait_jobs, stages, jobs, dirs)
    stages.run("pretraining curves (personvit report)", pretrain_report, dirs[0])
    return dirs


def features_stage(stages: Stages, out: Path, market: Path, pre_dirs: list[Path]) -> dict[str, dict]:
    """Retrieval and the person-vs-scene test of each teacher and of random init, no fine-tuning."""
    import torch

    from examples.demo.pairs import person_vs_scene
    from personvit.viz.inputs import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    no_ft: dict[str, dict] = {}
    for pre_dir, (_, tag, name, _) in zip(pre_dirs, PRETRAININGS):
        no_ft[f"{name} CLS"] = stages.run(
            f"retrieval, {name}, no fine-tuning", evaluate_features, out, market, str(pre_dir), tag
        )
    no_ft["random-init CLS"] = stages.run(
        "retrieval, random init, no fine-tuning", evaluate_features, out, market, "", "random"
    )
    models = {f"{name} CLS": load_model(d) for d, (_, _, name, _) in zip(pre_dirs, PRETRAININGS)}
    torch.manual_seed(0)
    models["random-init CLS"] = load_model(pre_dirs[0], random_weights=True)
    pairs = stages.run("person-vs-scene triplets", person_vs_scene, models)
    for name, scores in pairs.items():
        no_ft.setdefault(name, {}).update({f"person_{k}": v for k, v in scores.items()})
    return no_ft


def finetune_stage(stages: Stages, executor: str, out: Path, market: Path, pre_dirs: list[Path], seeds: int,
                   size: DemoSize) -> tuple[list, list[Path]]:
    """Fine-tuning from each teacher and from random init, `seeds` each, as one job array."""
    from examples.demo import report
    from slurm.jobs import TrainJob

    starts = [(tag, name, str(d)) for d, (_, tag, name, _) in zip(pre_dirs, PRETRAININGS)]
    starts.append(("random", "random init", ""))
    tasks, run_dirs = [], []
    for tag, _, init in starts:
        for seed in range(seeds):
            run_dir = out / "finetune" / f"{tag}-seed{seed}"
            over = [f"data.shards={market}", f"model.init={init}", f"run.seed={seed}",
                    f"train.epochs={size.finetune_epochs}"]
            tasks.append(TrainJob("finetune", str(FINETUNE_CFG), over, run_dir=str(run_dir), max_requeues=0))
            run_dirs.append(run_dir)
    os.environ["OMP_NUM_THREADS"] = "1"  # one thread per fine-tune so two share the two cores
    jobs = submit_jobs(executor, out / "jobs", "demo-finetune", tasks)
    stages.run(f"fine-tuning ({len(tasks)}-task job array)", wait_jobs, stages, jobs, run_dirs)
    results = [report.StartResult(name) for _, name, _ in starts]
    for i, run_dir in enumerate(run_dirs):
        results[i // seeds].add(i % seeds, report.read_results(run_dir))
    return results, run_dirs


def run_demo(out: Path, size_name: str, seeds: int, executor_wanted: str) -> dict:
    """Run every stage into `out`; returns the summary (also written to `out/summary.json`)."""
    from examples.demo import report

    size = SIZES[size_name]
    stages = Stages()
    executor, why = choose_executor(executor_wanted)
    stages.say(
        f"PersonViT demo, size {size_name}, {seeds} seeds; jobs run through "
        f"{'a local Slurm cluster' if executor == 'slurm' else 'submitit local executor'} ({why})"
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    out = out.resolve()
    # Jobs import this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cluster = stages.run("start local Slurm", start_slurm, out / "slurm") if executor == "slurm" else None
    try:
        shards = stages.run("synthetic pedestrians -> shards", make_data, out, size)
        stages.run("verify shards", verify_data, shards)
        pre_dirs = pretrain_stage(stages, executor, out, shards, size)
        losses = report.loss_first_last(
            pre_dirs[0] / "metrics.jsonl", keys=("loss", "dino", "mim", "teacher_entropy", "teacher_mean_entropy")
        )
        no_ft = features_stage(stages, out, shards["market"], pre_dirs)
        starts, run_dirs = finetune_stage(stages, executor, out, shards["market"], pre_dirs, seeds, size)
        images = stages.run("visualisations", visualize, out, pre_dirs[0], shards["market"], run_dirs[0])
    finally:
        if cluster is not None:
            cluster.stop()

    table = report.render_table(starts, no_ft, losses)
    verdict = report.pretraining_verdict(starts[0], starts[-1])
    ablation = report.ablation_line(starts[0], starts[1])
    info = {
        "size": size_name,
        "executor": executor,
        "seeds": seeds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "data": f"{size.identities} labeled identities (half train, half test; {size.val_identities} training "
        f"people also form the validation split), {size.unlabeled} unlabeled images, a scene of their own each",
        "pretrain": f"{PRETRAIN_CFG.relative_to(REPO)}, {size.pretrain_epochs} epochs, batch {size.pretrain_batch}, "
        f"{' '.join(PRETRAIN_AUG)}; DINO-only: loss.lambda2=0",
        "finetune": f"{FINETUNE_CFG.relative_to(REPO)}, {size.finetune_epochs} epochs",
    }
    (out / "RESULTS.md").write_text(report.render_markdown(table, f"{verdict} {ablation}", info, stages.times, images))
    summary = {
        **info,
        "stage_seconds": stages.times,
        "total_seconds": time.monotonic() - stages.t0,
        "losses": losses,
        "no_finetune": {k: {m: v[m] for m in ("mAP", "rank1", "person_cls", "person_patch") if m in v}
                        for k, v in no_ft.items()},
        "finetune": {s.name: {"seeds": s.seeds, "mAP": s.mAP, "rank1": s.rank1} for s in starts},
        "verdict": verdict,
        "ablation": ablation,
        "images": images,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n" + table + "\n\n" + verdict + "\n" + ablation, flush=True)
    stages.say(f"done in {summary['total_seconds']:.0f} s; report: {out / 'RESULTS.md'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="output folder (replaced; default demo_out)")
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="full (~20 min) or small (CI)")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per start (default 3)")
    p.add_argument(
        "--executor",
        choices=["auto", "slurm", "local"],
        default="auto",
        help="auto: local Slurm when it can be started here, else submitit's local executor",
    )
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"demo: --seeds must be >= 1, got {args.seeds}")
    run_demo(Path(args.out), args.size, args.seeds, args.executor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
