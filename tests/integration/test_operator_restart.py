"""A crash at the worst moment: the operator is SIGKILLed right after it sent CreateService."""

from __future__ import annotations

import signal

import pytest
from operator_fixtures import *  # noqa: F403
from operator_fixtures import PROJECT, Stack, condition, wait_for

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
