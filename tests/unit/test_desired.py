"""desired.py: a resync of an unchanged spec reuses the parsed spec and the owned fields it renders; a change does not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tgi_operator.desired import desired_service, parsed_spec, spec_key
from tgi_operator.diff import diff, owned_fields, owned_keys
from tgi_operator.render import INVOKERS_ANNOTATION, Target, render_service

SPEC = {"region": "us-central1", "model": {"id": "org/model"}, "access": {"public": True}}
WHERE = Target("my-project", "us-central1", "team-a-llama-abc")
RUNTIME = "tgi-runtime@my-project.iam.gserviceaccount.com"


def test_the_key_ignores_key_order_only() -> None:
    assert spec_key({"b": 1, "a": {"y": 2, "x": 1}}) == spec_key({"a": {"x": 1, "y": 2}, "b": 1})
    assert spec_key({"a": 1}) != spec_key({"a": 2})


def test_an_unchanged_spec_is_rendered_once_and_a_changed_one_again() -> None:
    first = desired_service("team-a", "llama", "uid-1", spec_key(SPEC), WHERE, "default", False)
    again = desired_service("team-a", "llama", "uid-1", spec_key(dict(SPEC)), WHERE, "default", False)
    assert again is first
    changed = desired_service("team-a", "llama", "uid-1", spec_key({**SPEC, "suspend": True}), WHERE, "default", False)
    assert changed is not first and changed.wanted != first.wanted


def test_it_is_what_render_service_makes_and_private_when_public_access_is_refused() -> None:
    desired = desired_service("team-a", "llama", "uid-1", spec_key(SPEC), WHERE, "default", False)
    rendered = render_service("team-a", "llama", parsed_spec(spec_key(SPEC)), WHERE, "default", "uid-1")
    assert desired.service() == rendered
    assert desired.wanted == owned_fields(rendered, owned_keys(rendered))
    assert desired.invokers == "allUsers"
    private = desired_service("team-a", "llama", "uid-1", spec_key(SPEC), WHERE, "default", True)
    assert private.invokers is None and INVOKERS_ANNOTATION not in private.service().annotations


def test_what_it_compares_is_what_diff_compares() -> None:
    """The kept owned fields find the same changes as a diff against the rendered service."""
    desired = desired_service("team-a", "llama", "uid-1", spec_key({**SPEC, "serviceAccount": RUNTIME}), WHERE,
                              "default", False)
    observed = desired.service()
    assert desired.changed_fields(observed) == diff(desired.service(), observed) == []
    observed.template.max_instance_request_concurrency += 1
    observed.labels["managed-by"] = "someone"
    observed.template.service_account = "other@my-project.iam.gserviceaccount.com"
    expected = ["labels", "template.maxInstanceRequestConcurrency", "template.serviceAccount"]
    assert desired.changed_fields(observed) == diff(desired.service(), observed) == expected


def test_an_invalid_spec_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValidationError):
            parsed_spec(spec_key({"region": "us-central1"}))
