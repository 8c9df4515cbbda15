"""The operator and its API have separate lifecycles. Uninstalling the operator (`kubectl delete -k manifests/base`)
leaves every TGIService and Cloud Run service as it is; a reinstalled operator adopts them without writing. The CRD
refuses deletion until annotated, and removing everything works in the documented order.

This cluster has no kubelet and no namespace controller: "the Deployment stops" is stopping the operator process,
and the test finalizes the deleted operator namespace itself, as the namespace controller would."""

from __future__ import annotations

import time

import pytest
from google.api_core import exceptions
from operator_fixtures import *  # noqa: F403
from operator_fixtures import RESYNC_SECONDS, Stack, condition, wait_for, writes

from tgi_operator.devenv import stack as install_stack
from tgi_operator.devenv.testing import delete_namespace

pytestmark = pytest.mark.integration
CRD = "crd/tgiservices.tgi-operator.dev"


def manifest(name: str) -> str:
    return (f"apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: {name}\n"
            "spec:\n  region: us-central1\n  model:\n    id: org/model\n")


def ready(stack: Stack, namespace: str, name: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (o := stack.tgis(namespace, name)) and condition(o, "Ready").get("status") == "True" and o,
                    timeout=timeout, what=f"{name} Ready")


def exists(stack: Stack, *what: str) -> bool:
    return stack.kube.kubectl("get", *what, "-o", "name", check=False).returncode == 0


def service_gone(stack: Stack, service_name: str) -> bool:
    try:
        stack.run.get_service(name=service_name)
    except exceptions.NotFound:
        return True
    return False


def uninstall_operator(stack: Stack) -> None:
    """`kubectl delete -k manifests/base`; the Deployment's pod stops (here: the operator process)."""
    stack.operator.stop()
    # --ignore-not-found: stack.install() applies no Deployment here (nothing would run its pod).
    stack.kube.kubectl("delete", "-k", str(install_stack.BASE_DIR), "--wait=false", "--ignore-not-found")
    delete_namespace(stack.kube, install_stack.OPERATOR_NAMESPACE)  # what the namespace controller would finish
    wait_for(lambda: not exists(stack, "namespace", install_stack.OPERATOR_NAMESPACE), what="operator namespace gone")
    assert not exists(stack, "clusterrole", "tgi-operator")


def reinstall_operator(stack: Stack) -> None:
    install_stack.install(stack.kube)
    install_stack.operator_kubeconfig(stack.kube, stack.workdir / "operator.kubeconfig")  # a new ServiceAccount's token
    stack.restart_operator()


def test_uninstall_keeps_everything_and_a_reinstall_adopts_it(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("kept"))
    stack.apply(namespace, manifest("deleted-meanwhile"))
    kept = ready(stack, namespace, "kept")
    gone_service = ready(stack, namespace, "deleted-meanwhile")["status"]["serviceName"]
    service = stack.service(namespace, "kept")

    uninstall_operator(stack)
    stack.admin.reset_calls()
    # While no operator runs, a deletion waits on the operator's finalizer: the object stays, Terminating.
    stack.kube.kubectl("delete", "tgis", "deleted-meanwhile", "-n", namespace, "--wait=false")
    time.sleep(2 * RESYNC_SECONDS)  # what an operator would have done by now, it would have done
    after = stack.tgis(namespace, "kept")
    assert after["metadata"]["resourceVersion"] == kept["metadata"]["resourceVersion"]  # untouched
    assert stack.run.get_service(name=service.name).etag == service.etag
    waiting = stack.tgis(namespace, "deleted-meanwhile")
    assert waiting["metadata"]["deletionTimestamp"] and waiting["metadata"]["finalizers"] == ["tgi-operator.dev/finalizer"]
    assert not service_gone(stack, gone_service)
    assert writes(stack.admin.calls()) == {}  # (the reads are this test's own)

    reinstall_operator(stack)
    # The pending deletion completes; the kept object is Ready on the same service, without a write.
    wait_for(lambda: not exists(stack, "tgis", "deleted-meanwhile", "-n", namespace), what="the pending deletion done")
    wait_for(lambda: service_gone(stack, gone_service), what="its Cloud Run service deleted")
    assert ready(stack, namespace, "kept")["status"]["serviceName"] == service.name
    assert writes(stack.admin.calls()) == {"DeleteService": 1}, stack.admin.calls()
    stack.admin.reset_calls()
    time.sleep(2 * RESYNC_SECONDS + 1)  # the reinstalled operator resyncs the kept object: read, nothing to change
    calls = stack.admin.calls()
    assert calls.get("google.cloud.run.v2.Services/GetService", {}).get("OK", 0) >= 2, calls
    assert writes(calls) == {}, calls
    assert stack.run.get_service(name=service.name).etag == service.etag

    stack.kube.kubectl("delete", "tgis", "kept", "-n", namespace, "--timeout=60s")
    wait_for(lambda: service_gone(stack, service.name), what="the kept service deleted with its object")


def test_removing_everything_in_the_documented_order(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("last"))
    service_name = ready(stack, namespace, "last")["status"]["serviceName"]
    try:
        # A prune or a stray delete of the CRD (which would delete every TGIService) is refused by the API server.
        refused = stack.kube.kubectl("delete", CRD, "--wait=false", check=False)
        assert refused.returncode != 0
        assert "ValidatingAdmissionPolicy 'tgi-operator-crd-delete-protection'" in refused.stderr
        assert "First delete the TGIServices with the operator running" in refused.stderr
        assert exists(stack, CRD) and not stack.tgis(namespace, "last")["metadata"].get("deletionTimestamp")

        # 1. TGIServices, while the operator runs: their services go with them.
        stack.kube.kubectl("delete", "tgis", "last", "-n", namespace, "--timeout=60s")
        assert service_gone(stack, service_name)
        # 2. The operator.
        uninstall_operator(stack)
        # 3. The API: annotated, then deleted with its protection.
        stack.kube.kubectl("annotate", CRD, "tgi-operator.dev/allow-delete=true")
        stack.kube.kubectl("delete", "-k", str(install_stack.CRD_DIR), "--timeout=60s")
        assert not exists(stack, CRD)
        assert not exists(stack, "validatingadmissionpolicy", "tgi-operator-crd-delete-protection")
        assert not exists(stack, "validatingadmissionpolicy", "tgiservices.tgi-operator.dev")
    finally:  # the rest of the session expects the install
        reinstall_operator(stack)


def test_crd_delete_protection_only_allows_true(operator_stack: Stack) -> None:
    kube = operator_stack.kube
    try:
        for value in ("false", "yes"):
            kube.kubectl("annotate", CRD, f"tgi-operator.dev/allow-delete={value}", "--overwrite")
            assert kube.kubectl("delete", CRD, "--dry-run=server", check=False).returncode != 0, value
        kube.kubectl("annotate", CRD, "tgi-operator.dev/allow-delete=true", "--overwrite")
        assert "(server dry run)" in kube.kubectl("delete", CRD, "--dry-run=server").stdout
    finally:
        kube.kubectl("annotate", CRD, "tgi-operator.dev/allow-delete-")
    assert kube.kubectl("delete", CRD, "--dry-run=server", check=False).returncode != 0
