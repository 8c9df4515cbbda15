"""A status never goes backwards, even when the API server refuses writes (issue 12).

The first version applied each status patch after the pass that computed it had released the object, through
kopf's retrying patcher; under load the API server refused many writes (429), retries piled up, and an older
"Deploying" status could land after a newer Ready one: the object read not-Ready until the next resync. Here the
API server admits one mutating request at a time (`--max-mutating-requests-inflight=1`, as a loaded cluster
would), so writes are refused all the time, and a watch records every status each object goes through.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_fixtures import OPERATOR_IDENTITY, SAMPLES, stack_env

from tgi_operator.devenv import stack
from tgi_operator.devenv.cluster import DevCluster
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.emulator.testing import start_emulator_process

pytestmark = pytest.mark.integration

OBJECTS = 100  # fewer do not reproduce the first version's bug here (it showed at 100: Ready, then not, then Ready)
NAMESPACE = "busy"


@pytest.fixture(scope="module")
def busy_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """Its own control plane: one mutating request in flight at a time (the rest are refused with 429)."""
    cluster = DevCluster(tmp_path_factory.mktemp("busy-cluster"), apiserver_flags=(
        "--max-mutating-requests-inflight=1",))
    cluster.up()
    try:
        yield KubeCluster(cluster.kubeconfig, runs_namespace_controller=False)
    finally:
        cluster.down()


def refused_writes(kube: KubeCluster) -> int:
    """Requests the API server answered 429 (too many requests), from its own metrics."""
    metrics = kube.kubectl("get", "--raw", "/metrics").stdout
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith("apiserver_request_total{") and 'code="429"' in line)


class StatusWatch:
    """`kubectl get -w` over the namespace's TGIServices: every status each object went through, in order."""

    def __init__(self, kube: KubeCluster) -> None:
        self.seen: dict[str, list[tuple[int, int, str]]] = {}  # name -> [(generation, observedGeneration, Ready)]
        self._process = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(kube.kubeconfig), "get", "tgis", "-n", NAMESPACE, "-w",
             "--output-watch-events", "-o", "json"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self._process.stdout:
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            buffer = buffer.lstrip()[end:]
            obj = event["object"]
            status = obj.get("status") or {}
            ready = next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "None")
            self.seen.setdefault(obj["metadata"]["name"], []).append(
                (obj["metadata"]["generation"], status.get("observedGeneration", 0), ready))

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._thread.join(10)


def wait_until_all_ready(kube: KubeCluster, timeout: float) -> int:
    """How many are Ready when all are, or when the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        items = json.loads(kube.kubectl("get", "tgis", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        ready = [o for o in items if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in (o.get("status") or {}).get("conditions", []))]
        if len(ready) == OBJECTS or time.monotonic() > deadline:
            return len(ready)
        time.sleep(2)


def test_under_refused_writes_no_status_goes_back(busy_cluster: KubeCluster, tmp_path: Path) -> None:
    kube = busy_cluster
    stack.install(kube)
    emulator = start_emulator_process(["--reconcile-seconds", "0.3", "--identity", OPERATOR_IDENTITY,
                                       "--gpu-quota", str(OBJECTS * 3)], log_file=tmp_path / "emulator.log")
    operator = stack.start_operator(stack.operator_kubeconfig(kube, tmp_path / "operator.kubeconfig"),
                                    stack_env(emulator), tmp_path / "operator.log")
    watch = None
    try:
        kube.kubectl("create", "namespace", NAMESPACE)
        watch = StatusWatch(kube)
        refused_before = refused_writes(kube)
        seed = (SAMPLES / "llama-3-1-8b-awq.yaml").read_text()
        kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input="\n---\n".join(
            seed.replace("name: llama-3-1-8b-awq", f"name: llama-{i:02d}") for i in range(OBJECTS)))
        all_ready = wait_until_all_ready(kube, timeout=240) == OBJECTS
        if all_ready:
            # A spec change on one, while the others resync: it goes back to Reconciling at its new generation only.
            kube.kubectl("patch", "tgis", "llama-00", "-n", NAMESPACE, "--type=merge",
                         "-p", '{"spec":{"scaling":{"concurrency":32}}}')
            kube.kubectl("wait", "-n", NAMESPACE, "--for=jsonpath={.status.observedGeneration}=2", "tgis/llama-00",
                         "--timeout=120s")
            kube.kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", "tgis/llama-00", "--timeout=120s")
        operator_log = operator.log()
        refused = refused_writes(kube) - refused_before
    finally:
        if watch:
            watch.stop()
        operator.stop()
        emulator.stop()

    assert refused > 0, "the API server refused nothing: this test would not show a write landing out of order"
    assert len(watch.seen) == OBJECTS
    for name, statuses in watch.seen.items():
        observed = [observed for _, observed, _ in statuses]
        assert observed == sorted(observed), f"{name}: observedGeneration went back: {statuses}"
        for generation in {g for g, _, _ in statuses}:
            at_generation = [ready for g, o, ready in statuses if g == generation and o == generation]
            first_ready = at_generation.index("True") if "True" in at_generation else len(at_generation)
            assert set(at_generation[first_ready:]) <= {"True"}, \
                f"{name}: Ready went back at generation {generation}: {statuses}"
    assert all_ready, {name: statuses[-1] for name, statuses in watch.seen.items() if statuses[-1][2] != "True"}
    assert "Traceback" not in operator_log, operator_log[-3000:]
