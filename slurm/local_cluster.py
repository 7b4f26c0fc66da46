"""A real single-node Slurm on 127.0.0.1 in a temporary folder: for tests, the demo and trials.

Starts mariadb + slurmdbd (accounting, so `sacct` and submitit's job states work as on a real
cluster), then slurmctld + slurmd, all as root without systemd or munge (`auth/none`), every file
under one folder and every client pointed at it through `SLURM_CONF`. Nothing goes in /etc.
Facts behind each setting: ../shared/notes/slurm-local.md.

    with LocalSlurm() as cluster:            # tests, the demo
        subprocess.run(["sbatch", ...], env=cluster.env)

    python -m slurm.local_cluster up         # users: prints `export SLURM_CONF=...`
    python -m slurm.local_cluster down

Stopping kills only what this harness started: the daemons by their saved PIDs, then any process
whose environment names this cluster's `slurm.conf` (job steps outlive a dead slurmd).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLUSTER_NAME = "ci"
MARKER_ENV = "PERSONVIT_LOCAL_SLURM"  # set on every daemon we start: how leftovers are recognised
STATE_POINTER = Path(tempfile.gettempdir()) / "personvit-local-slurm.json"  # for `up` / `down`
DAEMONS = ("slurmctld", "slurmd")
ACCOUNTING_DAEMONS = ("mariadbd", "slurmdbd")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (packages missing, not root, ports taken); the message says which."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _hostname_is_loopback() -> bool:
    """True when `hostname` resolves to 127.0.0.1 (then the daemons may bind loopback only)."""
    try:
        return socket.gethostbyname(socket.gethostname()) == "127.0.0.1"
    except OSError:
        return False


def missing_requirements(accounting: bool = True) -> str | None:
    """Why this machine cannot run the harness, or None when it can."""
    if os.geteuid() != 0:
        return "not root (the daemons run as root with auth/none); run as root or `make slurm-deps` on CI"
    needed = ["slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel"]
    if accounting:
        needed += ["slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db"]
    missing = [b for b in needed if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"missing Slurm binaries {missing} (run `make slurm-deps` as root)"
    return None


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    """One single-node cluster (`localhost`, partition `debug`) living in `root`.

    Args:
        root: folder for config, state, logs and database; a fresh temp folder when None.
        accounting: run mariadb + slurmdbd (needed for `sacct` and submitit's job states).
        cpus: CPUs the node advertises (default: this machine's count).
        gpus: fake GPUs (gres mapped to /dev/null, /dev/zero, ...) for resource tests; 0 = no gres.
        start_timeout_s: how long to wait for the node to become idle.
    """

    def __init__(self, root: str | Path | None = None, accounting: bool = True, cpus: int | None = None,
                 gpus: int = 2, start_timeout_s: float = 60.0):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="personvit-slurm-"))
        self.accounting = accounting
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = gpus
        self.start_timeout_s = start_timeout_s
        self.pids: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self._procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ environment
    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF: pass it to every client call (sbatch, squeue, submitit)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), MARKER_ENV: str(self.root)}

    def run(self, *cmd: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster; returns the completed process."""
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    # ------------------------------------------------------------------ configuration
    def _write_configs(self) -> None:
        for sub in ("state", "spool", "log", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        mem_mb = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 512)
        p = self.ports
        lines = [
            f"ClusterName={CLUSTER_NAME}",
            "SlurmctldHost=localhost(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/none", "CredType=cred/none",
            "AuthInfo=cred_expire=5",  # requeued jobs restart after ~6 s instead of ~2 min
            f"SlurmctldPort={p['slurmctld']}", f"SlurmdPort={p['slurmd']}",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log/slurmctld.log'}", f"SlurmdLogFile={self.root / 'log/slurmd.log'}",
            "MailProg=/bin/true",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill", "SchedulerParameters=bf_interval=1,sched_interval=1",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "EnforcePartLimits=ALL",  # an impossible job is rejected at submit instead of pending forever
            "ReturnToService=2", "MpiDefault=none",
            "KillWait=2",  # submitit ignores SIGTERM: a killed job trains on until SIGKILL; keep that short
            "MinJobAge=300",
        ]
        if _hostname_is_loopback():
            lines.append("CommunicationParameters=NoCtldInAddrAny,NoInAddrAny")
        if self.accounting:
            lines += ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
                      f"AccountingStoragePort={p['slurmdbd']}", "JobAcctGatherType=jobacct_gather/linux",
                      "JobAcctGatherFrequency=30"]
        else:
            lines += ["AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none"]
        gres = ""
        if self.gpus:
            lines.append("GresTypes=gpu")
            gres = f" Gres=gpu:{self.gpus}"
            devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"][: self.gpus]
            (self.root / "gres.conf").write_text("".join(f"Name=gpu File={d}\n" for d in devices))
        lines += [
            f"NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={self.cpus} "
            f"RealMemory={mem_mb}{gres} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if self.accounting:
            dbd = self.root / "slurmdbd.conf"
            dbd.write_text("\n".join([
                "AuthType=auth/none", "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={p['slurmdbd']}",
                "SlurmUser=root", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
                f"StoragePort={p['mariadb']}", "StorageUser=root", "StorageLoc=slurm_acct_db",
                f"PidFile={self.root / 'slurmdbd.pid'}", f"LogFile={self.root / 'log/slurmdbd.log'}",
                "CommunicationParameters=NoInAddrAny",  # else it binds 0.0.0.0:6819
            ]) + "\n")
            dbd.chmod(0o600)  # slurmdbd refuses a readable config

    # ------------------------------------------------------------------ daemons
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.root)
        log.close()
        self._procs.append(proc)
        self.pids[name] = proc.pid
        self._save_pids()

    def _save_pids(self) -> None:
        (self.root / "pids.json").write_text(json.dumps({"pids": self.pids, "ports": self.ports}))

    def _wait(self, what: str, ok, timeout: float, log_name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise SlurmUnavailable(f"{name} exited during start-up; see {self.root / 'log'}: "
                                           f"{_tail(self.root / 'log' / log_name)}")
            time.sleep(0.2)
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
                                 f"--socket={self.root / 'mysql.sock'}", f"--pid-file={self.root / 'mariadbd.pid'}",
                                 "--skip-name-resolve", f"--log-error={self.root / 'log/mariadbd.log'}"])
        self._wait("mariadb", lambda: not _port_free(self.ports["mariadb"]), 60, "mariadbd.log")
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])  # reads slurmdbd.conf beside SLURM_CONF
        self._wait("slurmdbd", lambda: not _port_free(self.ports["slurmdbd"]), 60, "slurmdbd.log")
        deadline = time.monotonic() + 30
        while True:  # slurmdbd creates its tables on first start; sacctmgr works once they exist
            proc = self.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME, check=False)
            if proc.returncode == 0 or "already exists" in proc.stdout + proc.stderr:
                break
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"sacctmgr add cluster failed: {proc.stderr.strip()}")
            time.sleep(0.5)

    def start(self) -> LocalSlurm:
        """Start every daemon and wait until the node is idle. Raises SlurmUnavailable with the reason."""
        why = missing_requirements(self.accounting)
        if why:
            raise SlurmUnavailable(why)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = {"slurmctld": _free_port(), "slurmd": _free_port()}
        if self.accounting:
            self.ports.update(slurmdbd=_free_port(), mariadb=_free_port())
        self._write_configs()
        try:
            if self.accounting:
                self._start_accounting()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost"])
            self._wait("node idle", self._node_idle, self.start_timeout_s, "slurmctld.log")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        try:
            proc = self.run("sinfo", "-h", "-n", "localhost", "-o", "%T", check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        return proc.stdout.strip() == "idle"

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for an empty queue and an idle node (between tests)."""
        deadline = time.monotonic() + timeout
        queue = node = ""
        while time.monotonic() < deadline:
            queue = self.run("squeue", "-h", "-o", "%i %T %r", check=False).stdout.strip()
            node = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if not queue and node == "idle":
                return
            time.sleep(0.3)
        raise TimeoutError(f"local Slurm not idle after {timeout:.0f} s (queue: {queue.replace(chr(10), '; ') or 'empty'}"
                           f"; node: {node!r})")

    def stop(self) -> None:
        """Cancel jobs, shut the daemons down, then kill this cluster's leftovers (and only those)."""
        if _alive(self.pids.get("slurmctld", -1)):
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
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd"):
            _terminate(self.pids.get(name))
        for proc in self._procs:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        for pid in leftover_pids(self.root):
            _terminate(pid, grace_s=1.0)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------- process helpers

def _alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int | None, grace_s: float = 8.0) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL."""
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def leftover_pids(root: str | Path) -> list[int]:
    """PIDs of processes started by (or for) the cluster in `root`: daemons, slurmstepd, job tasks."""
    needles = (f"SLURM_CONF={Path(root) / 'slurm.conf'}".encode(), f"{MARKER_ENV}={root}".encode())
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(n in environ for n in needles):
            out.append(int(entry.name))
    return out


def _tail(path: Path, n: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """`python -m slurm.local_cluster {up,down,status}` for trying the launcher by hand."""
    parser = argparse.ArgumentParser(prog="python -m slurm.local_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", help="cluster folder (default: a new temp folder)")
    parser.add_argument("--no-accounting", action="store_true", help="skip mariadb + slurmdbd")
    args = parser.parse_args(argv)
    if args.action == "up":
        if STATE_POINTER.exists():
            print(f"a local cluster is already up (see {STATE_POINTER}); `down` it first", file=sys.stderr)
            return 1
        cluster = LocalSlurm(args.dir, accounting=not args.no_accounting)
        try:
            cluster.start()
        except SlurmUnavailable as e:
            print(f"local Slurm cannot start: {e}", file=sys.stderr)
            return 1
        STATE_POINTER.write_text(json.dumps({"root": str(cluster.root), "pids": cluster.pids}))
        print(f"local Slurm up in {cluster.root}\nexport SLURM_CONF={cluster.conf}")
        return 0
    if not STATE_POINTER.exists():
        print("no local cluster is up", file=sys.stderr)
        return 1 if args.action == "status" else 0
    state = json.loads(STATE_POINTER.read_text())
    cluster = LocalSlurm(state["root"])
    cluster.pids = {k: int(v) for k, v in state["pids"].items()}
    if args.action == "status":
        alive = {k: _alive(v) for k, v in cluster.pids.items()}
        print(f"{cluster.root}: " + ", ".join(f"{k} {'up' if a else 'DOWN'}" for k, a in alive.items()))
        return 0 if all(alive.values()) else 1
    cluster.stop()
    STATE_POINTER.unlink(missing_ok=True)
    print(f"local Slurm in {cluster.root} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
