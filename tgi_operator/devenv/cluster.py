"""A real kube-apiserver + etcd on loopback, started in the background and described by a state dir.

No kubelet, scheduler or controller-manager: the operator needs none. Layout of the state dir:
`state.json` (pids, ports), `kubeconfig` (admin), `pki/`, `etcd-data/`, `*.log`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tgi_operator.devenv.binaries import find_binaries
from tgi_operator.devenv.certs import Pki, create_pki
from tgi_operator.devenv.kubeconfig import admin_credentials, write_kubeconfig

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ClusterStartError(RuntimeError):
    """The control plane did not come up; the message carries the tail of the failing process's log."""


@dataclass
class ClusterState:
    etcd_pid: int
    apiserver_pid: int
    etcd_port: int
    apiserver_port: int
    binaries: str

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open while choosing, so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _alive(pid: int, binary: str) -> bool:
    """True while `pid` runs `binary` (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.split(") ", 1)[1][0] == "Z":
        return False
    # An empty cmdline: the process is inside execve (its new argv is not mapped yet), so it is starting, not gone.
    return not cmdline or Path(cmdline).name == binary


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class DevCluster:
    def __init__(self, state_dir: Path | str, binaries: Path | None = None,
                 apiserver_flags: tuple[str, ...] = ()) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._binaries = binaries
        self._apiserver_flags = apiserver_flags  # added last, so they win (e.g. a tighter --max-*-inflight)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def state(self) -> ClusterState | None:
        if not self._state_file.exists():
            return None
        return ClusterState(**json.loads(self._state_file.read_text()))

    def running(self) -> bool:
        state = self.state()
        return bool(state) and _alive(state.etcd_pid, "etcd") and _alive(state.apiserver_pid, "kube-apiserver")

    # -- lifecycle -------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> bool:
        """Start etcd and kube-apiserver; a no-op (False) when this state dir's cluster already runs."""
        if self.running():
            return False
        if self.state():  # a crashed or half-stopped cluster: clean it before starting afresh
            self.down()
        binaries = self._binaries or find_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = create_pki(self.state_dir / "pki")
        etcd_port, etcd_peer_port, apiserver_port = free_ports(3)

        etcd = self._spawn("etcd", [
            str(binaries / "etcd"),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
            "--unsafe-no-fsync",  # throw-away data: durability is not worth the latency
            "--log-level=warn",
        ])
        apiserver = self._spawn("kube-apiserver", self._apiserver_args(binaries, pki, etcd_port, apiserver_port))
        state = ClusterState(etcd.pid, apiserver.pid, etcd_port, apiserver_port, str(binaries))
        self._state_file.write_text(json.dumps(asdict(state)))
        write_kubeconfig(
            self.kubeconfig, server=state.server, ca_cert=pki.ca_cert,
            user="admin", credentials=admin_credentials(pki.admin_cert, pki.admin_key),
        )
        try:
            self._wait_ready(state, pki, timeout, {"etcd": etcd, "kube-apiserver": apiserver})
        except ClusterStartError:
            self._stop(state)
            raise
        return True

    def down(self) -> None:
        """Stop both processes (TERM, then KILL) and remove the state dir."""
        state = self.state()
        if state:
            self._stop(state)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- internals -------------------------------------------------------------------------------

    def _apiserver_args(self, binaries: Path, pki: Pki, etcd_port: int, port: int) -> list[str]:
        return [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=false",
            "--profiling=false",
            "--enable-priority-and-fairness=false",  # fewer background writes on a 2-core test machine
            "--v=1",
            *self._apiserver_flags,
        ]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.state_dir / f"{name}.log", "ab")
        try:
            # A session of its own: the cluster outlives `dev-cluster up`, and Ctrl-C in the shell leaves it alone.
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ClusterStartError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        finally:
            log.close()

    def _wait_ready(self, state: ClusterState, pki: Pki, timeout: float, children: dict[str, subprocess.Popen]) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            for name, child in children.items():
                if child.poll() is not None:
                    raise ClusterStartError(f"{name} exited ({child.returncode}) during start-up; last log lines:\n"
                                            f"{_tail(self.state_dir / f'{name}.log')}")
            try:
                with urllib.request.urlopen(f"{state.server}/readyz", context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.5)
        raise ClusterStartError(
            f"kube-apiserver not ready after {timeout:.0f}s ({last_error}); last log lines:\n"
            f"{_tail(self.state_dir / 'kube-apiserver.log')}"
        )

    def _stop(self, state: ClusterState) -> None:
        # apiserver first, so it does not spend its last seconds retrying a vanished etcd
        for pid, name in ((state.apiserver_pid, "kube-apiserver"), (state.etcd_pid, "etcd")):
            if not _alive(pid, name):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid, name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid, name):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (so no zombie stays behind)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
