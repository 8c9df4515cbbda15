from __future__ import annotations

import pytest
from google.iam.v1 import policy_pb2

from tgi_operator.invokers import granted, invoker_members_of, parse_members, revoked

ALICE, BOB, APP = "user:alice@example.com", "user:bob@example.com", "serviceAccount:app@p.iam.gserviceaccount.com"


def policy(*bindings: tuple[str, list[str]]) -> policy_pb2.Policy:
    return policy_pb2.Policy(etag=b"e1", bindings=[policy_pb2.Binding(role=r, members=m) for r, m in bindings])


def start_policy(members: list[str]) -> policy_pb2.Policy:
    others = ("roles/run.developer", [BOB])
    return policy(("roles/run.invoker", members), others) if members else policy(others)


def apply_both(start: list[str], previous: set[str], desired: set[str]) -> tuple[set[str], int]:
    """Run both steps as reconcile does; returns the final members and how many writes it took."""
    current, writes = start_policy(start), 0
    for step in (lambda p: revoked(p, previous, desired), lambda p: granted(p, desired)):
        new = step(current)
        if new is not None:
            assert new.etag == b"e1"  # read-modify-write keeps the etag
            assert {m for b in new.bindings if b.role == "roles/run.developer" for m in b.members} == {BOB}
            assert all(b.members for b in new.bindings)
            current, writes = new, writes + 1
    return invoker_members_of(current), writes


@pytest.mark.parametrize(
    ("start", "previous", "desired", "expected", "writes"),
    [
        ([], set(), {ALICE}, {ALICE}, 1),  # first grant creates the binding
        ([ALICE], {ALICE}, {ALICE}, {ALICE}, 0),  # steady state: nothing to write
        ([ALICE, BOB], {ALICE}, {ALICE}, {ALICE, BOB}, 0),  # BOB was granted by someone else: left alone
        ([ALICE, BOB], {ALICE}, set(), {BOB}, 1),  # ours revoked, theirs kept
        ([ALICE], {ALICE}, {APP}, {APP}, 2),  # replaced: revoke first, then grant
        ([BOB], set(), {BOB}, {BOB}, 0),  # already granted by someone else: no write
        ([ALICE], {ALICE}, set(), set(), 1),  # last member gone: binding removed
    ],
)
def test_revoke_then_grant(start, previous, desired, expected, writes) -> None:
    assert apply_both(start, previous, desired) == (expected, writes)


def test_a_revocation_does_not_wait_for_grants() -> None:
    """Dropping ALICE while adding APP: step 1 alone already removes ALICE (a refused grant cannot keep her in)."""
    assert invoker_members_of(revoked(start_policy([ALICE]), {ALICE}, {APP})) == set()


def test_conditional_bindings_are_not_ours() -> None:
    conditional = policy_pb2.Binding(role="roles/run.invoker", members=[ALICE])
    conditional.condition.expression = "request.time < timestamp('2030-01-01T00:00:00Z')"
    start = policy_pb2.Policy(etag=b"e1", bindings=[conditional])
    new = granted(start, {APP})
    assert [list(b.members) for b in new.bindings if b.HasField("condition")] == [[ALICE]]
    assert invoker_members_of(new) == {APP}


def test_parse_members() -> None:
    assert parse_members(None) == set()
    assert parse_members("") == set()
    assert parse_members(f"{ALICE},{APP}") == {ALICE, APP}
