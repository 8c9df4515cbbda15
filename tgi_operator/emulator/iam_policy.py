"""IAM allow-policy semantics for Cloud Run services, as pure functions: policy versions, conditional role
bindings, the version-1 view of a conditional policy, and merging bindings per (role, condition).

Cloud Run services accept conditional role bindings
(https://cloud.google.com/iam/help/conditions/resource-policies). The version rules are the `google.iam.v1.Policy`
and `GetPolicyOptions` proto comments and https://cloud.google.com/iam/docs/policies#versions.
"""

from __future__ import annotations

import hashlib

from google.iam.v1 import policy_pb2
from google.type import expr_pb2

from tgi_operator.emulator.rules import Violation

VERSIONS_URL = "https://cloud.google.com/iam/docs/policies#versions"
VALID_VERSIONS = (0, 1, 3)  # "Valid values are 0, 1, and 3. Requests that specify an invalid value are rejected."
CONDITIONAL_VERSION = 3
WITHCOND = "_withcond_"


def has_conditions(policy: policy_pb2.Policy) -> bool:
    return any(b.HasField("condition") for b in policy.bindings)


def _condition_key(binding: policy_pb2.Binding) -> bytes:
    return binding.condition.SerializeToString(deterministic=True) if binding.HasField("condition") else b""


def withcond_role(binding: policy_pb2.Binding) -> str:
    """How a version-1 read shows a conditional binding: `roles/x_withcond_<20 hex digits>`, without the condition.
    Source: https://cloud.google.com/iam/docs/troubleshooting-withcond (the hash is the emulator's own)."""
    return binding.role + WITHCOND + hashlib.sha256(_condition_key(binding)).hexdigest()[:20]


def check_requested_version(version: int) -> Violation | None:
    """GetIamPolicy's options.requested_policy_version: "Requests specifying an invalid value will be rejected."
    (GetPolicyOptions proto)."""
    if version in VALID_VERSIONS:
        return None
    return Violation("options.requested_policy_version", f"Invalid requested policy version {version}. Valid values are 0, 1, and 3.")


def view(policy: policy_pb2.Policy, requested_version: int) -> policy_pb2.Policy:
    """The policy as GetIamPolicy returns it: at version 3 as stored; below 3, each conditional binding's role is
    suffixed `_withcond_<hash>` and its condition dropped, and the version is 1 (troubleshooting-withcond)."""
    if requested_version >= CONDITIONAL_VERSION or not has_conditions(policy):
        return policy
    shown = policy_pb2.Policy()
    shown.CopyFrom(policy)
    shown.version = 1
    for binding in shown.bindings:
        if binding.HasField("condition"):
            binding.role = withcond_role(binding)
            binding.ClearField("condition")
    return shown


def check_write(new: policy_pb2.Policy, stored: policy_pb2.Policy) -> list[Violation]:
    """SetIamPolicy's version rules (each INVALID_ARGUMENT):
    - the version is 0, 1 or 3 (Policy proto);
    - "Any operation that affects conditional role bindings must specify version 3" (Policy proto): a binding with a
      condition needs version 3 (wording: assumption), and so does any write over a stored conditional policy —
      "Specified policy version (1) cannot be less than the existing policy version (3)."
      (hashicorp/vault-plugin-secrets-gcp#88). Stricter than IAM on one point: without an etag IAM lets a version-1
      write replace a conditional policy and drop its conditions (Policy proto); the emulator refuses it too;
    - conditions and `_withcond_` roles do not mix (GoogleCloudPlatform/k8s-config-connector#766);
    - a condition has a title and an expression (https://cloud.google.com/iam/docs/conditions-overview; assumption
      for the wording)."""
    found: list[Violation] = []
    if new.version not in VALID_VERSIONS:
        return [Violation("policy.version", f"Invalid policy version {new.version}. Valid values are 0, 1, and 3.")]
    if has_conditions(stored) and new.version < CONDITIONAL_VERSION:
        found.append(
            Violation(
                "policy.version",
                f"Specified policy version ({new.version}) cannot be less than the existing policy version "
                f"({CONDITIONAL_VERSION}). For more information, please refer to {VERSIONS_URL}.",
            )
        )
    conditional = has_conditions(new)
    hashed = any(WITHCOND in b.role for b in new.bindings)
    if conditional and hashed:
        found.append(
            Violation(
                "policy.bindings",
                "Policy cannot contain both conditions and condition hashes. Please update your client to request "
                f"version 3 policy. For more information, please refer to {VERSIONS_URL}.",
            )
        )
    for i, binding in enumerate(new.bindings):
        if not binding.HasField("condition"):
            continue
        if new.version != CONDITIONAL_VERSION:
            found.append(
                Violation(
                    f"policy.bindings[{i}].condition",
                    f"Conditional role bindings require policy version 3, got {new.version}. "
                    f"For more information, please refer to {VERSIONS_URL}.",
                )
            )
        for field in ("title", "expression"):
            if not getattr(binding.condition, field).strip():
                found.append(Violation(f"policy.bindings[{i}].condition.{field}", f"Condition {field} is required."))
    return found


def merged(new: policy_pb2.Policy) -> policy_pb2.Policy:
    """Bindings merged per (role, condition), members sorted and de-duplicated, empty bindings dropped; version 3
    when a binding has a condition, else 1 ("if you specify version 3, but the policy has no conditional role
    bindings, the response uses version 1", GetPolicyOptions proto). Etag is left to the caller."""
    groups: dict[tuple[str, bytes], set[str]] = {}
    conditions: dict[bytes, expr_pb2.Expr] = {}
    for binding in new.bindings:
        key = (binding.role, _condition_key(binding))
        groups.setdefault(key, set()).update(binding.members)
        if binding.HasField("condition"):
            conditions[key[1]] = binding.condition
    policy = policy_pb2.Policy()
    for (role, ckey), members in sorted(groups.items()):
        if not members:
            continue
        binding = policy.bindings.add(role=role, members=sorted(members))
        if ckey:
            binding.condition.CopyFrom(conditions[ckey])
    policy.version = CONDITIONAL_VERSION if has_conditions(policy) else 1
    return policy
