"""A crash at the worst moment: the operator is SIGKILLed right after it sent CreateService."""

from __future__ import annotations

import signal

import pytest
from operator_fixtures import *  # noqa: F403
from operator_fixtures import PROJECT, Stack, condition, stack_env, wait_for

from tgi_operator.devenv import stack as devstack
from tgi_operator.devenv.serviceaccount import service_account_kubeconfig
from tgi_operator.naming import service_id

pytestmark = pytest.mark.integration


def test_sigkill_after_create_then_restart_makes_exactly_one_service(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.admin.set_reconcile_seconds(3.0)  # the create is still in flight when the operator dies
    stack.admin.reset_calls()
    stack.apply(namespace, "apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: crash\n"
                           "spec:\n  region: us-central1\n  model:\n    id: org/model\n")
    create = "google.cloud.run.v2.Services/CreateService"
    wait_for(lambda: stack.admin.calls().get(create), timeout=30, interval=0.02, what="CreateService sent")
    assert stack.operator.stop(signal.SIGKILL) == -signal.SIGKILL

    stack.admin.set_reconcile_seconds(0.3)
    stack.restart_operator()
    obj = wait_for(lambda: (o := stack.tgis(namespace, "crash")) and condition(o, "Ready").get("status") == "True" and o,
                   timeout=40, what="Ready after the restart")

    parent = f"projects/{PROJECT}/locations/us-central1"
    ours = [s for s in stack.run.list_services(parent=parent) if s.name.endswith("/" + service_id(namespace, "crash"))]
    assert len(ours) == 1
    assert ours[0].name == obj["status"]["serviceName"]
    assert stack.admin.calls()[create] == {"OK": 1}  # the restarted operator found it instead of creating again


def test_a_rotated_token_is_picked_up_without_a_restart(operator_stack: Stack, namespace: str) -> None:
    """In a Pod the kubelet rotates the projected token; the old one stops working. Here the operator's token is
    bound to a Secret: a new token goes into its kubeconfig, the Secret goes, and the old token is refused (401).
    The operator keeps reconciling: its next request logs in again and reads the new token."""
    stack = operator_stack
    kube, ns, sa = stack.kube, devstack.OPERATOR_NAMESPACE, devstack.OPERATOR_SERVICE_ACCOUNT
    kubeconfig = stack.workdir / "rotating.kubeconfig"
    kube.kubectl("create", "secret", "generic", "token-a", "-n", ns)
    service_account_kubeconfig(kube.kubeconfig, ns, sa, kubeconfig, bound_secret="token-a")
    stack.operator.stop()
    stack.operator = devstack.start_operator(kubeconfig, stack_env(stack.emulator), stack.workdir / "rotating.log")
    try:
        stack.apply(namespace, MANIFEST)
        wait_for(lambda: condition(stack.tgis(namespace, "rotating"), "Ready").get("status") == "True", timeout=40,
                 what="Ready with the first token")

        kube.kubectl("create", "secret", "generic", "token-b", "-n", ns)
        service_account_kubeconfig(kube.kubeconfig, ns, sa, kubeconfig, bound_secret="token-b")
        kube.kubectl("delete", "secret", "token-a", "-n", ns)  # the first token is refused from now on
        kube.kubectl("patch", "tgis", "rotating", "-n", namespace, "--type=merge",
                     "-p", '{"spec":{"scaling":{"concurrency":16}}}')
        obj = wait_for(lambda: (o := stack.tgis(namespace, "rotating"))["status"].get("observedGeneration") == 2
                       and condition(o, "Ready").get("status") == "True" and o, timeout=60,
                       what="Ready at generation 2 after the rotation")
        assert obj["status"]["model"]["maxConcurrentRequests"] == 16
        kube.kubectl("delete", "tgis", "rotating", "-n", namespace, "--timeout=60s")  # the finalizer too
    finally:
        stack.operator.stop()
        kube.kubectl("delete", "secret", "token-a", "token-b", "-n", ns, "--ignore-not-found")
        stack.restart_operator()


MANIFEST = ("apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: rotating\n"
            "spec:\n  region: us-central1\n  model:\n    id: org/model\n")
