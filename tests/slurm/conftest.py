"""The local Slurm for tests/slurm: one real cluster (slurmctld, slurmd, slurmdbd + mariadb on
127.0.0.1) per test session, and a 2-node one (a network namespace per node) per module that asks.
Where one cannot run (no packages, not root, no namespaces) its tests skip with the reason; under
CI=true that is a failure instead, because CI must exercise the real scheduler.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from slurm.local_cluster import LocalSlurm, SlurmUnavailable, missing_requirements

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # jobs import tests.slurm.counter_job from the repo root
    sys.path.insert(0, str(REPO))

from tests.slurm.helpers import unavailable  # noqa: E402 - needs the repo root on sys.path


@pytest.fixture(scope="session")
def slurm_tmp(request):
    """This session's private scratch folder.

    Not pytest's basetemp: pytest keeps only the three newest basetemp folders per user and deletes
    older ones whenever another session starts, which on a shared machine removed the live Slurm
    state and run folders of a session still running.
    """
    root = Path(tempfile.mkdtemp(prefix="personvit-slurm-tests-"))
    failed_before = request.session.testsfailed
    yield root
    if request.session.testsfailed > failed_before:
        print(f"\nkept {root} for inspection (logs, run folders, Slurm state)")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tmp_path(slurm_tmp, request) -> Path:
    """Per-test folder inside `slurm_tmp` (overrides pytest's for tests/slurm)."""
    path = slurm_tmp / re.sub(r"[^\w.-]", "_", request.node.name)[:80]
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def slurm_available() -> None:
    """Skip (fail under CI) when this machine cannot run the harness; for tests that start their own."""
    why = missing_requirements(accounting=False)
    if why:
        unavailable(why)


@pytest.fixture(scope="session")
def slurm_cluster(slurm_tmp):
    """A running single-node cluster; SLURM_CONF and PYTHONPATH exported for clients and jobs."""
    yield from _running(LocalSlurm(slurm_tmp / "cluster", accounting=True), nodes=1)


@contextlib.contextmanager
def _exported(cluster: LocalSlurm):
    """SLURM_CONF, PATH (the client wrappers of a multi-node cluster), PYTHONPATH and one thread per
    task exported for clients and jobs while the block runs; the previous values come back after."""
    names = ("SLURM_CONF", "PATH", "PYTHONPATH", "OMP_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["SLURM_CONF"] = str(cluster.conf)
    os.environ["PATH"] = cluster.env["PATH"]
    os.environ["OMP_NUM_THREADS"] = "1"  # jobs inherit it: one thread per task on the 2-core node
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    try:
        yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def slurm_2node(slurm_tmp, request):
    """A running 2-node cluster (node[01-02], one network namespace each), started once per module.

    Clients called by name (sbatch through submitit, squeue, scontrol) find the cluster's wrappers
    first on PATH, which run them inside the cluster's namespaces.
    """
    yield from _running(LocalSlurm(slurm_tmp / f"cluster-2node-{request.module.__name__.rsplit('.', 1)[-1]}",
                                   nodes=2), nodes=2)


def _running(cluster: LocalSlurm, nodes: int):
    """Start `cluster` (skip, or fail under CI, with the reason it cannot), yield it exported, stop it."""
    why = missing_requirements(accounting=True, nodes=nodes)
    if why:
        unavailable(why)
    try:
        cluster.start()
    except SlurmUnavailable as e:
        unavailable(str(e))
    try:
        with _exported(cluster):
            yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster):
    """The session cluster, left with an empty queue after each test."""
    yield slurm_cluster
    slurm_cluster.run("scancel", "--user=root", check=False)
    slurm_cluster.wait_idle(timeout=60)


@pytest.fixture
def counter_recipe(tmp_path) -> Path:
    """Recipe of tests/slurm/counter_job.py: 40 steps of 0.1 s, a checkpoint every 5 steps."""
    path = tmp_path / "counter.yaml"
    path.write_text("steps: 40\nsleep_s: 0.1\nevery_steps: 5\n")
    return path


@pytest.fixture(scope="session")
def synth_shards(slurm_tmp) -> dict[str, Path]:
    """Synthetic pedestrians packed as a LUPerson-style set and a Market-1501-style set (real shards)."""
    from shard_tools.cli import main as shard_tools

    root = slurm_tmp / "data"
    assert shard_tools(["synth", str(root / "synth"), "--identities", "20", "--unlabeled", "200"]) == 0
    lup, market = root / "synth-lup" / "shards", root / "synth-market" / "shards"
    assert shard_tools(["pack", "luperson", str(root / "synth" / "unlabeled"), str(lup), "--maxcount", "100",
                        "--quiet"]) == 0
    assert shard_tools(["pack", "market1501", str(root / "synth"), str(market), "--maxcount", "100", "--quiet"]) == 0
    return {"luperson": lup, "market": market, "raw": root / "synth"}
