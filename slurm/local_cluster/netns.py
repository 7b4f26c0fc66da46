"""The simulated network of a multi-node local cluster: one network namespace per node.

    login namespace (slurmctld, slurmdbd, mariadb)      node namespaces (one slurmd each)
      br0 10.77.0.1/24 --- v-node01 <== veth ==> eth0 10.77.0.11/24   node01
                       +-- v-node02 <== veth ==> eth0 10.77.0.12/24   node02

Everything is made inside namespaces this module creates: the bridge lives in the login namespace
and each veth pair is created there with its peer moved straight into the node's namespace, so the
machine's own namespace never holds an interface or an address of the cluster, and nothing is routed
out. The 10.77.0.0/24 addresses exist only inside those namespaces, so parallel clusters can all use
them; their namespace names carry a random token. Names resolve through a per-cluster hosts file
bind-mounted over /etc/hosts in a private mount namespace per process; /etc is never edited, and the
mount disappears with the process that holds it.

Facts behind the choices (../shared/notes/slurm-multinode.md): `nsenter --net` rather than
`ip netns exec` (which remounts /sys and hides the cgroup mounts slurmd needs); every node has a
real address (a loopback-only namespace cannot resolve addresses); clients run inside the cluster.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins namespaces
SUBNET = "10.77.0"  # a /24 that exists only inside this cluster's namespaces
LOGIN = "login"  # the host of slurmctld, slurmdbd and mariadb, and where clients run
MAX_NODES = 99  # two-digit node names: node01 .. node99


class NamespaceError(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip netns`); the message says which command failed."""


def node_names(n: int) -> list[str]:
    """`node01` .. `nodeNN`."""
    if not 1 <= n <= MAX_NODES:
        raise ValueError(f"nodes must be in 1..{MAX_NODES}, got {n}")
    return [f"node{i:02d}" for i in range(1, n + 1)]


def node_list(n: int) -> str:
    """Slurm's compact form of `node_names(n)`: `node[01-02]` (`node01` for one)."""
    return "node01" if n == 1 else f"node[01-{n:02d}]"


def missing_tools() -> str | None:
    """Why namespaces cannot be made here, or None (checked before anything is created)."""
    missing = [t for t in ("ip", "nsenter", "unshare", "mount") if shutil.which(t) is None]
    return f"missing {missing} (iproute2 / util-linux) for network namespaces" if missing else None


@dataclass(frozen=True)
class ClusterNetwork:
    """The namespaces, addresses and hosts file of one cluster.

    Args:
        token: makes the namespace names unique to this cluster (`pvslurm-<token>-node01`).
        nodes: node host names, in order.
        hosts_file: the per-cluster hosts file (written by `create`).
    """

    token: str
    nodes: tuple[str, ...]
    hosts_file: Path

    @classmethod
    def new(cls, root: Path, n_nodes: int) -> ClusterNetwork:
        return cls(secrets.token_hex(3), tuple(node_names(n_nodes)), root / "hosts")

    @property
    def hosts(self) -> tuple[str, ...]:
        return (LOGIN, *self.nodes)

    def namespace(self, host: str) -> str:
        return f"pvslurm-{self.token}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.1" if host == LOGIN else f"{SUBNET}.{10 + self.nodes.index(host) + 1}"

    def hosts_text(self) -> str:
        lines = ["127.0.0.1\tlocalhost", *(f"{self.address(h)}\t{h}" for h in self.hosts)]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ lifecycle
    def create(self) -> None:
        """Make the namespaces, the bridge, one veth pair per node and the hosts file.

        Raises:
            NamespaceError: a command failed (what was made so far is removed first).
        """
        why = missing_tools()
        if why:
            raise NamespaceError(why)
        self.hosts_file.write_text(self.hosts_text())
        login = self.namespace(LOGIN)
        made: list[str] = []  # on failure, remove these and only these
        try:
            for host in self.hosts:
                _ip("netns", "add", self.namespace(host))
                made.append(self.namespace(host))
                _ip("-n", self.namespace(host), "link", "set", "lo", "up")
            _ip("-n", login, "link", "add", "br0", "type", "bridge")
            _ip("-n", login, "addr", "add", f"{self.address(LOGIN)}/24", "dev", "br0")
            _ip("-n", login, "link", "set", "br0", "up")
            for node in self.nodes:
                ns, port = self.namespace(node), f"v-{node}"
                _ip("-n", login, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", login, "link", "set", port, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except NamespaceError:
            _delete(made)
            raise

    def existing_namespaces(self) -> list[str]:
        return [self.namespace(h) for h in self.hosts if (NETNS_DIR / self.namespace(h)).exists()]

    def destroy(self) -> None:
        """Delete this cluster's namespaces (their veths and the bridge go with them).

        Call after the processes inside have ended: a namespace outlives its name while a process holds it.
        """
        _delete(self.existing_namespaces())

    # ------------------------------------------------------------------ entering
    def enter(self, host: str) -> list[str]:
        """Argv prefix that runs a command as `host`: its network, hostname and the cluster's hosts file.

        `nsenter --net` joins the network only (keeps /sys and its cgroup mounts); `unshare` gives the
        command a private mount namespace (the hosts bind mount) and UTS namespace (`hostname` = host,
        which gloo and Slurm resolve to the node's address). All three exec, so the PID of the spawned
        process is the PID of the daemon.
        """
        inner = 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec "$@"'
        return ["nsenter", f"--net={NETNS_DIR / self.namespace(host)}", "--", "unshare", "--mount", "--uts",
                "--propagation", "private", "--", "sh", "-c", inner, "sh", str(self.hosts_file), host]

    def client_wrapper(self, binary: str) -> str:
        """A shell script running the Slurm client `binary` inside this cluster.

        From outside (the machine's namespace has no route in) it enters the login namespace; from
        inside one of the cluster's namespaces (a job calling `srun` or `scontrol`) it runs as is.
        """
        paths = " ".join(shlex.quote(str(NETNS_DIR / self.namespace(h))) for h in self.hosts)
        login = shlex.quote(str(NETNS_DIR / self.namespace(LOGIN)))
        return "\n".join([
            "#!/bin/sh",
            f"# Written by slurm.local_cluster: {Path(binary).name} for the cluster with hosts file {self.hosts_file}.",
            "me=$(readlink /proc/self/ns/net)",
            f"for ns in {paths}; do",
            f'  [ "$me" = "net:[$(stat -L -c %i "$ns")]" ] && exec {shlex.quote(binary)} "$@"',
            "done",
            f"exec nsenter --net={login} -- unshare --mount --propagation private -- "
            f"sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$@\"' {shlex.quote(str(self.hosts_file))} "
            f'{shlex.quote(binary)} "$@"',
        ]) + "\n"

    def write_client_wrappers(self, bin_dir: Path, binaries: dict[str, str]) -> None:
        """One wrapper per client in `bin_dir` (put first on PATH).

        Args:
            bin_dir: folder for the wrappers.
            binaries: client name -> absolute path of the real binary.
        """
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name, path in binaries.items():
            wrapper = bin_dir / name
            wrapper.write_text(self.client_wrapper(path))
            wrapper.chmod(0o755)


def _delete(namespaces: list[str]) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")
