from __future__ import annotations

import pytest
from google.iam.v1 import policy_pb2

from tgi_operator.invokers import parse_members, updated_policy

ALICE, BOB, APP = "user:alice@example.com", "user:bob@example.com", "serviceAccount:app@p.iam.gserviceaccount.com"


def policy(*bindings: tuple[str, list[str]]) -> policy_pb2.Policy:
    return policy_pb2.Policy(etag=b"e1", bindings=[policy_pb2.Binding(role=r, members=m) for r, m in bindings])


def invokers(p: policy_pb2.Policy | None) -> set[str] | None:
    if p is None:
        return None
    return {m for b in p.bindings if b.role == "roles/run.invoker" for m in b.members}


@pytest.mark.parametrize(
    ("start", "previous", "desired", "expected"),
    [
        ([], set(), {ALICE}, {ALICE}),  # first grant creates the binding
        ([ALICE], {ALICE}, {ALICE}, None),  # steady state: nothing to write
        ([ALICE, BOB], {ALICE}, {ALICE}, None),  # BOB was granted by someone else: left alone
        ([ALICE, BOB], {ALICE}, set(), {BOB}),  # ours revoked, theirs kept
        ([ALICE], {ALICE}, {APP}, {APP}),  # replaced
        ([BOB], set(), {BOB}, None),  # already granted by someone else: no write, and now also ours
        ([ALICE], {ALICE}, set(), set()),  # last member gone: binding removed
    ],
)
def test_updated_policy(start, previous, desired, expected) -> None:
    start_policy = policy(("roles/run.invoker", start), ("roles/run.developer", [BOB])) if start else policy(("roles/run.developer", [BOB]))
    result = updated_policy(start_policy, previous, desired)
    assert invokers(result) == expected
    if result is not None:
        assert result.etag == b"e1"  # read-modify-write keeps the etag
        assert {m for b in result.bindings if b.role == "roles/run.developer" for m in b.members} == {BOB}
        assert all(b.members for b in result.bindings)


def test_parse_members() -> None:
    assert parse_members(None) == set()
    assert parse_members("") == set()
    assert parse_members(f"{ALICE},{APP}") == {ALICE, APP}
