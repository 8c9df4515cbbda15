"""The generated API: committed file up to date; the CRD structural, documented, CEL-cost friendly, defaults =
models'; every CEL rule in the admission policy, none in the CRD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tgi_operator import API_GROUP, API_VERSION, KIND, PLURAL
from tgi_operator.admission import POLICY_NAME, VALIDATIONS_KEY, rules_in
from tgi_operator.crd import CRD_PATH, crd_yaml, render_api, render_crd, spec_schema, structural
from tgi_operator.gpus import GPU_TYPES
from tgi_operator.models import AccessSpec, ResourcesSpec, ScalingSpec

VERSION = render_crd()["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]
SPEC = ROOT["properties"]["spec"]
STATUS = ROOT["properties"]["status"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`.a.b[]`)."""
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_committed_crd_is_the_generated_one() -> None:
    assert CRD_PATH.read_text() == crd_yaml(), "crds/ is stale: run `make crd` (tgi-operator crd --output ...)"


def test_generation_is_deterministic() -> None:
    assert crd_yaml() == crd_yaml()
    assert list(yaml.safe_load_all(crd_yaml())) == render_api()
    assert [doc["kind"] for doc in render_api()] == [
        "CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]


def test_names() -> None:
    spec = render_crd()["spec"]
    assert render_crd()["metadata"]["name"] == f"{PLURAL}.{API_GROUP}"
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["shortNames"] == ["tgis"]
    assert spec["names"]["categories"] == ["tgi"]
    assert VERSION["name"] == API_VERSION and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Reason", "URL", "Model", "GPU", "Max-$/h", "Age"]
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Model"] == ".spec.model.id"
    assert columns["GPU"] == ".spec.resources.gpu.type"
    assert columns["Max-$/h"] == ".status.cost.maximumHourly"  # the estimate at maxInstances


def test_schema_is_structural() -> None:
    forbidden = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "additionalProperties", "nullable"}
    for path, node in walk(ROOT):
        assert not forbidden & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("default", "") is not None, f"{path} defaults to null"


def test_every_field_is_described() -> None:
    for path, node in walk(ROOT):
        if path not in ("", ".metadata"):
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_every_spec_string_and_list_is_bounded() -> None:
    """CEL's cost budget needs a bound on every string and list the rules may touch."""
    for path, node in walk(SPEC, ".spec"):
        if node.get("type") == "string" or node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node or "enum" in node, f"{path} has no maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} has no maxItems"


def test_status_keeps_kopf_progress_and_starts_unobserved() -> None:
    assert STATUS["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    # Only the status itself has a default: observedGeneration 0, so a new object is in progress (kstatus) until the
    # operator's first write. Nothing inside it is defaulted: only the operator writes it.
    assert STATUS["default"] == {"observedGeneration": 0}
    assert all("default" not in node for path, node in walk(STATUS) if node is not STATUS)
    conditions = STATUS["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize(
    ("field", "model"), [("resources", ResourcesSpec), ("scaling", ScalingSpec), ("access", AccessSpec)]
)
def test_object_defaults_are_the_models_defaults(field: str, model: type) -> None:
    assert SPEC["properties"][field]["default"] == model().model_dump(mode="json", by_alias=True, exclude_none=True)


def test_required_fields() -> None:
    assert ROOT["required"] == ["spec"]
    assert set(SPEC["required"]) == {"region", "model"}
    assert SPEC["properties"]["model"]["required"] == ["id"]


def test_the_crd_holds_no_cel_rule_and_the_policy_holds_every_one() -> None:
    """A CEL rule in the CRD would run on every metadata and status write (admission.py says why that strands)."""
    assert all(VALIDATIONS_KEY not in node for _, node in walk(ROOT))
    policy = render_api()[1]
    assert policy["metadata"]["name"] == POLICY_NAME
    assert len(policy["spec"]["validations"]) == len(list(rules_in(spec_schema()))) > 20
    assert render_api()[2]["spec"] == {"policyName": POLICY_NAME, "validationActions": ["Deny"]}


def test_rules_name_their_field_and_cover_the_gpu_table() -> None:
    rules = list(rules_in(spec_schema()))
    assert all(rule.message for rule in rules)
    region_rules = [rule for rule in rules if rule.field_path == ".region" and "oldSelf" not in rule.rule]
    assert len(region_rules) == len(GPU_TYPES)
    for gpu in GPU_TYPES.values():
        assert any(f"'{gpu.name}'" in rule.rule and all(r in rule.rule for r in gpu.regions) for rule in region_rules)


def test_int_or_string() -> None:
    cpu = SPEC["properties"]["resources"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True and "type" not in cpu


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}], "default": None, "description": "d"},
         {"type": "string", "maxLength": 3, "description": "d"}),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"x-kubernetes-int-or-string": True}),
        ({"$ref": "#/$defs/E", "description": "outer"}, {"type": "string", "enum": ["a"], "description": "outer"}),
    ],
)
def test_structural_conversion(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    definitions = {"E": {"type": "string", "enum": ["a"], "title": "E", "description": "inner"}}
    root = {"type": "object", "properties": {"f": schema}, "$defs": definitions}
    assert structural(root)["properties"]["f"] == expected


def test_structural_refuses_unions_kubernetes_cannot_express() -> None:
    with pytest.raises(ValueError, match="no structural equivalent"):
        structural({"type": "object", "properties": {"f": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}})
