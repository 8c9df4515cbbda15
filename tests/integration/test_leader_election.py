"""Two replicas, one reconciler: leader election on a Lease against the real API server, and shards.

Every write the operators make reaches the emulator's audit log with the writer's user agent (its Lease identity),
so "never two reconcilers" is checked on what the cloud saw: every write of the old leader comes before the first
write of the new one.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from emulator_fixtures import AdminApi
from operator_fixtures import OPERATOR_IDENTITY, PROJECT, condition, stack_env, wait_for

from tgi_operator.devenv import stack
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.emulator.testing import EmulatorProcess, start_emulator_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
LEASE_NAMESPACE = stack.OPERATOR_NAMESPACE
TIMING = {"TGI_OPERATOR_LEASE_DURATION_SECONDS": "4", "TGI_OPERATOR_RENEW_DEADLINE_SECONDS": "3",
          "TGI_OPERATOR_RETRY_PERIOD_SECONDS": "0.5"}


def manifest(name: str) -> str:
    return (f"apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: {name}\n"
            "spec:\n  region: us-central1\n  model:\n    id: org/model\n")


@dataclass
class Replicas:
    kube: KubeCluster
    emulator: EmulatorProcess
    admin: AdminApi
    workdir: Path
    kubeconfig: Path
    started: list[stack.OperatorProcess]

    def start(self, pod: str, lease: str, **env: str) -> stack.OperatorProcess:
        operator = stack.start_operator(
            self.kubeconfig, {**stack_env(self.emulator), **TIMING, "POD_NAME": pod, "POD_NAMESPACE": LEASE_NAMESPACE,
                              "TGI_OPERATOR_LEASE_NAME": lease, **env},
            self.workdir / f"{pod}.log", extra_args=("--leader-elect",), verbose=False)
        self.started.append(operator)
        return operator

    def lease(self, name: str) -> dict[str, Any]:
        found = self.kube.kubectl("get", "lease", name, "-n", LEASE_NAMESPACE, "-o", "json", check=False)
        return json.loads(found.stdout)["spec"] if found.returncode == 0 else {}

    def holder(self, name: str) -> str:
        return self.lease(name).get("holderIdentity") or ""

    def tgis(self, namespace: str, name: str) -> dict[str, Any]:
        return json.loads(self.kube.kubectl("get", "tgis", name, "-n", namespace, "-o", "json").stdout)

    def all_ready(self, namespace: str, names: list[str]) -> bool:
        return all(condition(self.tgis(namespace, n), "Ready").get("status") == "True" for n in names)

    def writes_by(self, pod: str) -> list[dict[str, Any]]:
        return [e for e in self.admin.audit() if f"instance/{pod}_" in e["callerSuppliedUserAgent"]]


@pytest.fixture(scope="module")
def replicas(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("replicas")
    stack.install(cluster)
    emulator = start_emulator_process(["--reconcile-seconds", "0.3", "--identity", OPERATOR_IDENTITY],
                                      log_file=workdir / "emulator.log")
    kubeconfig = stack.operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
    result = Replicas(cluster, emulator, AdminApi(emulator.http_url), workdir, kubeconfig, [])
    try:
        yield result
    finally:
        for operator in result.started:
            operator.stop(signal.SIGKILL)
        emulator.stop()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def readyz(operator: stack.OperatorProcess) -> int:
    return http_status(operator.liveness_url.replace("/healthz", "/readyz"))


def leader_gauge(operator: stack.OperatorProcess, lease: str) -> float | None:
    with urllib.request.urlopen(operator.metrics_url, timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f'leader_election_master_status{{name="{lease}"}}'):
                return float(line.split()[-1])
    return None


def lease_name() -> str:
    return f"lease-{uuid.uuid4().hex[:6]}"


def test_a_killed_leader_is_replaced_within_the_lease_and_the_two_never_write_at_once(
    replicas: Replicas, namespace: str
) -> None:
    lease = lease_name()
    a = replicas.start("pod-a", lease)
    wait_for(lambda: replicas.holder(lease).startswith("pod-a_"), timeout=20, what="pod-a leads")
    b = replicas.start("pod-b", lease)
    # Both ready (a standby that can read the Lease could take over); only the leader says it leads.
    wait_for(lambda: readyz(a) == 200 and readyz(b) == 200, timeout=20, what="both replicas ready")
    assert leader_gauge(a, lease) == 1.0 and leader_gauge(b, lease) == 0.0
    assert replicas.holder(lease).startswith("pod-a_")

    replicas.admin.set_reconcile_seconds(2.0)  # deploys still in flight when the leader dies
    names = [f"llama-{i:02d}" for i in range(8)]
    for name in names:
        replicas.kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(name))
    wait_for(lambda: len([w for w in replicas.writes_by("pod-a") if w["method"].endswith("/CreateService")]) >= 3,
             timeout=60, interval=0.05, what="the leader created some services")
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    killed = time.time()

    wait_for(lambda: replicas.holder(lease).startswith("pod-b_"), timeout=20, interval=0.1, what="pod-b leads")
    took_over = time.time() - killed
    replicas.admin.set_reconcile_seconds(0.3)
    wait_for(lambda: replicas.all_ready(namespace, names), timeout=90, interval=0.5, what="every object Ready")

    # Within the lease duration (4 s) and the standby's retry period, not before its holder went silent.
    assert took_over < 4 + 2, took_over
    assert leader_gauge(b, lease) == 1.0
    # Exactly one service per object, created once.
    for name in names:
        service = replicas.tgis(namespace, name)["status"]["serviceName"]
        creates = [w for w in replicas.admin.audit() if w["method"].endswith("/CreateService")
                   and w["resourceName"] == service and w["code"] == "OK"]
        assert len(creates) == 1, (name, creates)
    # Never two writers: all of pod-a's writes come before pod-b's first.
    by_a, by_b = replicas.writes_by("pod-a"), replicas.writes_by("pod-b")
    assert by_a and by_b
    assert max(w["time"] for w in by_a) < min(w["time"] for w in by_b)
    for name in names:
        replicas.kube.kubectl("delete", "tgis", name, "-n", namespace, "--wait=false")
    wait_for(lambda: not json.loads(replicas.kube.kubectl("get", "tgis", "-n", namespace, "-o", "json").stdout)["items"],
             timeout=60, what="the new leader finalized every object")
    b.stop()


def test_a_stopped_leader_hands_the_lease_over_at_once_as_in_a_rolling_update(
    replicas: Replicas, namespace: str
) -> None:
    lease = lease_name()
    slow = {"TGI_OPERATOR_LEASE_DURATION_SECONDS": "30", "TGI_OPERATOR_RENEW_DEADLINE_SECONDS": "20"}
    old = replicas.start("old-pod", lease, **slow)
    wait_for(lambda: replicas.holder(lease).startswith("old-pod_"), timeout=20, what="old-pod leads")
    replicas.kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("rolling"))
    wait_for(lambda: replicas.all_ready(namespace, ["rolling"]), timeout=60, what="Ready under the old pod")
    new = replicas.start("new-pod", lease, **slow)  # the rollout's surge pod: a standby
    wait_for(lambda: readyz(new) == 200, timeout=20, what="the new pod ready as a standby")
    assert replicas.holder(lease).startswith("old-pod_")

    stopped = time.monotonic()
    assert old.stop(signal.SIGTERM) == 0  # a clean stop hands the Lease back
    wait_for(lambda: replicas.holder(lease).startswith("new-pod_"), timeout=20, interval=0.1, what="new-pod leads")
    assert time.monotonic() - stopped < 10  # not the 30 s a silent leader would cost
    assert "handed back Lease" in old.log()

    replicas.kube.kubectl("patch", "tgis", "rolling", "-n", namespace, "--type=merge",
                          "-p", '{"spec":{"scaling":{"concurrency":16}}}')
    wait_for(lambda: (o := replicas.tgis(namespace, "rolling"))["status"].get("observedGeneration") == 2
             and condition(o, "Ready").get("status") == "True", timeout=60, what="the new leader applied the change")
    by_old, by_new = replicas.writes_by("old-pod"), replicas.writes_by("new-pod")
    assert [w["method"].rsplit("/", 1)[-1] for w in by_new] == ["UpdateService"]
    assert max(w["time"] for w in by_old) < min(w["time"] for w in by_new)
    new.stop()


def test_a_leader_whose_lease_is_taken_stops_at_once(replicas: Replicas, namespace: str) -> None:
    lease = lease_name()
    a = replicas.start("pod-taken", lease)
    wait_for(lambda: replicas.holder(lease).startswith("pod-taken_"), timeout=20, what="pod-taken leads")
    # Another holder writes the Lease (a partitioned leader's successor, or an admin): the leader's next renewal
    # sees it and the process exits, mid-whatever-it-was-doing.
    spec = replicas.lease(lease)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    patch = {"spec": {"holderIdentity": "someone-else", "renewTime": now, "acquireTime": now,
                      "leaseTransitions": spec.get("leaseTransitions", 0) + 1}}
    replicas.kube.kubectl("patch", "lease", lease, "-n", LEASE_NAMESPACE, "--type=merge", "-p", json.dumps(patch))
    taken = time.monotonic()
    assert a.process.wait(timeout=10) == 1
    assert time.monotonic() - taken < 3  # its next renewal (every 0.5 s), not its renew deadline
    assert "lost the leader-election Lease" in a.log() and "someone-else" in a.log()


def test_shards_split_namespaces_by_label_and_never_touch_each_others_objects(
    replicas: Replicas, cluster: KubeCluster
) -> None:
    suffix = uuid.uuid4().hex[:5]
    ns = {shard: f"shard-{shard}-{suffix}" for shard in ("a", "b", "none")}
    for shard, name in ns.items():
        cluster.kubectl("create", "namespace", name)
        if shard != "none":
            cluster.kubectl("label", "namespace", name, f"tgi-shard-{suffix}={shard}")
        cluster.kubectl("apply", "-n", name, "-f", "-", input=manifest("model"))
    shard_a = replicas.start("shard-a", f"lease-a-{suffix}", TGI_OPERATOR_NAMESPACE_SELECTOR=f"tgi-shard-{suffix}=a")
    shard_b = replicas.start("shard-b", f"lease-b-{suffix}", TGI_OPERATOR_NAMESPACE_SELECTOR=f"tgi-shard-{suffix}=b")
    wait_for(lambda: replicas.all_ready(ns["a"], ["model"]) and replicas.all_ready(ns["b"], ["model"]), timeout=60,
             what="each shard's object Ready")
    service = {shard: replicas.tgis(ns[shard], "model")["status"]["serviceName"] for shard in ("a", "b")}
    for shard, other in (("a", "b"), ("b", "a")):
        touched = {w["resourceName"] for w in replicas.writes_by(f"shard-{shard}")}
        assert service[shard] in touched and service[other] not in touched
    # The object in no shard's namespace: no finalizer, no status (only the schema's default), no service.
    untouched = replicas.tgis(ns["none"], "model")
    assert untouched["status"] == {"observedGeneration": 0} and not untouched["metadata"].get("finalizers")
    # Each object carries one finalizer, its own shard's: the other shard neither added nor removed one.
    for shard in ("a", "b"):
        assert replicas.tgis(ns[shard], "model")["metadata"]["finalizers"] == ["tgi-operator.dev/finalizer"]

    # A namespace that joins shard b is picked up by it (its watches restart with the new namespace).
    cluster.kubectl("label", "namespace", ns["none"], f"tgi-shard-{suffix}=b")
    wait_for(lambda: replicas.all_ready(ns["none"], ["model"]), timeout=60, what="the joined namespace's object Ready")
    joined = replicas.tgis(ns["none"], "model")["status"]["serviceName"]
    assert joined in {w["resourceName"] for w in replicas.writes_by("shard-b")}
    assert joined not in {w["resourceName"] for w in replicas.writes_by("shard-a")}
    for name in ns.values():
        cluster.kubectl("delete", "namespace", name, "--wait=false")
    shard_a.stop()
    shard_b.stop()
    assert PROJECT in service["a"]
