"""The demo's results: read the run folders, aggregate over seeds, render the table and RESULTS.md.

Pure functions over what the runs wrote (`results.json`, `metrics.jsonl`), so the table can be
rebuilt from a finished `demo_out/` without training anything.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StartResult:
    """Fine-tuning results of one start (pretrained or random) over seeds; metrics in percent."""

    name: str
    seeds: list[int] = field(default_factory=list)
    mAP: list[float] = field(default_factory=list)
    rank1: list[float] = field(default_factory=list)

    def add(self, seed: int, results: dict[str, Any]) -> None:
        self.seeds.append(seed)
        self.mAP.append(100.0 * float(results["mAP"]))
        self.rank1.append(100.0 * float(results["rank1"]))


def mean_spread(values: list[float]) -> str:
    """`mean +- std` (sample std over seeds; 0 for one seed) with one decimal."""
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {spread:.1f}"


def read_results(run_dir: Path) -> dict[str, Any]:
    """The `results.json` of a fine-tuning or evaluation run; a one-line error when it is missing."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"demo: no results.json in {run_dir} (see the job log there)")
    return json.loads(path.read_text())


def feature_diagnostics(features_npz: Path) -> dict[str, float]:
    """What retrieval numbers alone do not show about features (gallery of a `features.npz`).

    Returns:
        effective_rank: exp(entropy) of the gallery features' normalised PCA spectrum (collapse shows
            as a value near 1);
        top1_same_camera: fraction of queries whose nearest gallery image (all cameras allowed) comes
            from the query's camera (a model matching backgrounds scores high);
        chance_same_camera: the same fraction for a uniformly random neighbour.
    """
    import numpy as np

    with np.load(features_npz, allow_pickle=False) as f:
        q, g, qc, gc = f["q_feats"], f["g_feats"], f["q_camids"], f["g_camids"]
    s = np.linalg.svd(g - g.mean(axis=0), compute_uv=False) ** 2
    p = s[s > 0] / s.sum()
    nearest = (q @ g.T).argmax(axis=1)  # features are L2-normalised: max cosine = min distance
    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "top1_same_camera": float((gc[nearest] == qc).mean()),
        "chance_same_camera": float(np.mean([(gc == c).mean() for c in qc])),
    }


def loss_first_last(
    metrics_path: Path, keys: tuple[str, ...] = ("loss", "dino", "mim"), fraction: float = 0.1
) -> dict[str, tuple[float, float]]:
    """Mean of each pretraining loss over the first and the last `fraction` of the logged steps.

    Means, not single rows: one batch's loss moves by +-0.5 at this size, enough to invert the trend.
    """
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        raise ValueError(f"demo: no loss logged in {metrics_path}")
    n = max(1, int(len(rows) * fraction))
    head, tail = rows[:n], rows[-n:]
    return {
        k: (statistics.fmean(float(r[k]) for r in head), statistics.fmean(float(r[k]) for r in tail))
        for k in keys
        if all(k in r for r in head + tail)
    }


def pretraining_verdict(pre: StartResult, rnd: StartResult) -> str:
    """One honest sentence comparing the starts on paired seeds (same seed, same batches).

    A win is claimed only when the pretrained start beats random init on every seed by more than the
    seed-to-seed spread of either start; a lead on every seed that is smaller is reported as such.
    """
    pairs = list(zip(pre.mAP, rnd.mAP))
    if not pairs:
        return "No fine-tuning results to compare."
    margins = [p - r for p, r in pairs]
    wins = sum(m > 0 for m in margins)
    spread = max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in (pre.mAP, rnd.mAP))
    measured = (
        f"mAP {mean_spread(pre.mAP)} vs {mean_spread(rnd.mAP)}, per-seed margins "
        f"{', '.join(f'{m:+.1f}' for m in margins)}, seed spread up to {spread:.1f}"
    )
    if wins == len(pairs) and len(pairs) > 1 and min(margins) > spread:
        return f"Pretraining helps here: the pretrained start beat random init on all {len(pairs)} seeds ({measured})."
    if wins == len(pairs):
        return (
            f"The pretrained start led random init on all {len(pairs)} seeds, but by less than the seed spread "
            f"({measured}): not claimed as a win at this scale."
        )
    return f"No claim that pretraining helps: the pretrained start beat random init on {wins} of {len(pairs)} seeds ({measured})."


def _pct(res: dict[str, Any], key: str, digits: int) -> str:
    """`res[key]` (a fraction) in percent, or `-` when it was not measured."""
    return f"{100 * res[key]:.{digits}f}" if key in res else "-"


def ablation_line(full: StartResult, dino_only: StartResult) -> str:
    """The paper's "w/o MIM" row in one sentence: DINO-only vs DINO+MIM starts on paired seeds."""
    if not full.mAP or not dino_only.mAP:
        return ""
    margins = [f - d for f, d in zip(full.mAP, dino_only.mAP)]
    return (f"Ablation (paper Table 4, w/o MIM): the DINO-only start reached mAP {mean_spread(dino_only.mAP)} vs "
            f"{mean_spread(full.mAP)} with MIM (per-seed MIM margins {', '.join(f'{m:+.1f}' for m in margins)}).")


def render_table(
    starts: list[StartResult], no_ft: dict[str, dict[str, Any]], losses: dict[str, tuple[float, float]]
) -> str:
    """Markdown tables: fine-tuned starts (mean ± spread, per seed), retrieval without fine-tuning, losses.

    Args:
        starts: one StartResult per start, in display order.
        no_ft: evaluation results without fine-tuning, keyed by a feature name.
        losses: pretraining losses (first, last).
    """
    lines = [
        "| start | seeds | mAP % | Rank-1 % | mAP per seed | Rank-1 per seed |",
        "|---|---|---|---|---|---|",
    ]
    for s in starts:
        per_map = ", ".join(f"{v:.1f}" for v in s.mAP)
        per_r1 = ", ".join(f"{v:.1f}" for v in s.rank1)
        lines.append(
            f"| {s.name} | {len(s.seeds)} | {mean_spread(s.mAP)} | {mean_spread(s.rank1)} "
            f"| {per_map} | {per_r1} |"
        )
    lines += [
        "",
        "| features, no fine-tuning | mAP % | Rank-1 % | effective rank | top-1 from the query's camera "
        "| same person over same scene (CLS / mean patch) |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in no_ft.items():
        rank = f"{res['effective_rank']:.1f}" if "effective_rank" in res else "-"
        cam = (f"{100 * res['top1_same_camera']:.0f}% (chance {100 * res['chance_same_camera']:.0f}%)"
               if "top1_same_camera" in res else "-")  # fmt: skip
        person = " / ".join(_pct(res, k, 0) for k in ("person_cls", "person_patch") if k in res) or "-"
        lines.append(f"| {name} | {_pct(res, 'mAP', 1)} | {_pct(res, 'rank1', 1)} | {rank} | {cam} | {person} |")
    lines += [
        "",
        "| pretraining loss (mean of the first / last 10% of logged steps) | first | last |",
        "|---|---|---|",
    ]
    for key, (first, last) in losses.items():
        lines.append(f"| {key} | {first:.3f} | {last:.3f} |")
    return "\n".join(lines)


def render_markdown(
    table: str, verdict: str, info: dict[str, Any], stage_times: dict[str, float], images: list[str]
) -> str:
    """The whole RESULTS.md: how it ran, the tables, the verdict, stage timings and the pictures."""
    out = [
        "# PersonViT demo results",
        "",
        f"Size `{info['size']}`, executor **{info['executor']}**, {info['seeds']} seeds per start, "
        f"measured {info['date']} on {info['host']} ({info['cpus']} CPUs).",
        "",
        f"Data: {info['data']}.",
        f"Pretraining: {info['pretrain']}.",
        f"Fine-tuning: {info['finetune']}.",
        "",
        table,
        "",
        f"**{verdict}**",
        "",
        "## Stage timings",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    out += [f"| {name} | {sec:.1f} |" for name, sec in stage_times.items()]
    out += [f"| total | {sum(stage_times.values()):.1f} |", "", "## Visualisations", ""]
    out += [f"![{Path(p).stem}]({p})" for p in images]
    return "\n".join(out) + "\n"
