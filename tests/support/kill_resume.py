"""Run a CLI command, SIGKILL it at a chosen point, rerun the same command: the exact-resume harness.

Used by the pretraining and fine-tuning exactness tests::

    attempts = kill_and_resume(cmd, [metrics_step_reached(run / "metrics.jsonl", 7),
                                     checkpoint_step_reached(run / "checkpoints", 20)], env=env)
    assert [a.killed for a in attempts] == [True, True, False]

The SIGKILL reaches the whole process tree at once (torchrun, its workers, their DataLoader
workers): nothing gets to clean up, as with a node failure or `scancel -s KILL`. A process-group kill
is not enough: torchrun starts each worker in a session of its own, so killing torchrun's group
leaves orphaned workers that keep training into the same run folder. Triggers are polled predicates on files the run writes; the kill lands wherever
the run is at that moment (mid-step, mid-checkpoint-write, ...), which is the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Attempt",
    "kill_tree",
    "checkpoint_step_reached",
    "kill_and_resume",
    "metrics_step_reached",
    "run_once",
]

Trigger = Callable[[], bool]


@dataclass
class Attempt:
    """One launch of the command.

    Attributes:
        killed: the trigger fired and the process tree was SIGKILLed (or sent `stop_signal`).
        returncode: exit status (negative signal number when killed).
        seconds: wall time of the launch.
        output: combined stdout + stderr.
    """

    killed: bool
    returncode: int
    seconds: float
    output: str


def _last_json_line(path: Path) -> dict | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue  # a line cut short while being written
    return None


def metrics_step_reached(path: str | Path, step: int) -> Trigger:
    """Fires once the last complete line of `metrics.jsonl` has `"step" >= step`."""
    path = Path(path)

    def fired() -> bool:
        row = _last_json_line(path)
        return row is not None and int(row.get("step", -1)) >= step

    fired.__name__ = f"metrics_step>={step}"
    return fired


def checkpoint_step_reached(ckpt_dir: str | Path, step: int) -> Trigger:
    """Fires once a committed checkpoint (`ckpt-NNNNNNNNN.commit`) of step >= `step` exists."""
    ckpt_dir = Path(ckpt_dir)

    def fired() -> bool:
        try:
            names = [p.name for p in ckpt_dir.glob("ckpt-*.commit")]
        except OSError:
            return False
        return any(int(n[5:14]) >= step for n in names)

    fired.__name__ = f"checkpoint_step>={step}"
    return fired


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may contain spaces
        children.setdefault(ppid, []).append(int(entry))
    return children


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill_tree(root: int) -> None:
    """SIGKILL `root` and all its descendants, stopping them all first so none is orphaned mid-way."""
    stopped: set[int] = set()
    while True:  # a stopped process forks no more; repeat until the tree is stable
        tree, frontier = [], [root]
        children = _children_map()
        while frontier:
            pid = frontier.pop()
            tree.append(pid)
            frontier.extend(children.get(pid, []))
        new = [p for p in tree if p not in stopped]
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped.update(new)
    for pid in stopped:
        _signal(pid, signal.SIGKILL)


def run_once(
    cmd: Sequence[str],
    trigger: Trigger | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300.0,
    poll_s: float = 0.01,
    stop_signal: int | None = None,
) -> Attempt:
    """Launch `cmd`; SIGKILL its whole process tree as soon as `trigger()` is true.

    Args:
        cmd: the command line.
        trigger: predicate polled every `poll_s`; None = run to completion.
        stop_signal: send this signal to the launch's process group instead of SIGKILLing the tree
            (SIGINT: what Ctrl-C in a terminal does), then wait for it to exit by itself.
        env: environment (default: inherited).
        cwd: working directory.
        timeout: the launch is killed and an AssertionError raised past this many seconds.
        poll_s: polling period.
    """
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty run can never block on it
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env else None,
            cwd=cwd,
            start_new_session=True,
        )
        killed = False
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout:
                    kill_tree(proc.pid)
                    proc.wait()
                    log.seek(0)
                    raise AssertionError(
                        f"{' '.join(cmd)} ran past {timeout:.0f} s:\n{log.read().decode()[-4000:]}"
                    )
                if trigger is not None and trigger():
                    if stop_signal is None:
                        kill_tree(proc.pid)
                    else:
                        os.killpg(proc.pid, stop_signal)
                        proc.wait(timeout=max(timeout - (time.monotonic() - t0), 1.0))
                    killed = True
                    break
                time.sleep(poll_s)
            proc.wait()
        finally:
            if proc.poll() is None:  # an exception above: never leave a tree running
                kill_tree(proc.pid)
                proc.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")
    return Attempt(killed, proc.returncode, time.monotonic() - t0, output)


def kill_and_resume(
    cmd: Sequence[str],
    triggers: Sequence[Trigger],
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300.0,
) -> list[Attempt]:
    """Run `cmd` once per trigger, SIGKILLed when it fires, then once more to completion.

    Every launch is the same command line: resuming must need no flag.

    Args:
        cmd: the command line.
        triggers: kill points, in order (later ones should lie further into the run).
        env, cwd, timeout: as `run_once`, per launch.
    Returns:
        The attempts; the last one ran to completion (check its `returncode`).
    Raises:
        AssertionError: a launch exited non-zero without being killed, or a trigger never fired
            because the run finished first (the kill point was past the end of the run).
    """
    attempts = []
    for trigger in triggers:
        attempt = run_once(cmd, trigger, env, cwd, timeout)
        attempts.append(attempt)
        if not attempt.killed:
            raise AssertionError(
                f"trigger {getattr(trigger, '__name__', trigger)} never fired; the run exited with "
                f"{attempt.returncode}:\n{attempt.output[-4000:]}"
            )
    final = run_once(cmd, None, env, cwd, timeout)
    attempts.append(final)
    if final.returncode != 0:
        raise AssertionError(f"resumed run exited with {final.returncode}:\n{final.output[-4000:]}")
    return attempts
