"""admission.py: CRD-style rules moved to the object's root, guarded, ratcheted and named by field.

What the expressions do on a real API server is tested in tests/integration (test_crd_api, test_bad_stored_objects);
these pin down the translation itself.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tgi_operator.admission import ITEMS, Node, _Variables, render_policy, rules_in, validation, without_rules
from tgi_operator.crd import LABELS, spec_schema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-validations": [{"rule": "self.a != 'self'", "message": "a must not be the word self",
                                  "fieldPath": ".a"}],
    "properties": {
        "a": {"type": "string"},
        "model": {"type": "object", "x-kubernetes-validations": [
            {"rule": "!has(self.x) || self.x < 3", "message": "x must be below 3", "fieldPath": ".x"}],
            "properties": {"x": {"type": "integer"}}},
        "cpu": {"x-kubernetes-int-or-string": True, "x-kubernetes-validations": [
            {"rule": "isQuantity(string(self))", "message": "cpu must be a quantity"}]},
        "where": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "where is immutable"}]},
        "tags": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self.startsWith('t')", "message": "tags start with t"}]}},
        "env": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self != 'PORT'", "message": "not PORT"}]}}}},
    },
}


def translated(schema: dict[str, Any] = SCHEMA) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Validations by message, and the variables they use."""
    variables = _Variables()
    validations = {rule.message: validation(rule, variables) for rule in rules_in(schema)}
    return validations, variables.defined


def test_rules_are_found_with_their_paths_and_types() -> None:
    rules = {rule.message: rule for rule in rules_in(SCHEMA)}
    assert [node.path for node in rules["x must be below 3"].nodes] == [("spec",), ("spec", "model")]
    assert [node.cel_type for node in rules["x must be below 3"].nodes] == ["map", "map"]
    assert rules["cpu must be a quantity"].nodes[-1] == Node(("spec", "cpu"), None)  # int-or-string: no one type
    assert rules["not PORT"].nodes[-1].path == ("spec", "env", ITEMS, "name")


def test_without_rules_drops_every_rule_and_nothing_else() -> None:
    stripped = without_rules(SCHEMA)
    assert "x-kubernetes-validations" not in repr(stripped)
    assert stripped["properties"]["env"]["items"]["properties"]["name"] == {"type": "string"}
    assert "x-kubernetes-validations" in repr(SCHEMA)  # the input is left alone


def test_self_is_replaced_outside_string_literals_only() -> None:
    validations, _ = translated()
    assert validations["a must not be the word self"]["expression"] == (
        "!variables.present_spec || (object.spec.a != 'self')")


def test_a_rule_below_the_spec_is_guarded_and_ratcheted() -> None:
    validations, variables = translated()
    assert validations["x must be below 3"] == {
        "expression": "!variables.present_spec_model || variables.unchanged_spec_model || "
                      "(!has(object.spec.model.x) || object.spec.model.x < 3)",
        "message": "spec.model.x: x must be below 3",
    }
    assert variables["present_spec"] == "has(object.spec) && type(object.spec) == map"
    assert variables["present_spec_model"] == (
        "variables.present_spec && has(object.spec.model) && type(object.spec.model) == map")
    assert variables["old_present_spec"] == "oldObject != null && has(oldObject.spec) && type(oldObject.spec) == map"
    assert variables["unchanged_spec_model"] == (
        "variables.old_present_spec_model && oldObject.spec.model == object.spec.model")
    # int-or-string: present, whatever its type
    assert variables["present_spec_cpu"] == "variables.present_spec && has(object.spec.cpu)"


def test_a_transition_rule_applies_to_updates_with_the_node_before_and_after() -> None:
    validations, _ = translated()
    assert validations["where is immutable"]["expression"] == (
        "!variables.present_spec_where || !variables.old_present_spec_where || "
        "(object.spec.where == oldObject.spec.where)")


def test_a_rule_on_list_items_checks_new_items_and_names_the_first_failing_index() -> None:
    validations, _ = translated()
    tags = validations["tags start with t"]
    check = ("(variables.old_present_spec_tags && item in oldObject.spec.tags) || !(type(item) == string) || "
             "(item.startsWith('t'))")
    assert tags["expression"] == f"!variables.present_spec_tags || object.spec.tags.all(item, {check})"
    assert tags["message"] == "spec.tags: tags start with t"
    assert tags["messageExpression"] == (
        f"'spec.tags[' + string(object.spec.tags.indexOf(object.spec.tags.filter(item, !({check}))[0])) + ']: ' + "
        '"tags start with t"')
    name = validations["not PORT"]
    assert "!(type(item) == map && has(item.name) && type(item.name) == string) || (item.name != 'PORT')" in (
        name["expression"])
    assert name["messageExpression"].endswith("[0])) + '].name: ' + \"not PORT\"")


@pytest.mark.parametrize(("rule", "items", "match"), [
    ("self == oldSelf", {"type": "string"}, "transition rules"),
    ("true", {"type": "array", "items": {"type": "string"}}, "nested lists"),
])
def test_what_it_cannot_translate_is_refused(rule: str, items: dict[str, Any], match: str) -> None:
    inner = {**items, "x-kubernetes-validations": [{"rule": rule, "message": "m"}]}
    if items["type"] == "array":
        inner = {**items, "items": {**items["items"], "x-kubernetes-validations": [{"rule": rule, "message": "m"}]}}
    schema = {"type": "object", "properties": {"l": {"type": "array", "items": inner}}}
    with pytest.raises(ValueError, match=match):
        translated(schema)


def test_the_policy_defines_each_variable_before_it_is_used_and_every_one_it_uses() -> None:
    policy = render_policy(spec_schema(), LABELS)[0]["spec"]
    defined: list[str] = []
    for variable in policy["variables"]:
        assert set(re.findall(r"variables\.(\w+)", variable["expression"])) <= set(defined), variable["name"]
        defined.append(variable["name"])
    uses = [name for item in policy["validations"] + policy["variables"]
            for name in re.findall(r"variables\.(\w+)", item["expression"] + item.get("messageExpression", ""))]
    assert set(uses) == set(defined)  # every one used is defined, every one defined is used


def test_the_policy_meets_creates_and_spec_changes_only() -> None:
    policy = render_policy(spec_schema(), LABELS)[0]["spec"]
    assert policy["failurePolicy"] == "Fail"
    assert policy["matchConstraints"]["resourceRules"][0]["resources"] == ["tgiservices"]  # not tgiservices/status
    assert policy["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert [c["name"] for c in policy["matchConditions"]] == ["spec-created-or-changed"]


def test_every_message_starts_with_its_field() -> None:
    for item in render_policy(spec_schema(), LABELS)[0]["spec"]["validations"]:
        assert re.match(r"^spec(\.[A-Za-z]+)*: ", item["message"]), item["message"]
