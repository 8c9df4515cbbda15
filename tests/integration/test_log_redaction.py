"""Secrets stay secret: `tgi-operator run --verbose` (as the demo and these tests run it) logs what kopf does with
each object, never what the object holds. A TGIService with unique marker strings in its env values, an annotation
and an invoker goes through create, update and delete; no marker may reach the operator's log (text or JSON) or
the namespace's Events, while the lines that say what happened are there with a placeholder."""

from __future__ import annotations

import json
import uuid

import pytest
from operator_fixtures import *  # noqa: F403
from operator_fixtures import PROJECT, Stack, condition, stack_env, wait_for

from tgi_operator.devenv import stack as devstack
from tgi_operator.emulator.rules import project_number

pytestmark = pytest.mark.integration
NAME = "secretive"


def manifest(marker: str, env_value: str, annotation: str) -> str:
    return f"""\
apiVersion: tgi-operator.dev/v1alpha1
kind: TGIService
metadata:
  name: {NAME}
  annotations:
    example.com/team-token: "{annotation}"
spec:
  region: us-central1
  model: {{id: hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4, quantize: awq}}
  access:
    invokers: ["user:inv-{marker}@example.com"]
  env:
    - {{name: LOG_LEVEL, value: "{env_value}"}}
    - {{name: API_KEY, valueFrom: {{secret: api-key, version: "3"}}}}
"""


def ready(stack: Stack, namespace: str, generation: int) -> dict:
    def check() -> dict | None:
        obj = stack.tgis(namespace, NAME)
        done = condition(obj, "Ready").get("status") == "True" and obj["status"].get("observedGeneration") == generation
        return obj if done else None

    return wait_for(check, timeout=40, what=f"{namespace}/{NAME} Ready at generation {generation}")


def create_update_delete(stack: Stack, namespace: str) -> list[str]:
    """One object's whole life; returns the marker strings it carried."""
    marker = uuid.uuid4().hex[:12]
    values = [f"env-{marker}", f"ann-{marker}", f"env2-{marker}", f"ann2-{marker}", f"inv-{marker}"]
    stack.admin.grant_secret(f"projects/{PROJECT}/secrets/api-key",
                             [f"{project_number(PROJECT)}-compute@developer.gserviceaccount.com"])
    stack.apply(namespace, manifest(marker, values[0], values[1]))
    ready(stack, namespace, generation=1)
    # The Cloud Run service got the literal and the Secret Manager reference (the emulator accepts value_source).
    env = {e.name: e for e in stack.service(namespace, NAME).template.containers[0].env}
    assert env["LOG_LEVEL"].value == values[0]
    assert (env["API_KEY"].value, env["API_KEY"].value_source.secret_key_ref.secret,
            env["API_KEY"].value_source.secret_key_ref.version) == ("", "api-key", "3")

    stack.apply(namespace, manifest(marker, values[2], values[3]))  # a spec change and an annotation change
    ready(stack, namespace, generation=2)
    stack.kube.kubectl("delete", "tgis", NAME, "-n", namespace, "--timeout=30s")

    events = stack.kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert not [v for v in values if v in events], "a marker reached a Kubernetes Event"
    return values


def test_text_log_names_what_happened_and_holds_no_value(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    values = create_update_delete(stack, namespace)
    log = stack.operator.log()
    assert not [v for v in values if v in log], "a marker reached the operator's log"
    # Proof the log was verbose enough to leak had the filter not been there.
    # (kopf keeps only the finalizer: it patches the resource for it, and logs the object around its deletion.)
    for line in ("Deletion is in progress: <redacted: ", "Merge-patching the resource with: <redacted: ",
                 "JSON-patching the resource with: <redacted: "):
        assert f"] {line}" in log, line


def test_json_log_names_what_happened_and_holds_no_value(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.operator.stop()
    log_file = stack.workdir / "operator-json.log"
    stack.operator = devstack.start_operator(stack.workdir / "operator.kubeconfig", stack_env(stack.emulator), log_file,
                                             extra_args=("--json-logs",))
    values = create_update_delete(stack, namespace)
    log = stack.operator.log()
    assert not [v for v in values if v in log], "a marker reached the operator's JSON log"
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("object", {}).get("name") == NAME and e["object"].get("namespace") == namespace]
    messages = [e["message"] for e in mine]
    assert any(m.startswith("Deletion is in progress: <redacted: ") for m in messages), messages
    assert any(m.startswith("Merge-patching the resource with: <redacted: ") for m in messages), messages
    # The watch handler runs on every event: kopf's lines about it say nothing and are dropped.
    assert not [m for m in messages if m.startswith("Handler 'watch'")], messages
    assert all(set(e) <= {"message", "object", "severity", "timestamp"} for e in mine), mine  # no object dumped as extras
