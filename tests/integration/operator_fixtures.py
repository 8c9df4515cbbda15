"""The whole product locally, for the operator's integration tests: the real control plane (session), the CRD
and RBAC from the repo's manifests, the emulator and the operator as separate processes, the operator running
under its own ServiceAccount.

Import into a test module: `from operator_fixtures import *  # noqa: F403`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from emulator_fixtures import AdminApi, sync_clients
from google.cloud import iam_admin_v1, run_v2

from tgi_operator.devenv import stack
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.emulator.testing import EmulatorProcess, start_emulator_process

PROJECT = "emu-project"
OPERATOR_IDENTITY = f"tgi-operator@{PROJECT}.iam.gserviceaccount.com"
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
RESYNC_SECONDS = 3.0
WRITE_METHODS = ("CreateService", "UpdateService", "DeleteService", "SetIamPolicy", "CreateServiceAccount", "DeleteServiceAccount")

__all__ = [
    "PROJECT", "OPERATOR_IDENTITY", "SAMPLES", "RESYNC_SECONDS", "Stack", "stack_env", "operator_stack",
    "wait_for", "writes", "condition",
]  # fmt: skip


@dataclass
class Stack:
    kube: KubeCluster
    emulator: EmulatorProcess
    operator: stack.OperatorProcess
    admin: AdminApi
    run: run_v2.ServicesClient
    iam: iam_admin_v1.IAMClient
    workdir: Path

    def restart_operator(self, env_overrides: dict[str, str] | None = None) -> None:
        self.operator = stack.start_operator(
            self.workdir / "operator.kubeconfig", {**stack_env(self.emulator), **(env_overrides or {})},
            self.workdir / "operator.log",
        )

    def tgis(self, namespace: str, name: str) -> dict[str, Any]:
        return json.loads(self.kube.kubectl("get", "tgis", name, "-n", namespace, "-o", "json").stdout)

    def apply(self, namespace: str, manifest: str | Path) -> str:
        text = manifest.read_text() if isinstance(manifest, Path) else manifest
        self.kube.kubectl("apply", "-n", namespace, "-f", "-", input=text)
        return text

    def service(self, namespace: str, name: str) -> run_v2.Service:
        status = self.tgis(namespace, name)["status"]
        return self.run.get_service(name=status["serviceName"])


def stack_env(emulator: EmulatorProcess) -> dict[str, str]:
    return {
        **emulator.env,  # TGI_OPERATOR_CLOUD_RUN_ENDPOINT, GCE_METADATA_HOST, GCE_METADATA_IP
        "TGI_OPERATOR_DEFAULT_PROJECT": PROJECT,
        "TGI_OPERATOR_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "TGI_OPERATOR_POLL_INITIAL_SECONDS": "0.3",
        "TGI_OPERATOR_POLL_MAX_SECONDS": "1.5",
        # Their TGIServices name a made-up model (org/model), which the emulator's Hub stand-in does not know: no
        # model preflight here (test_preflight_passes.py and test_demo.py run it).
        "TGI_OPERATOR_PREFLIGHT": "off",
    }


@pytest.fixture(scope="module")
def operator_stack(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("operator")
    stack.install(cluster)
    emulator = start_emulator_process(
        ["--reconcile-seconds", "0.3", "--identity", OPERATOR_IDENTITY], log_file=workdir / "emulator.log"
    )
    kubeconfig = stack.operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
    operator = stack.start_operator(kubeconfig, stack_env(emulator), workdir / "operator.log")
    with sync_clients(emulator.grpc_endpoint) as clients:
        result = Stack(kube=cluster, emulator=emulator, operator=operator, admin=AdminApi(emulator.http_url),
                       run=clients.run, iam=clients.iam, workdir=workdir)
        try:
            yield result
        finally:
            result.operator.stop()
            emulator.stop()
        # Not a secret anywhere in what the operator wrote: ID tokens are JWTs, which start with "eyJ".
        assert "eyJ" not in result.operator.log(), "a token reached the operator's log"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def writes(calls: dict[str, dict[str, int]]) -> dict[str, int]:
    """Write calls (any outcome) by bare method name, from the emulator's call counts."""
    out: dict[str, int] = {}
    for method, codes in calls.items():
        bare = method.rsplit("/", 1)[-1]
        if bare in WRITE_METHODS:
            out[bare] = out.get(bare, 0) + sum(codes.values())
    return out
