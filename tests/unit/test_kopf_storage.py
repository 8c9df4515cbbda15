"""kopf's bookkeeping annotations: garbage someone wrote there reads as absent, so it can never block an object."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from tgi_operator.kopf_storage import NoDiffBase, TolerantProgressStorage, valid_progress

PREFIX = "tgi-operator.dev"
LAST_HANDLED = f"{PREFIX}/last-handled-configuration"


def body(annotations: dict[str, str]) -> kopf.Body:
    return kopf.Body({"apiVersion": "tgi-operator.dev/v1alpha1", "kind": "TGIService",
                      "metadata": {"name": "llama", "namespace": "team-a", "annotations": annotations}})


@pytest.mark.parametrize("raw", ["{not json", "[]", "42", '"a string"', "null", "", json.dumps({"spec": {"x": 1}})])
def test_the_diff_base_is_empty_whatever_the_annotation_holds(raw: str) -> None:
    """kopf sees no change on any event (the scheduler detects changes), never reads the old annotation, and never
    deep-copies the body to build an essence."""
    stored = kopf.Body({**body({LAST_HANDLED: raw}), "spec": {"region": "us-central1"}})
    storage = NoDiffBase()
    assert storage.fetch(body=stored) == storage.build(body=stored) == {}


def test_the_diff_base_is_never_stored() -> None:
    patch = kopf.Patch()
    NoDiffBase().store(body=body({}), patch=patch, essence={"spec": {"region": "us-central1"}})
    assert not patch


GOOD = {"started": "2026-01-01T00:00:00.000000+00:00", "stopped": None, "delayed": None, "purpose": "create",
        "retries": 1, "success": False, "failure": False, "message": None, "subrefs": None}


@pytest.mark.parametrize(
    ("record", "valid"),
    [
        (GOOD, True),
        ({"retries": 2}, True),
        ({}, False),
        ([], False),
        ("x", False),
        ({**GOOD, "started": "yesterday"}, False),  # kopf parses it with datetime.fromisoformat
        ({**GOOD, "retries": "many"}, False),
        ({**GOOD, "retries": True}, False),  # a bool is an int to isinstance()
        ({**GOOD, "success": 1}, False),
        ({**GOOD, "subrefs": [1, 2]}, False),
        ({**GOOD, "added_by_a_newer_kopf": 1}, True),
    ],
)
def test_valid_progress(record: Any, valid: bool) -> None:
    assert valid_progress(record) is valid


def test_an_unreadable_progress_record_is_absent_and_a_good_one_is_read() -> None:
    storage = TolerantProgressStorage(prefix=PREFIX)
    key = kopf.HandlerId("delete")
    assert storage.fetch(key=key, body=body({f"{PREFIX}/delete": "{not json"})) is None
    assert storage.fetch(key=key, body=body({f"{PREFIX}/delete": json.dumps({"started": 5})})) is None
    assert storage.fetch(key=key, body=body({f"{PREFIX}/delete": json.dumps(GOOD)})) == GOOD
