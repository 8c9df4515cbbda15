"""Objects stored under an older, looser API stay manageable under the current one (issue 11).

Kubernetes validates every update of an object (a metadata patch, a status write, a finalizer removal) against
the whole current schema. Validation ratcheting (GA) forgives an unchanged field its schema errors, and a CEL
rule in the CRD on an unchanged node that evaluates to false — but never a CEL *runtime error* ("invalid data,
expected string"), which any rule reading a value of the wrong type (`region: 42`, `spec: "a string"`) raises.
With the rules in the CRD, such an object could not even lose its finalizer. So the rules live in an admission
policy (admission.py) that meets only creates and spec changes, guarded for absent and wrongly typed values and
ratcheted on unchanged nodes.

These tests store such objects under a loose CRD without the policy (what an older version allowed), put the
real API back, and manage them: annotate, write status, remove and add the finalizer, fix the spec, delete.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tgi_operator import API_GROUP, API_VERSION, KIND
from tgi_operator.admission import POLICY_NAME
from tgi_operator.crd import CRD_NAME, CRD_PATH, render_crd
from tgi_operator.devenv.stack import RULES_PROBE, wait_for_admission_rules
from tgi_operator.devenv.testing import KubeCluster

pytestmark = pytest.mark.integration

FINALIZER = "tgi-operator.dev/finalizer"
ABANDON = {"metadata": {"annotations": {"tgi-operator.dev/deletion-policy": "Abandon"}}}
FIELD_MANAGER = "tgi-operator-tests"  # the crd_installed fixture's: re-applying the real API restores every rule
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


def install(cluster: KubeCluster, namespace: str, *, loose: bool) -> None:
    """Apply the loose CRD without the admission policy's binding, or the real API (CRD, policy, binding), and
    wait until the API server validates with it (a moment after Established)."""
    if loose:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", POLICY_NAME, "--ignore-not-found")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                    input=json.dumps(loose_crd()) if loose else CRD_PATH.read_text())
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    deadline = time.monotonic() + 60
    while True:
        probes = [manifest("probe", {}, finalizer=False)]  # refused by the real schema (region is required)
        if loose:  # and by the real rules (minInstances above maxInstances)
            probes.append(RULES_PROBE)
        results = [cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", check=False,
                                   input=json.dumps(probe)) for probe in probes]
        if all((result.returncode == 0) == loose for result in results):
            break
        assert time.monotonic() < deadline, f"the {'loose' if loose else 'real'} API never took effect"
        time.sleep(0.2)
    if not loose:
        wait_for_admission_rules(cluster)


@pytest.fixture
def store(cluster: KubeCluster, crd_installed: str, namespace: str) -> Iterator[Callable[[list[Case]], str]]:
    """Creates the given objects (with the operator's finalizer) under the loose API, then puts the real API back;
    afterwards removes whatever a failed test left."""

    def create(cases: list[Case]) -> str:
        install(cluster, namespace, loose=True)
        try:
            for name, spec, _ in cases:
                cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest(name, spec)))
        finally:
            install(cluster, namespace, loose=False)
        return namespace

    yield create
    leftovers = cluster.kubectl("get", "tgis", "-n", namespace, "-o", "name").stdout.split()
    for ref in leftovers:  # what a failed test left: with the real API in place, as every admin would
        cluster.kubectl("patch", ref, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        cluster.kubectl("delete", ref, "-n", namespace, "--wait=false", "--ignore-not-found")


def manage(cluster: KubeCluster, ns: str, name: str) -> None:
    """What an admin or the operator does to an object whatever its spec: annotate it, write its status, remove
    and add the finalizer (both ways it is written), delete it, and release it."""
    def ok(*args: str) -> None:
        result = cluster.kubectl(*args, "-n", ns, check=False)
        assert result.returncode == 0, f"{name}: kubectl {' '.join(args)}: {result.stderr}"

    ok("patch", "tgis", name, "--type=merge", "-p", json.dumps(ABANDON))
    ok("patch", "tgis", name, "--subresource=status", "--type=merge", "-p", '{"status":{"observedGeneration":1}}')
    ok("patch", "tgis", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    ok("patch", "tgis", name, "--type=json", "-p", json.dumps([{"op": "add", "path": "/metadata/finalizers",
                                                                 "value": [FINALIZER]}]))
    ok("delete", "tgis", name, "--wait=false")
    stuck = json.loads(cluster.kubectl("get", "tgis", name, "-n", ns, "-o", "json").stdout)
    assert stuck["metadata"].get("deletionTimestamp") and stuck["metadata"]["finalizers"] == [FINALIZER], name
    # No controller runs here: the finalizer's owner (or an admin) removes it, and the deletion completes.
    ok("patch", "tgis", name, "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    ok("wait", "--for=delete", "--timeout=30s", f"tgis/{name}")


@pytest.mark.parametrize("cases", [MISSING, WRONG_TYPE], ids=["fields-missing", "values-wrongly-typed"])
def test_old_objects_can_be_annotated_have_status_written_lose_their_finalizer_and_go(
    cluster: KubeCluster, store: Callable[[list[Case]], str], cases: list[Case]
) -> None:
    ns = store(cases)
    for name, _, _ in cases:
        manage(cluster, ns, name)


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
    assert "resulted in error" not in result.stderr, f"{name}: a CEL rule failed to evaluate: {result.stderr}"


def test_wrongly_typed_values_can_be_fixed_and_the_rest_of_the_spec_edited(
    cluster: KubeCluster, store: Callable[[list[Case]], str]
) -> None:
    """A region or project that is not a string cannot have made a service: fixing it is no move. An unchanged
    wrongly typed field is the schema's to ratchet; the operator reports it in the status."""
    ns = store(WRONG_TYPE)

    def patch(name: str, spec: Any) -> Any:
        return cluster.kubectl("patch", "tgis", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}),
                               check=False)

    for name, spec in [("region-a-number", {"region": "us-central1"}), ("project-a-number", {"project": "my-project"}),
                       ("spec-a-string", SEED), ("model-a-string", {"model": SEED["model"]}),
                       ("resources-a-string", {"resources": {"cpu": "8", "memory": "32Gi"}})]:
        result = patch(name, spec)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    # Once a string, the region is immutable again.
    moved = patch("region-a-number", {"region": "us-east4"})
    assert moved.returncode != 0 and "spec.region: region is immutable" in moved.stderr, moved.stderr
    # Editing another field while one stays wrongly typed.
    store([("still-a-number", {**SEED, "project": 7}, None)])
    edited = patch("still-a-number", {"scaling": {"concurrency": 8}})
    assert edited.returncode == 0, edited.stderr
    # A bad new value is still refused, by the schema or by the rules.
    for spec, refusal in [({"project": 8}, "spec.project: Invalid value"),
                          ({"scaling": {"minInstances": 4, "maxInstances": 3}}, "spec.scaling.minInstances: ")]:
        result = patch("still-a-number", spec)
        assert result.returncode != 0 and refusal in result.stderr, result.stderr


def test_a_rule_tightened_since_an_object_was_stored_is_ratcheted_on_its_unchanged_fields(
    cluster: KubeCluster, store: Callable[[list[Case]], str]
) -> None:
    """As the API server does for rules in a CRD: an edit elsewhere passes; an edit of the node meets the rule."""
    ns = store([("old-model-id", {"region": "us-central1", "model": {"id": "org--x/name", "quantize": "awq"}}, None)])

    def patch(spec: Any) -> Any:
        return cluster.kubectl("patch", "tgis", "old-model-id", "-n", ns, "--type=merge",
                               "-p", json.dumps({"spec": spec}), check=False)

    assert patch({"scaling": {"concurrency": 8}}).returncode == 0
    refused = patch({"model": {"maxTotalTokens": 4096}})
    assert refused.returncode != 0 and "spec.model.id: model.id must not contain '--'" in refused.stderr, refused.stderr
    assert patch({"model": {"id": "org/name", "maxTotalTokens": 4096}}).returncode == 0
