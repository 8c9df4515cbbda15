"""The operator process (kopf, real apiserver, emulator) against objects a hostile tenant or a clumsy admin left
behind, and a bounded chaos run: nothing may keep a finalizer forever, and nothing may be orphaned or duplicated."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
from operator_fixtures import *  # noqa: F403
from operator_fixtures import PROJECT, Stack, condition, wait_for

pytestmark = pytest.mark.integration
FINALIZER = "tgi-operator.dev/finalizer"


def manifest(name: str, extra: str = "") -> str:
    return (f"apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: {name}\nspec:\n"
            f"  region: us-central1\n  model:\n    id: org/model\n{extra}")


def ready(stack: Stack, namespace: str, name: str) -> dict:
    return wait_for(lambda: (o := stack.tgis(namespace, name)) and condition(o, "Ready").get("status") == "True" and o,
                    timeout=60, what=f"{namespace}/{name} Ready")


def gone(stack: Stack, namespace: str, name: str, timeout: float = 60) -> None:
    wait_for(lambda: stack.kube.kubectl("get", "tgis", name, "-n", namespace, "--ignore-not-found",
                                        "-o", "name").stdout.strip() == "", timeout=timeout, what=f"{name} deleted")


def services(stack: Stack) -> list:
    return list(stack.run.list_services(parent=f"projects/{PROJECT}/locations/us-central1"))


@pytest.mark.parametrize("garbage", ["{not json", "[]", '{"started": "yesterday"}'])
def test_garbage_in_kopfs_annotations_never_blocks_deletion(operator_stack: Stack, namespace: str, garbage: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("junk"))
    name = ready(stack, namespace, "junk")["status"]["serviceName"]
    for key in ("last-handled-configuration", "apply", "delete"):
        stack.kube.kubectl("annotate", "tgis", "junk", "-n", namespace, "--overwrite", f"tgi-operator.dev/{key}={garbage}")
    stack.kube.kubectl("delete", "tgis", "junk", "-n", namespace, "--wait=false")
    gone(stack, namespace, "junk")
    assert all(s.name != name for s in services(stack))  # and the service went with it


def test_abandon_works_whatever_kopfs_annotations_hold(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("left", "  deletionPolicy: Delete\n"))
    name = ready(stack, namespace, "left")["status"]["serviceName"]
    stack.kube.kubectl("annotate", "tgis", "left", "-n", namespace, "--overwrite",
                       "tgi-operator.dev/last-handled-configuration={not json", "tgi-operator.dev/deletion-policy=Abandon")
    stack.kube.kubectl("delete", "tgis", "left", "-n", namespace, "--wait=false")
    gone(stack, namespace, "left")
    assert any(s.name == name for s in services(stack))  # abandoned: Google Cloud untouched
    stack.run.delete_service(name=name).result(timeout=30)


def test_a_broken_status_is_observed_afresh_and_deletion_still_works(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("bent"))
    good = ready(stack, namespace, "bent")["status"]
    patch = {"status": {"serviceName": "projects/../../etc", "url": "gopher://x", "latestReadyRevision": "x",
                        "conditions": [{"type": "Ready", "status": "False", "reason": "Tampered"}]}}
    stack.kube.kubectl("patch", "tgis", "bent", "-n", namespace, "--subresource=status", "--type=merge",
                       "-p", json.dumps(patch))
    # A spec change makes the operator look again: it corrects the status from what it observes.
    stack.kube.kubectl("patch", "tgis", "bent", "-n", namespace, "--type=merge", "-p", '{"spec":{"scaling":{"concurrency":32}}}')
    fixed = wait_for(lambda: (o := stack.tgis(namespace, "bent")) and o["status"].get("serviceName") == good["serviceName"]
                     and condition(o, "Ready").get("status") == "True" and o["status"].get("url") == good["url"] and o,
                     timeout=60, what="the status observed afresh")
    assert fixed["status"]["observedGeneration"] == 2
    stack.kube.kubectl("delete", "tgis", "bent", "-n", namespace, "--timeout=60s")
    assert all(s.name != good["serviceName"] for s in services(stack))


def test_chaos_sigkills_during_create_update_and_delete_leave_exactly_what_the_objects_ask(
    operator_stack: Stack, namespace: str
) -> None:
    """Bounded: three objects with invoker accounts, the operator SIGKILLed at random moments while they are created,
    changed and deleted. In the end: one service per live object, none for deleted ones, no leftover accounts, members
    or finalizers."""
    stack, rng = operator_stack, random.Random(7)
    names = ["chaos-a", "chaos-b", "chaos-c"]
    with_sa = "  access:\n    createInvokerServiceAccount: true\n    invokers: [\"group:ml@example.com\"]\n"

    def kill_soon() -> None:
        time.sleep(rng.uniform(0.05, 0.8))
        stack.operator.stop(signal.SIGKILL)
        stack.restart_operator()

    for name in names:
        stack.apply(namespace, manifest(name, with_sa))
    kill_soon()
    for name in names:
        ready(stack, namespace, name)
    for name in names[:2]:  # change two: drop the invoker account and the group, add a user
        stack.apply(namespace, manifest(name, "  access:\n    invokers: [\"user:ann@example.com\"]\n"))
    kill_soon()
    stack.kube.kubectl("delete", "tgis", names[2], "-n", namespace, "--wait=false")
    kill_soon()
    gone(stack, namespace, names[2])
    for name in names[:2]:
        wait_for(lambda n=name: (o := stack.tgis(namespace, n)) and o["status"].get("observedGeneration") == 2
                 and condition(o, "Ready").get("status") == "True", timeout=60, what=f"{name} changed and Ready")

    live = {stack.tgis(namespace, n)["status"]["serviceName"] for n in names[:2]}
    ours = [s.name for s in services(stack) if s.labels.get("tgi-operator-namespace") == namespace]
    assert sorted(ours) == sorted(live)  # exactly one service per live object, none for the deleted one
    for name in live:
        policy = stack.run.get_iam_policy(request={"resource": name})
        assert {m for b in policy.bindings if b.role == "roles/run.invoker" for m in b.members} == {"user:ann@example.com"}
    accounts = {a.email for a in stack.iam.list_service_accounts(name=f"projects/{PROJECT}")}
    assert not [a for a in accounts if a.startswith("inv-chaos")]  # every invoker account was removed
    for name in names[:2]:
        stack.kube.kubectl("delete", "tgis", name, "-n", namespace, "--wait=false")
    kill_soon()
    for name in names[:2]:
        gone(stack, namespace, name)
    assert not [s for s in services(stack) if s.labels.get("tgi-operator-namespace") == namespace]
