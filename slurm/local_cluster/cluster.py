"""`LocalSlurm`: a real Slurm with accounting in a temporary folder, on one node or several.

One node (the default): slurmctld, slurmd, slurmdbd and mariadb on 127.0.0.1 with free ports, node
`localhost`. N nodes: one network namespace per node (slurm/local_cluster/netns.py), each with its
own address, hostname and slurmd (`node01` ..), the controller, slurmdbd and mariadb in a `login`
namespace on the same bridge, and the Slurm clients wrapped (`<root>/bin`, first on `env["PATH"]`)
so they run inside the cluster. Everything runs as root without systemd or munge (`auth/none`),
every file lives under one folder, and nothing goes in /etc.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from slurm.local_cluster.config import CLUSTER_NAME, Layout, gres_conf, slurm_conf, slurmdbd_conf
from slurm.local_cluster.netns import LOGIN, ClusterNetwork, NamespaceError, missing_tools, node_names
from slurm.local_cluster.processes import MARKER_ENV, alive, leftover_pids, listening, tail, terminate

CLIENTS = ("sbatch", "srun", "salloc", "squeue", "scontrol", "scancel", "sinfo", "sacct", "sacctmgr", "sstat")
NETNS_PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819, "mariadb": 3306}  # private per cluster
SOCKET_PATH_MAX = 107  # bytes of a Unix socket path (sun_path is 108 with the NUL)
STEP_SOCKET = "/node01/node01_4294967295.4294967291"  # the longest socket slurmstepd makes in the spool
STATE_FILE = "cluster.json"
JOB_ID_BLOCK = 100_000
# Each cluster started by this process numbers its jobs from a block of its own: submitit caches job
# states process-wide by job id, so job 1 of a second cluster would look already COMPLETED.
_job_id_blocks = itertools.count()  # what `attach` (and `down`) needs to find everything this cluster made


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (packages missing, not root, no namespaces); the message says which."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hostname_is_loopback() -> bool:
    """True when `hostname` resolves to 127.0.0.1 (then the daemons may bind loopback only)."""
    try:
        return socket.gethostbyname(socket.gethostname()) == "127.0.0.1"
    except OSError:
        return False


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def missing_requirements(accounting: bool = True, nodes: int = 1) -> str | None:
    """Why this machine cannot run the harness, or None when it can (namespaces are tried at start)."""
    if os.geteuid() != 0:
        return "not root (the daemons run as root with auth/none); run as root or `make slurm-deps` on CI"
    needed = ["slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel"]
    if accounting:
        needed += ["slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db"]
    missing = [b for b in needed if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"missing Slurm binaries {missing} (run `make slurm-deps` as root)"
    return missing_tools() if nodes > 1 else None


class LocalSlurm:
    """One cluster (partition `debug`) living in `root`.

    Args:
        root: folder for config, state, logs and database; a fresh temp folder when None.
        accounting: run mariadb + slurmdbd (needed for `sacct` and submitit's job states).
        cpus: CPUs each node advertises (default: this machine's count; nodes share them).
        gpus: fake GPUs per node (gres mapped to /dev/null, /dev/zero, ...) for resource tests; 0 = no gres.
        nodes: 1 = node `localhost` on 127.0.0.1; more = `node01`.. in one network namespace each.
        start_timeout_s: how long to wait for the nodes to become idle.
    """

    def __init__(self, root: str | Path | None = None, accounting: bool = True, cpus: int | None = None,
                 gpus: int = 2, nodes: int = 1, start_timeout_s: float = 60.0):
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="personvit-slurm-"))
        self.accounting = accounting
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = gpus
        self.nodes = nodes
        self.start_timeout_s = start_timeout_s
        self.network: ClusterNetwork | None = None
        self.pids: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.spool = self.root / "spool"
        self.first_job_id = 1
        self._procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ environment
    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def bin_dir(self) -> Path:
        """The client wrappers of a multi-node cluster (first on `env["PATH"]`)."""
        return self.root / "bin"

    @property
    def node_names(self) -> list[str]:
        return list(self.network.nodes) if self.network else ["localhost"]

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF (and the client wrappers on PATH): for every client call."""
        env = {**os.environ, "SLURM_CONF": str(self.conf), MARKER_ENV: str(self.root)}
        if self.network:
            env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        return env

    def run(self, *cmd: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster; returns the completed process."""
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def layout(self) -> Layout:
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 512
        if self.network is None:
            return Layout(self.root, self.spool, ("localhost", "127.0.0.1"), (("localhost", "127.0.0.1"),), self.ports,
                          self.cpus, max(1024, mem_mb), self.gpus, self.accounting, _hostname_is_loopback(),
                          self.first_job_id)
        net = self.network
        return Layout(self.root, self.spool, (LOGIN, net.address(LOGIN)), tuple((n, net.address(n)) for n in net.nodes),
                      self.ports, self.cpus, max(1024, mem_mb // self.nodes), self.gpus, self.accounting,
                      first_job_id=self.first_job_id)

    def _write_configs(self) -> None:
        for sub in ("state", "log", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for node in (self.network.nodes if self.network else ("",)):
            (self.spool / node).mkdir(parents=True, exist_ok=True)
        lay = self.layout()
        self.conf.write_text(slurm_conf(lay))
        if self.gpus:
            (self.root / "gres.conf").write_text(gres_conf(self.gpus))
        if self.accounting:
            dbd = self.root / "slurmdbd.conf"
            dbd.write_text(slurmdbd_conf(lay))
            dbd.chmod(0o600)  # slurmdbd refuses a readable config

    # ------------------------------------------------------------------ state on disk
    def _save_state(self) -> None:
        state = {"pids": self.pids, "ports": self.ports, "nodes": self.nodes, "accounting": self.accounting,
                 "token": self.network.token if self.network else None, "spool": str(self.spool)}
        (self.root / STATE_FILE).write_text(json.dumps(state))

    @classmethod
    def attach(cls, root: str | Path) -> LocalSlurm:
        """The cluster a `start` left in `root` (for `down` / `status` from another process)."""
        root = Path(root)
        state = json.loads((root / STATE_FILE).read_text())
        cluster = cls(root, accounting=state["accounting"], nodes=state["nodes"])
        cluster.pids = {k: int(v) for k, v in state["pids"].items()}
        cluster.ports = state["ports"]
        cluster.spool = Path(state["spool"])
        if state["token"]:
            cluster.network = ClusterNetwork(state["token"], tuple(node_names(state["nodes"])), root / "hosts")
        return cluster

    # ------------------------------------------------------------------ daemons
    def _spawn(self, name: str, argv: list[str], host: str | None = None) -> None:
        """Start a daemon (as `host` of the simulated network when there is one) and record its PID."""
        if self.network is not None:
            argv = [*self.network.enter(host or LOGIN), *argv]
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.root)
        log.close()
        self._procs.append(proc)
        self.pids[name] = proc.pid
        self._save_state()

    def _wait(self, what: str, ok, timeout: float, log_name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            for name, pid in self.pids.items():
                if not alive(pid):
                    raise SlurmUnavailable(f"{name} exited during start-up; see {self.root / 'log'}: "
                                           f"{tail(self.root / 'log' / log_name)} | {tail(self.root / 'log' / f'{name}.stdout')}")
            time.sleep(0.1)
        raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.root / 'log'}")

    def _start_accounting(self) -> None:
        db = self.root / "db"
        proc = subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
                               "--auth-root-authentication-method=normal", "--skip-test-db",
                               "--skip-name-resolve"], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"mariadb-install-db failed: {proc.stderr.strip()[-300:]}")
        self._spawn("mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={db}", "--user=root",
                                 "--bind-address=127.0.0.1", f"--port={self.ports['mariadb']}",
                                 f"--socket={self.spool / 'mysql.sock'}", f"--pid-file={self.root / 'mariadbd.pid'}",
                                 "--skip-name-resolve", f"--log-error={self.root / 'log/mariadbd.log'}"])
        self._wait("mariadb", lambda: listening(self.pids["mariadbd"], self.ports["mariadb"]), 60, "mariadbd.log")
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])  # reads slurmdbd.conf beside SLURM_CONF
        self._wait("slurmdbd", lambda: listening(self.pids["slurmdbd"], self.ports["slurmdbd"]), 60, "slurmdbd.log")
        deadline = time.monotonic() + 30
        while True:  # slurmdbd creates its tables on first start; sacctmgr works once they exist
            proc = self.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME, check=False)
            if proc.returncode == 0 or "already exists" in proc.stdout + proc.stderr:
                break
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"sacctmgr add cluster failed: {proc.stderr.strip()}")
            time.sleep(0.3)

    def _start_network(self) -> None:
        self.network = ClusterNetwork.new(self.root, self.nodes)
        self._save_state()  # before anything exists: a failed start can still be cleaned up by `down`
        try:
            self.network.create()
        except NamespaceError as e:
            raise SlurmUnavailable(f"cannot make network namespaces for {self.nodes} nodes: {e}") from None
        self.network.write_client_wrappers(self.bin_dir, {c: _which(c) for c in CLIENTS if shutil.which(c)})

    def start(self) -> LocalSlurm:
        """Start every daemon and wait until all nodes are idle. Raises SlurmUnavailable with the reason."""
        why = missing_requirements(self.accounting, self.nodes)
        if why:
            raise SlurmUnavailable(why)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        self.first_job_id = 1 + JOB_ID_BLOCK * next(_job_id_blocks)
        if len(str(self.spool)) + len(STEP_SOCKET) > SOCKET_PATH_MAX:
            # slurmstepd cannot bind a longer socket path ("Unix socket name exceeded maximum length").
            self.spool = Path(tempfile.mkdtemp(prefix="pvslurm-spool-"))
        try:
            if self.nodes > 1:
                self.ports = dict(NETNS_PORTS)
                self._start_network()
            else:
                self.ports = {"slurmctld": _free_port(), "slurmd": _free_port()}
                if self.accounting:
                    self.ports.update(slurmdbd=_free_port(), mariadb=_free_port())
            self._write_configs()
            if self.accounting:
                self._start_accounting()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
            for node in self.node_names:
                name = "slurmd" if self.network is None else f"slurmd@{node}"
                self._spawn(name, [_which("slurmd"), "-D", "-N", node], host=node)
            self._wait("nodes idle", self._nodes_idle, self.start_timeout_s, "slurmctld.log")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_states(self) -> dict[str, str]:
        try:
            proc = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return {}
        return dict(line.split(None, 1) for line in proc.stdout.strip().splitlines() if " " in line)

    def _nodes_idle(self) -> bool:
        states = self._node_states()
        return sorted(states) == sorted(self.node_names) and set(states.values()) == {"idle"}

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for an empty queue and idle nodes (between tests)."""
        deadline = time.monotonic() + timeout
        queue, nodes = "", {}
        while time.monotonic() < deadline:
            queue = self.run("squeue", "-h", "-o", "%i %T %r", check=False).stdout.strip()
            nodes = self._node_states()
            if not queue and nodes and set(nodes.values()) == {"idle"}:
                return
            time.sleep(0.3)
        raise TimeoutError(f"local Slurm not idle after {timeout:.0f} s (queue: {queue.replace(chr(10), '; ') or 'empty'}"
                           f"; nodes: {nodes})")

    def stop(self) -> None:
        """Cancel jobs, shut the daemons down, kill this cluster's leftovers (and only those), then
        delete its namespaces. The hosts bind mounts live in the daemons' private mount namespaces
        and go with them."""
        if alive(self.pids.get("slurmctld", -1)):
            self.run("scancel", "--full", "--user=root", check=False, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if not self.run("squeue", "-h", "-o", "%i", check=False, timeout=5).stdout.strip():
                        break
                except subprocess.TimeoutExpired:
                    break
                time.sleep(0.3)
            try:
                self.run("scontrol", "shutdown", check=False, timeout=10)
            except subprocess.TimeoutExpired:
                pass
        order = [n for n in self.pids if n.startswith("slurmd")] + ["slurmctld", "slurmdbd", "mariadbd"]
        for name in order:
            terminate(self.pids.get(name))
        for proc in self._procs:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        for pid in leftover_pids(self.root):
            terminate(pid, grace_s=1.0)
        if self.network is not None:
            self.network.destroy()
        if self.spool.parent != self.root:  # the short spool made outside a long root
            shutil.rmtree(self.spool, ignore_errors=True)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

