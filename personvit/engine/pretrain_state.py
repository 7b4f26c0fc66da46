"""The pretraining trainer's small checkpointed parts and its sample-key log.

Each part has `state_dict()` / `load_state_dict()` and is registered with the run's `Checkpointer`
(engine/loop.py) next to the networks, optimizer and loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from personvit.data.batch_layout import BatchLayout
from personvit.data.pretrain_loader import PretrainLoader
from personvit.engine.loop import Position
from personvit.runlog import get_logger

__all__ = ["LayoutPart", "LoaderPosition", "SampleKeyLog", "TorchRng", "read_sample_keys"]

log = get_logger(__name__)


class LayoutPart:
    """The run's global batch layout (data/batch_layout.py), fixed at its first start.

    Positions and schedules are indexed by it, so a resume keeps it. With another world size or
    batch size, and `elastic` (the user allowed `world_size` or `data.batch_size_per_rank` to
    change), the saved layout is adopted and the new ranks share its global batch, accumulating
    gradients where needed; otherwise the resume is refused before any weight is loaded.

    Args:
        fresh: the layout this start would make from scratch.
        elastic: whether another world layout may continue the saved one.
    """

    def __init__(self, fresh: BatchLayout, elastic: bool) -> None:
        self.layout, self.elastic = fresh, elastic

    def state_dict(self) -> dict[str, int]:
        return self.layout.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        saved = BatchLayout(**{k: int(v) for k, v in state.items()})
        if saved == self.layout:
            return
        if not self.elastic:
            raise ValueError(
                f"written by a run with {saved.state_dict()}, this run has {self.layout.state_dict()}; resume "
                "needs the same world size and batch size, or --allow-change world_size to continue the "
                "run's global batch on another world size (elastic resume)"
            )
        log.info(
            "elastic resume: keeping the run's global batch of %d (%d ranks x %d) on this start",
            saved.global_batch, saved.world_size, saved.batch_size_per_rank,
        )  # fmt: skip
        self.layout = saved


class LoaderPosition:
    """The loader's place (next epoch and step, from the loop's position) and its corrupt-sample count.

    The loader itself is built after the checkpoint is loaded (its layout comes from it), then set
    with `attach`.
    """

    def __init__(self, pos: Position) -> None:
        self.pos, self.loader, self.corrupt_skipped = pos, None, 0

    def attach(self, loader: PretrainLoader) -> None:
        loader.corrupt_skipped = self.corrupt_skipped
        self.loader = loader

    def state_dict(self) -> dict[str, int]:
        corrupt = self.loader.corrupt_skipped if self.loader is not None else self.corrupt_skipped
        return {"epoch": self.pos.epoch, "next_batch": self.pos.batch, "corrupt_skipped": corrupt}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pos.epoch, self.pos.batch = int(state["epoch"]), int(state["next_batch"])
        self.corrupt_skipped = int(state["corrupt_skipped"])
        if self.loader is not None:
            self.loader.corrupt_skipped = self.corrupt_skipped


class TorchRng:
    """torch's global generator (reseeded per step; anything drawing from it besides is kept)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"torch": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch"])


class SampleKeyLog:
    """Appends `{"step", "first", "keys"}` per micro-batch to `<run>/sample_keys/rank<r>.jsonl`.

    Args:
        run_dir: the run folder.
        rank: this rank.
        enabled: `data.log_sample_keys`; a disabled log writes nothing.
    """

    def __init__(self, run_dir: Path, rank: int, enabled: bool) -> None:
        self._file = None
        if enabled:
            path = Path(run_dir) / "sample_keys" / f"rank{rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, step: int, first: int, keys: list[str]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"step": step, "first": first, "keys": keys}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_sample_keys(run_dir: str | Path) -> dict[int, list[str]]:
    """Step -> the global batch's keys in global order, from every rank's log (last record wins)."""
    records: dict[tuple[int, int], list[str]] = {}
    for path in sorted((Path(run_dir) / "sample_keys").glob("rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            records[(int(row["step"]), int(row["first"]))] = list(row["keys"])
    steps: dict[int, list[str]] = {}
    for (step, _), keys in sorted(records.items()):
        steps.setdefault(step, []).extend(keys)
    return steps
