"""The emulator's self-indexing tables (tables.py) and the state-file encoding (state_file.py): the indexes answer
what a walk over every entry would, whichever way the table is written, and a save re-encodes only what changed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import policy_pb2

from tgi_operator.emulator import state as state_module
from tgi_operator.emulator.state import State
from tgi_operator.emulator.state_file import EncodedEntries, json_object
from tgi_operator.emulator.tables import Grouped, Referrers, SecondaryKey, SortedKeys, Table, offset_page

NAMES = ["p/a/1", "p/a/2", "p/b/1", "q/a/1", "p/", "pp/a/1"]


def _walk(keys: list[str], prefix: str, after: str) -> list[str]:
    """What SortedKeys.starting_with must equal: the walk it replaces."""
    return sorted(k for k in keys if k.startswith(prefix) and k > after)


@pytest.mark.parametrize("prefix", ["", "p/", "p/a/", "p/b/", "pp/", "q/", "r/", "p/a/1"])
@pytest.mark.parametrize("after", ["", "p/", "p/a/1", "p/a/2", "p/b/9", "z"])
def test_sorted_keys_read_a_prefix_after_a_key(prefix: str, after: str) -> None:
    index = SortedKeys()
    table: Table[int] = Table({}, index)
    for i, name in enumerate(NAMES):
        table[name] = i
    assert list(index.starting_with(prefix, after)) == _walk(NAMES, prefix, after)


def test_indexes_follow_every_kind_of_write() -> None:
    names, ids = SortedKeys(), SecondaryKey(lambda v: v["id"])
    table: Table[dict[str, str]] = Table({"b": {"id": "2"}}, names, ids)
    table["a"] = {"id": "1"}
    table["b"] = {"id": "3"}  # replaced: the old secondary key goes
    assert list(names.starting_with("")) == ["a", "b"] and (ids.get("2"), ids.get("3")) == (None, "b")
    table.pop("a", None)
    table.pop("missing", None)
    del table["b"]
    assert list(names.starting_with("")) == [] and ids.get("1") is None and ids.get("3") is None
    table.update({"c": {"id": "4"}})
    table.setdefault("d", {"id": "5"})
    assert list(names.starting_with("")) == ["c", "d"] and ids.get("5") == "d"
    table.clear()
    assert list(names.starting_with("")) == [] and len(table) == 0


def test_grouped_keys_per_group_in_order() -> None:
    by_project = Grouped(lambda a: a["project"])
    table: Table[dict[str, str]] = Table({}, by_project)
    table["z@p1"] = {"project": "p1"}
    table["a@p1"] = {"project": "p1"}
    table["m@p2"] = {"project": "p2"}
    assert list(by_project.keys_in("p1")) == ["a@p1", "z@p1"] and list(by_project.keys_in("none")) == []
    table["z@p1"] = {"project": "p2"}  # moved
    del table["a@p1"]
    assert list(by_project.keys_in("p1")) == [] and list(by_project.keys_in("p2")) == ["m@p2", "z@p1"]


def test_referrers_follow_entries_changed_in_place_and_stored_again() -> None:
    naming = Referrers(lambda p: {m for b in p.bindings for m in b.members})
    policies: Table[policy_pb2.Policy] = Table({}, naming)
    policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["user:a", "user:b"])])
    policies["s1"] = policy
    policies["s2"] = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["user:a"])])
    assert naming.keys_naming("user:a") == ["s1", "s2"] and naming.keys_naming("user:b") == ["s1"]
    del policy.bindings[0].members[:]
    policy.bindings[0].members.append("user:c")
    policies["s1"] = policy  # what was named before the change in place is forgotten
    assert naming.keys_naming("user:a") == ["s2"] and naming.keys_naming("user:b") == [] and naming.keys_naming("user:c") == ["s1"]
    del policies["s2"]
    assert naming.keys_naming("user:a") == []


@pytest.mark.parametrize("start", [0, 1, 3, 5, 9, -2])
@pytest.mark.parametrize("size", [1, 2, 5, 100, -1])
def test_offset_page_is_a_slice(start: int, size: int) -> None:
    items = list("abcde")
    page, more = offset_page(iter(items), start, size)
    assert page == items[start : start + size] and more == (start + size < len(items))


def test_encoded_entries_encode_only_what_changed() -> None:
    encoded: list[str] = []

    def encode(value: dict[str, int]) -> str:
        encoded.append(json.dumps(value))
        return json.dumps(value, sort_keys=True)

    entries = EncodedEntries(lambda v: json.dumps(v, sort_keys=True).encode(), encode)
    table = {"b": {"n": 1}, "a": {"n": 2}}
    first = entries.json_object(table)
    assert json.loads(json_object({"t": first})) == {"t": table} and len(encoded) == 2
    table["b"]["n"] = 3  # changed in place
    table["c"] = {"n": 4}
    del table["a"]
    second = entries.json_object(table)
    assert json.loads(second) == {"b": {"n": 3}, "c": {"n": 4}} and len(encoded) == 4  # b again, c; a forgotten
    assert entries.json_object({}) == "{}"


def _service(name: str, max_instances: int) -> run_v2.Service:
    return run_v2.Service(name=name, template=run_v2.RevisionTemplate(scaling=run_v2.RevisionScaling(max_instance_count=max_instances)))


def _filled_state(path: Path) -> State:
    state = State(path=path)
    name = "projects/p/locations/r/services/s"
    state.services[name] = _service(name, 3)
    state.serving[name] = _service(name, 2)
    state.policies[name] = policy_pb2.Policy(version=1, etag=b"12345678", bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["user:ü@example.com"])])
    state.service_accounts["a@p.iam.gserviceaccount.com"] = iam_admin_v1.ServiceAccount(email="a@p.iam.gserviceaccount.com", display_name="é")
    state.ports[name] = 4242
    state.project_roles["x@p"] = {"roles/run.admin"}
    return state


def test_the_state_file_round_trips_and_sees_changes_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = _filled_state(path)
    state.save()  # no loop bound: written at once
    assert path.read_bytes().isascii()
    loaded = State.load(path)
    assert loaded == state
    name = "projects/p/locations/r/services/s"
    state.services[name].description = "changed in place"
    state.save()
    assert State.load(path).services[name].description == "changed in place"
    assert list(State.load(path).service_names.starting_with("projects/p/")) == [name]  # indexes rebuilt on load


async def test_saves_are_batched_while_the_loop_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "SAVE_DELAY_S", 0.05)
    path = tmp_path / "state.json"
    state = _filled_state(path)
    writes: list[int] = []
    original = State.flush
    monkeypatch.setattr(State, "flush", lambda self: (writes.append(1), original(self))[1])
    state.batch_saves(asyncio.get_running_loop())
    for port in range(5):
        state.ports["p"] = port
        state.save()
    assert writes == [] and not path.exists()  # nothing yet: one write is due
    await asyncio.sleep(0.2)
    assert writes == [1] and json.loads(path.read_text())["ports"]["p"] == 4
    state.ports["p"] = 5
    state.save()
    state.batch_saves(None)
    state.save()  # as the emulator stops: written at once, the pending write with it
    await asyncio.sleep(0.1)
    assert len(writes) == 2 and json.loads(path.read_text())["ports"]["p"] == 5
