"""Objects stored under an older, looser CRD stay manageable under the current one (issue 11).

Kubernetes validates every update of an object (a metadata patch, a status write, a finalizer removal) against
the whole current schema. Validation ratcheting (GA) forgives an unchanged field its schema errors, and a CEL
rule on an unchanged node that evaluates to false (a warning instead) — but never a CEL *runtime error* ("no such
key", "invalid data, expected string"): one rule that errors on an old object refuses every update of it, so its
finalizer could not even be removed. models.py guards each rule with has() so absent inputs pass.

What the guards cannot cover, and these tests pin down: a stored value of the WRONG TYPE (`region: 42`,
`spec: "a string"`). CEL reads a value through the schema, so even has() on it, or on its parent, errors, and
the transition rules (immutable region/project) read oldSelf, so not even a fix of the spec is accepted. The way
out for those is the one these tests use to create them: a CRD version without the rules, for the cleanup.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tgi_operator import API_GROUP, API_VERSION, KIND
from tgi_operator.crd import CRD_NAME, CRD_PATH, render_crd
from tgi_operator.devenv.testing import KubeCluster

pytestmark = pytest.mark.integration

FINALIZER = "tgi-operator.dev/finalizer"
ABANDON = {"metadata": {"annotations": {"tgi-operator.dev/deletion-policy": "Abandon"}}}
FIELD_MANAGER = "tgi-operator-tests"  # the crd_installed fixture's: re-applying the real CRD restores every rule
SEED = {"region": "us-central1", "model": {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "quantize": "awq"}}

Case = tuple[str, Any, "str | None"]

# (name, spec stored under the loose CRD, what admission says of a NEW object with that spec; None: it is valid
# today, because the API server fills in the defaults — it does so on reading the stored object, too).
MISSING: list[Case] = [
    ("empty", {}, "spec.region: Required value"),
    ("no-model", {"region": "us-central1"}, "spec.model: Required value"),
    ("no-region", {"model": SEED["model"]}, "spec.region: Required value"),
    ("model-without-id", {"region": "us-central1", "model": {}}, "spec.model.id: Required value"),
    ("resources-empty", {**SEED, "resources": {}}, None),
    ("resources-without-gpu", {**SEED, "resources": {"cpu": "8", "memory": "32Gi"}}, None),
    ("gpu-empty", {**SEED, "resources": {"cpu": "8", "memory": "32Gi", "gpu": {}}}, None),
    ("scaling-empty", {**SEED, "scaling": {}}, None),
    ("scaling-min-only", {**SEED, "scaling": {"minInstances": 1}}, None),
    # Rules that evaluate to false on an unchanged spec: ratcheted (a warning), not refused.
    ("rules-now-broken", {"region": "us-west1", "model": {"id": "org--x/name", "quantize": "awq", "dtype": "float16"}},
     "region must be one that offers nvidia-l4 GPUs"),
]
WRONG_TYPE: list[Case] = [
    ("spec-a-string", "a string", "spec: Invalid value: \"string\": spec in body must be of type object"),
    ("region-a-number", {**SEED, "region": 42}, "spec.region: Invalid value: \"integer\": spec.region in body must be of type string"),
    ("project-a-number", {**SEED, "project": 7}, "spec.project: Invalid value: \"integer\": spec.project in body must be of type string"),
    ("model-a-string", {"region": "us-central1", "model": "x"}, "spec.model: Invalid value: \"string\": spec.model in body must be of type object"),
    ("resources-a-string", {**SEED, "resources": "big"}, "spec.resources: Invalid value: \"string\": spec.resources in body must be of type object"),
]


def loose_crd() -> dict[str, Any]:
    """The generated CRD with spec and status left open (any JSON) and no rules: what older versions allowed."""
    crd = copy.deepcopy(render_crd())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root.pop("required", None)
    root["properties"]["spec"] = {"x-kubernetes-preserve-unknown-fields": True}
    root["properties"]["status"] = {"x-kubernetes-preserve-unknown-fields": True}
    return crd


def manifest(name: str, spec: Any, *, finalizer: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if finalizer:
        metadata["finalizers"] = [FINALIZER]
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}


def install(cluster: KubeCluster, crd: str, namespace: str, *, loose: bool) -> None:
    """Apply a CRD version and wait until the API server validates with it (a moment after Established)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                    input=crd)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    deadline = time.monotonic() + 60
    while True:
        probe = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", check=False,
                                input=json.dumps(manifest("probe", {}, finalizer=False)))
        if (probe.returncode == 0) == loose:
            return
        assert time.monotonic() < deadline, f"the {'loose' if loose else 'real'} CRD never took effect: {probe.stderr}"
        time.sleep(0.2)


@pytest.fixture
def store(cluster: KubeCluster, crd_installed: str, namespace: str) -> Iterator[Callable[[list[Case]], str]]:
    """Creates the given objects (with the operator's finalizer) under the loose CRD, then puts the real CRD back;
    afterwards removes whatever a failed test left (under the loose CRD again: the wrong-type ones need it)."""

    def create(cases: list[Case]) -> str:
        install(cluster, json.dumps(loose_crd()), namespace, loose=True)
        try:
            for name, spec, _ in cases:
                cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest(name, spec)))
        finally:
            install(cluster, CRD_PATH.read_text(), namespace, loose=False)
        return namespace

    yield create
    leftovers = cluster.kubectl("get", "tgis", "-n", namespace, "-o", "name").stdout.split()
    if leftovers:
        install(cluster, json.dumps(loose_crd()), namespace, loose=True)
        try:
            for ref in leftovers:
                cluster.kubectl("patch", ref, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
                cluster.kubectl("delete", ref, "-n", namespace, "--wait=false", "--ignore-not-found")
        finally:
            install(cluster, CRD_PATH.read_text(), namespace, loose=False)


def test_objects_missing_fields_can_be_annotated_have_status_written_lose_their_finalizer_and_go(
    cluster: KubeCluster, store: Callable[[list[Case]], str]
) -> None:
    ns = store(MISSING)
    for name, _, _ in MISSING:
        def ok(*args: str, input: str | None = None) -> None:
            result = cluster.kubectl(*args, "-n", ns, input=input, check=False)
            assert result.returncode == 0, f"{name}: kubectl {' '.join(args)}: {result.stderr}"

        ok("patch", "tgis", name, "--type=merge", "-p", json.dumps(ABANDON))
        ok("patch", "tgis", name, "--subresource=status", "--type=merge", "-p", '{"status":{"observedGeneration":1}}')
        # The finalizer removed both ways an admin writes it, and put back in between (a JSON patch adding it).
        ok("patch", "tgis", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        ok("patch", "tgis", name, "--type=json", "-p", json.dumps([{"op": "add", "path": "/metadata/finalizers",
                                                                     "value": [FINALIZER]}]))
        ok("delete", "tgis", name, "--wait=false")
        stuck = json.loads(cluster.kubectl("get", "tgis", name, "-n", ns, "-o", "json").stdout)
        assert stuck["metadata"].get("deletionTimestamp") and stuck["metadata"]["finalizers"] == [FINALIZER], name
        # No controller runs here: the finalizer's owner (or an admin) removes it, and the deletion completes.
        ok("patch", "tgis", name, "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
        ok("wait", "--for=delete", "--timeout=30s", f"tgis/{name}")


@pytest.mark.parametrize(("name", "spec", "refusal"), [c for c in MISSING + WRONG_TYPE if c[2]],
                         ids=[c[0] for c in MISSING + WRONG_TYPE if c[2]])
def test_new_objects_with_those_specs_are_still_refused(
    cluster: KubeCluster, crd_installed: str, namespace: str, name: str, spec: Any, refusal: str
) -> None:
    """The guards let absent inputs through on old objects only: for a new one, `required` and types speak."""
    result = cluster.kubectl("create", "-n", namespace, "-f", "-", check=False,
                             input=json.dumps(manifest("new-" + name, spec, finalizer=False)))
    assert result.returncode != 0, f"{name}: accepted"
    assert refusal in result.stderr, result.stderr
    assert "evaluating rule" not in result.stderr, f"{name}: a CEL rule failed to evaluate: {result.stderr}"


def test_objects_with_wrongly_typed_values_are_stuck_until_the_rules_are_lifted(
    cluster: KubeCluster, store: Callable[[list[Case]], str]
) -> None:
    """No CEL guard can read a value of the wrong type: every update is refused; the way out is a looser CRD."""
    ns = store(WRONG_TYPE)
    for name, _, _ in WRONG_TYPE:
        for args in (["--type=merge", "-p", json.dumps(ABANDON)],
                     ["--subresource=status", "--type=merge", "-p", '{"status":{"observedGeneration":1}}'],
                     ["--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]']):
            result = cluster.kubectl("patch", "tgis", name, "-n", ns, *args, check=False)
            assert result.returncode != 0, f"{name}: {args} accepted: the guards now cover it, update this test"
            assert "invalid data, expected" in result.stderr and "evaluating rule" in result.stderr, result.stderr
    # Not even fixing the value: the immutable-region/project rules read it in oldSelf.
    fix = cluster.kubectl("patch", "tgis", "region-a-number", "-n", ns, "--type=merge",
                          "-p", json.dumps({"spec": {"region": "us-central1"}}), check=False)
    assert fix.returncode != 0 and "region is immutable" in fix.stderr, fix.stderr
    # DELETE itself only marks the object; the finalizer then holds it.
    cluster.kubectl("delete", "tgis", "spec-a-string", "-n", ns, "--wait=false")
    # The way out: lift the rules for the cleanup, then restore them.
    install(cluster, json.dumps(loose_crd()), ns, loose=True)
    try:
        for name, _, _ in WRONG_TYPE:
            cluster.kubectl("patch", "tgis", name, "-n", ns, "--type=json",
                            "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
            cluster.kubectl("delete", "tgis", name, "-n", ns, "--wait=false", "--ignore-not-found")
            cluster.kubectl("wait", "--for=delete", "--timeout=30s", f"tgis/{name}", "-n", ns)
    finally:
        install(cluster, CRD_PATH.read_text(), ns, loose=False)
