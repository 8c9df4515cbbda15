"""Pure: the run.invoker binding after this object's members are added and its dropped members removed.

Members granted by anyone else are never touched; the policy's etag travels with it, so a concurrent
change makes SetIamPolicy fail with ABORTED (retried) instead of being overwritten.
"""

from __future__ import annotations

from google.iam.v1 import policy_pb2

from tgi_operator.render import INVOKER_ROLE


def parse_members(annotation: str | None) -> set[str]:
    return {m for m in (annotation or "").split(",") if m}


def updated_policy(policy: policy_pb2.Policy, previous: set[str], desired: set[str]) -> policy_pb2.Policy | None:
    """The policy to write, or None when it already grants exactly what it should."""
    new = policy_pb2.Policy()
    new.CopyFrom(policy)
    binding = next((b for b in new.bindings if b.role == INVOKER_ROLE and not b.HasField("condition")), None)
    current = set(binding.members) if binding else set()
    wanted = (current - (previous - desired)) | desired
    if wanted == current:
        return None
    if binding is None:
        binding = new.bindings.add(role=INVOKER_ROLE)
    del binding.members[:]
    binding.members.extend(sorted(wanted))
    if not binding.members:
        new.bindings.remove(binding)
    return new
