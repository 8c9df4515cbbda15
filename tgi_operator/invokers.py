"""Pure: the run.invoker binding after this object's dropped members are revoked, and after its members are granted.

Two steps, revocations first, so that a grant the cloud refuses (a mistyped account) never keeps a dropped member
in. Members granted by anyone else are never touched; the policy's etag travels with it, so a concurrent change
makes SetIamPolicy fail with ABORTED (retried) instead of being overwritten.
"""

from __future__ import annotations

from google.iam.v1 import policy_pb2

from tgi_operator.render import INVOKER_ROLE


def parse_members(annotation: str | None) -> set[str]:
    return {m for m in (annotation or "").split(",") if m}


def invoker_members_of(policy: policy_pb2.Policy) -> set[str]:
    return {m for b in policy.bindings if b.role == INVOKER_ROLE and not b.HasField("condition") for m in b.members}


def _with_members(policy: policy_pb2.Policy, wanted: set[str]) -> policy_pb2.Policy | None:
    """The policy with its unconditional run.invoker binding holding exactly `wanted`; None when it already does."""
    if wanted == invoker_members_of(policy):
        return None
    new = policy_pb2.Policy()
    new.CopyFrom(policy)
    new.version = 3  # written as read (version 3), so IAM keeps any conditional binding it holds
    binding = next((b for b in new.bindings if b.role == INVOKER_ROLE and not b.HasField("condition")), None)
    if binding is None:
        binding = new.bindings.add(role=INVOKER_ROLE)
    del binding.members[:]
    binding.members.extend(sorted(wanted))
    if not binding.members:
        new.bindings.remove(binding)
    return new


def revoked(policy: policy_pb2.Policy, granted: set[str], desired: set[str]) -> policy_pb2.Policy | None:
    """Step 1: members this object granted and no longer wants are removed."""
    return _with_members(policy, invoker_members_of(policy) - (granted - desired))


def granted(policy: policy_pb2.Policy, desired: set[str]) -> policy_pb2.Policy | None:
    """Step 2: every member this object wants is present."""
    return _with_members(policy, invoker_members_of(policy) | desired)
