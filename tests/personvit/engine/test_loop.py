"""`engine/loop.py`: positions, the checkpoint policy and the preemption protocol, on a counter trainer.

The "trainer" is a real stateful part (a counter of the samples it has seen) and the checkpoints are
real files in a real `CheckpointManager`; a resumed loop must end where an uninterrupted one does.
"""

from __future__ import annotations

import pytest

from personvit import preemption
from personvit.checkpoint import CheckpointError, CheckpointManager
from personvit.engine.loop import Checkpointer, Position, StepOutput, TrainLoop
from personvit.runlog import MetricsLogger

PER_EPOCH = [3, 2, 4]


class Counter:
    """Sums the batch values it was stepped with."""

    def __init__(self) -> None:
        self.total = 0

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.total = state["total"]


class Where:
    """The loop position, as a trainer stores it."""

    def __init__(self, pos: Position, must_match: int = 7) -> None:
        self.pos, self.must_match = pos, must_match

    def state_dict(self) -> dict:
        return {"next_epoch": self.pos.epoch, "next_batch": self.pos.batch, "layout": self.must_match}

    def load_state_dict(self, state: dict) -> None:
        if state["layout"] != self.must_match:
            raise ValueError(f"layout {state['layout']}, this run has {self.must_match}")
        self.pos.epoch, self.pos.batch = state["next_epoch"], state["next_batch"]


def _loop(tmp_path, every: int = 0, stop_at: int | None = None, must_match: int = 7):
    pos, counter = Position(), Counter()
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=100)
    ckpt = Checkpointer(manager)
    ckpt.register(None, Where(pos, must_match))
    ckpt.register("counter", counter)
    seen: list[tuple[int, int, int]] = []

    def step_fn(at: Position, value: int) -> StepOutput:
        seen.append((at.step, at.epoch, at.batch))
        counter.total += value
        if stop_at is not None and at.step + 1 == stop_at:
            preemption.request_stop("test")
        return StepOutput({"value": value}, {"total": counter.total})

    def batches(epoch: int, start: int):
        return iter(range(100 * epoch + start, 100 * epoch + PER_EPOCH[epoch]))

    metrics = MetricsLogger(tmp_path / "metrics.jsonl", True)
    loop = TrainLoop("test", len(PER_EPOCH), PER_EPOCH.__getitem__, batches, step_fn, ckpt, metrics, every)
    return loop, pos, counter, ckpt, seen


@pytest.fixture(autouse=True)
def _no_stop():
    preemption.reset()
    yield
    preemption.reset()


def test_positions_and_saves_of_an_uninterrupted_run(tmp_path):
    loop, pos, counter, ckpt, seen = _loop(tmp_path, every=2)
    assert loop.run(pos) == Position(step=9, epoch=3, batch=0)
    assert seen[:4] == [(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0)]
    assert counter.total == sum(100 * e + b for e, n in enumerate(PER_EPOCH) for b in range(n))
    # every 2 steps, plus the epoch ends at steps 3, 5 and 9; each step saved once
    steps = sorted(int(p.name.split("-")[1].split(".")[0]) for p in ckpt.manager.committed())
    assert steps == [2, 3, 4, 5, 6, 8, 9]


def test_preemption_saves_once_raises_and_the_rerun_ends_equal(tmp_path):
    loop, pos, counter, ckpt, _ = _loop(tmp_path / "a", stop_at=4)
    with pytest.raises(preemption.Preempted):
        loop.run(pos)
    assert pos == Position(step=4, epoch=1, batch=1)
    state = ckpt.manager.load_latest()
    assert (state["step"], state["next_epoch"], state["next_batch"]) == (4, 1, 1)
    assert state["counter"] == {"total": counter.total}

    preemption.reset()
    again, pos2, counter2, ckpt2, seen = _loop(tmp_path / "a")
    where, step = ckpt2.load_latest()
    pos2.step = step
    again.run(pos2)
    assert seen[0] == (4, 1, 1)
    ref, ref_pos, ref_counter, _, _ = _loop(tmp_path / "b")
    ref.run(ref_pos)
    assert (pos2, counter2.total) == (ref_pos, ref_counter.total)


def test_an_incompatible_checkpoint_is_refused_naming_the_file(tmp_path):
    loop, pos, *_ = _loop(tmp_path)
    loop.run(pos)
    *_, ckpt, _ = _loop(tmp_path, must_match=8)
    with pytest.raises(CheckpointError, match=r"ckpt-.*: layout 7, this run has 8"):
        ckpt.load_latest()
