"""The operator as it runs in a cluster, locally: CRD and RBAC from the repo's manifests, a kubeconfig of the
operator's own ServiceAccount, and `tgi-operator run` as a separate process. Shared by tests and the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tgi_operator.devenv.cluster import free_ports
from tgi_operator.devenv.serviceaccount import service_account_kubeconfig
from tgi_operator.devenv.testing import KubeCluster

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crd"    # the API (CRD + its delete protection), installed on its own
BASE_DIR = REPO / "manifests" / "base"  # the operator
OPERATOR_NAMESPACE = "tgi-operator-system"
OPERATOR_SERVICE_ACCOUNT = "tgi-operator"


def install(kube: KubeCluster) -> None:
    """`kubectl apply -k manifests/crd`, then `-k manifests/base` minus the Deployment (no kubelet here: the
    operator runs as a local process, under the same ServiceAccount and RBAC); wait until the CRD serves."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRD_DIR))
    base = [doc for doc in yaml.safe_load_all(kube.kubectl("kustomize", str(BASE_DIR)).stdout) if doc["kind"] != "Deployment"]
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(base))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/tgiservices.tgi-operator.dev")
    wait_for_admission_rules(kube)


# Valid for the schema, refused only by the admission policy's rules (minInstances above maxInstances).
RULES_PROBE = {"apiVersion": "tgi-operator.dev/v1alpha1", "kind": "TGIService", "metadata": {"name": "rules-probe"},
                "spec": {"region": "us-central1", "model": {"id": "org/model"},
                         "scaling": {"minInstances": 2, "maxInstances": 1}}}


def wait_for_admission_rules(kube: KubeCluster, timeout: float = 60.0) -> None:
    """Until the API server enforces the TGIService admission policy: it loads a new policy a moment after it is
    stored. Probed with a server-side dry run, which stores nothing."""
    deadline = time.monotonic() + timeout
    while True:
        probe = kube.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-", check=False,
                             input=yaml.safe_dump(RULES_PROBE))
        if probe.returncode != 0 and "ValidatingAdmissionPolicy" in probe.stderr:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the TGIService admission policy never took effect: {probe.stderr or probe.stdout}")
        time.sleep(0.2)


def operator_kubeconfig(kube: KubeCluster, out: Path) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount: the operator gets only what RBAC grants."""
    return service_account_kubeconfig(kube.kubeconfig, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, out)


@dataclass
class OperatorProcess:
    process: subprocess.Popen
    log_file: Path
    liveness_url: str
    metrics_url: str

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)


def start_operator(
    kubeconfig: Path, env: dict[str, str], log_file: Path, timeout: float = 60.0, detach: bool = False,
    extra_args: tuple[str, ...] = (), verbose: bool = True,
    program: tuple[str, ...] = (sys.executable, "-m", "tgi_operator.cli"),
) -> OperatorProcess:
    """`tgi-operator run --all-namespaces` with `env` (TGI_OPERATOR_*, GCE_METADATA_*); ready when /healthz answers.
    `detach`: a session of its own, so it outlives the caller (and the caller's Ctrl-C). `program`: the command that
    is `tgi-operator` (e.g. an installed one, run as another user)."""
    port, metrics_port = free_ports(2)
    command = [*program, "run", "--all-namespaces", f"--liveness-port={port}",
               "--liveness-host=127.0.0.1", f"--metrics-port={metrics_port}", *(["--verbose"] if verbose else []),
               *extra_args]
    full_env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    log = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env, stdin=subprocess.DEVNULL,
                               start_new_session=detach)
    log.close()
    operator = OperatorProcess(process, log_file, f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{metrics_port}/metrics")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited ({process.returncode}) during start-up:\n{operator.log()[-3000:]}")
        try:
            with urllib.request.urlopen(operator.liveness_url, timeout=2) as response:
                if response.status == 200:
                    return operator
        except OSError:
            time.sleep(0.3)
    operator.stop()
    raise RuntimeError(f"the operator was not live within {timeout:.0f}s:\n{operator.log()[-3000:]}")
