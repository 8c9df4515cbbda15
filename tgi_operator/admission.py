"""The TGIService admission rules: models.py's CEL rules as a ValidatingAdmissionPolicy, shipped with the CRD.

Why not `x-kubernetes-validations` in the CRD: the API server evaluates those on EVERY update of an object — a
metadata patch, a status write, the removal of a finalizer — and a CEL *runtime error* is never ratcheted. An
object stored under an older, looser schema with a value of the wrong type (`region: 42`, `spec: "a string"`)
makes every rule that reads it error, so nothing, not even an admin removing the finalizer, could update it.
An admission policy can say when it applies: only to a create, or to an update that changes the spec
(`matchConditions`), and never to the status subresource. Type errors in unchanged fields are the schema's
business, and the schema ratchets them (CRDValidationRatcheting, GA in 1.33).

The rules stay written in models.py as CRD-style rules on a schema node (`self`, `oldSelf`); this module moves
each to the object's root (`object.spec.model`, `oldObject.spec.model`):
  - guarded, so a node that is absent or of the wrong type passes (the schema decides types and `required`);
  - ratcheted like CRD rules: a rule on a node that did not change passes (an object stored before a rule
    tightened keeps its spec editable elsewhere);
  - transition rules (`oldSelf`) apply to updates only, as in a CRD;
  - rules on list items run for every item, and the message names the first failing index;
  - every message starts with the field's path, as the API server's own schema errors do.
The policy admits through its runtime value conversion, which is dynamic (no schema): `type()` and heterogeneous
`==` behave on a wrongly typed value where a CRD rule would error. (An admission policy reports only its first
failing validation; schema errors, which come first, are still reported all at once.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tgi_operator import API_GROUP, PLURAL

POLICY_NAME = f"{PLURAL}.{API_GROUP}"
VALIDATIONS_KEY = "x-kubernetes-validations"
ITEMS = "[]"  # a path segment: every item of the list above it

# Applies to a create, or to an update whose spec changed; metadata, finalizer and status writes never meet it.
SPEC_WRITTEN = (
    "request.operation == 'CREATE' || has(object.spec) != has(oldObject.spec) || "
    "(has(object.spec) && object.spec != oldObject.spec)"
)

_CEL_TYPES = {"object": "map", "array": "list", "string": "string", "integer": "int", "boolean": "bool",
              "number": "double"}
_STRING_LITERAL = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


@dataclass(frozen=True)
class Node:
    """A schema node: its path from the object root (`ITEMS` for list items) and its CEL type, if it has one."""

    path: tuple[str, ...]
    cel_type: str | None


@dataclass(frozen=True)
class Rule:
    """One CRD-style rule (`self`, `oldSelf`) on a node, with the nodes leading to it (root first)."""

    nodes: tuple[Node, ...]
    rule: str
    message: str
    field_path: str = ""


def rules_in(schema: dict[str, Any], path: tuple[str, ...] = ("spec",), above: tuple[Node, ...] = ()) -> Iterator[Rule]:
    """Every CEL rule in a structural schema, depth first, parents before children."""
    nodes = (*above, Node(path, None if schema.get("x-kubernetes-int-or-string") else _CEL_TYPES.get(schema.get("type", ""))))
    for validation in schema.get(VALIDATIONS_KEY, []):
        yield Rule(nodes, validation["rule"], validation["message"], validation.get("fieldPath", ""))
    for name, prop in schema.get("properties", {}).items():
        yield from rules_in(prop, (*path, name), nodes)
    if "items" in schema:
        yield from rules_in(schema["items"], (*path, ITEMS), nodes)


def without_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of the schema with every `x-kubernetes-validations` left out."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == VALIDATIONS_KEY:
            continue
        if key == "properties":
            out[key] = {name: without_rules(prop) for name, prop in value.items()}
        elif key == "items":
            out[key] = without_rules(value)
        else:
            out[key] = value
    return out


class _Variables:
    """The policy's named guards, shared by its validations (CEL variables are evaluated once per request):
    `present_spec_model`: the node is there with the schema's type; `old_present_…`: so it was before the update;
    `unchanged_…`: it did not change (the rule is ratcheted, as the API server does for rules in a CRD)."""

    def __init__(self) -> None:
        self.defined: dict[str, str] = {}

    def _define(self, name: str, expression: str) -> str:
        self.defined.setdefault(name, expression)
        return f"variables.{name}"

    def present(self, nodes: tuple[Node, ...], *, old: bool = False) -> str:
        root = "oldObject" if old else "object"
        node = nodes[-1]
        access = _access(root, node.path)
        checks = [self.present(nodes[:-1], old=old) if len(nodes) > 1 else ("oldObject != null" if old else "")]
        checks += [f"has({access})"] + ([f"type({access}) == {node.cel_type}"] if node.cel_type else [])
        name = ("old_present_" if old else "present_") + "_".join(node.path)
        return self._define(name, " && ".join(c for c in checks if c))

    def unchanged(self, nodes: tuple[Node, ...]) -> str:
        path = nodes[-1].path
        return self._define("unchanged_" + "_".join(path),
                            f"{self.present(nodes, old=True)} && {_access('oldObject', path)} == {_access('object', path)}")

    def as_list(self) -> list[dict[str, str]]:
        return [{"name": name, "expression": expression} for name, expression in self.defined.items()]


def validation(rule: Rule, variables: _Variables) -> dict[str, Any]:
    """One rule as a policy validation: `expression`, and a message that starts with the field's path."""
    lists = [i for i, node in enumerate(rule.nodes) if node.path[-1] == ITEMS]
    if lists:
        return _item_validation(rule, lists[0], variables)
    path = rule.nodes[-1].path
    body = _substitute(rule.rule, _access("object", path), _access("oldObject", path))
    present = variables.present(rule.nodes)
    if "oldSelf" in rule.rule:  # a transition rule: for updates, with the node there before and after
        expression = f"!{present} || !{variables.present(rule.nodes, old=True)} || ({body})"
    elif len(path) == 1:  # on the spec itself: the match condition already passes an unchanged spec by
        expression = f"!{present} || ({body})"
    else:
        expression = f"!{present} || {variables.unchanged(rule.nodes)} || ({body})"
    return {"expression": expression, "message": f"{_dotted(path)}{rule.field_path}: {rule.message}"}


def _item_validation(rule: Rule, list_index: int, variables: _Variables) -> dict[str, Any]:
    """A rule on list items (or on a field of them): checked for every item that is not in the old list."""
    list_nodes, item_nodes = rule.nodes[:list_index], rule.nodes[list_index:]
    if any(node.path[-1] == ITEMS for node in item_nodes[1:]):
        raise ValueError(f"rules under nested lists are not supported: {rule.rule}")
    items, old_items = _access("object", list_nodes[-1].path), _access("oldObject", list_nodes[-1].path)
    inside = item_nodes[-1].path[len(item_nodes[0].path):]  # the field of the item the rule is on, if any
    item_guards = [f"type(item) == {item_nodes[0].cel_type}"] if item_nodes[0].cel_type else []
    for depth, node in enumerate(item_nodes[1:], start=1):
        access = ".".join(("item", *inside[:depth]))
        item_guards += [f"has({access})"] + ([f"type({access}) == {node.cel_type}"] if node.cel_type else [])
    body = _substitute(rule.rule, ".".join(("item", *inside)), None)
    guard = f"!({' && '.join(item_guards)}) || " if item_guards else ""
    check = f"({variables.present(list_nodes, old=True)} && item in {old_items}) || {guard}({body})"
    field = f"{_dotted(inside) and '.' + _dotted(inside)}{rule.field_path}"
    first_failing = f"{items}.indexOf({items}.filter(item, !({check}))[0])"
    return {
        "expression": f"!{variables.present(list_nodes)} || {items}.all(item, {check})",
        "message": f"{_dotted(list_nodes[-1].path)}{field}: {rule.message}",
        "messageExpression": f"'{_dotted(list_nodes[-1].path)}[' + string({first_failing}) + ']{field}: ' + "
                             f"{json.dumps(rule.message)}",
    }


def _access(root: str, path: tuple[str, ...]) -> str:
    return ".".join((root, *path))


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _substitute(rule: str, new: str, old: str | None) -> str:
    """`self` and `oldSelf` replaced outside string literals."""
    parts: list[str] = []
    last = 0
    for literal in _STRING_LITERAL.finditer(rule):
        parts.append(_replace_names(rule[last:literal.start()], new, old))
        parts.append(literal.group())
        last = literal.end()
    parts.append(_replace_names(rule[last:], new, old))
    return "".join(parts)


def _replace_names(code: str, new: str, old: str | None) -> str:
    if old is None and re.search(r"\boldSelf\b", code):
        raise ValueError("transition rules (oldSelf) on list items are not supported")
    code = re.sub(r"\boldSelf\b", old or "", code)
    return re.sub(r"\bself\b", new, code)


def render_policy(spec_schema: dict[str, Any], labels: dict[str, str]) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy holding every rule of the spec schema, and its binding."""
    variables = _Variables()
    validations = [validation(rule, variables) for rule in rules_in(spec_schema)]
    metadata = {"name": POLICY_NAME, "labels": labels}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata,
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [API_GROUP],
                "apiVersions": ["*"],
                "resources": [PLURAL],  # not tgiservices/status: the operator's status writes never meet the rules
                "operations": ["CREATE", "UPDATE"],
            }]},
            "matchConditions": [{"name": "spec-created-or-changed", "expression": SPEC_WRITTEN}],
            "variables": variables.as_list(),
            "validations": validations,
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata,
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    }
    return [policy, binding]
