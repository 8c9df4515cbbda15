"""conditions.py: observed Cloud Run service (+ model probe) to kstatus Ready / Reconciling / Stalled."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import run_v2

from tgi_operator.conditions import Assessment, Problem, assess, conditions
from tgi_operator.models import Condition, ConditionStatus
from tgi_operator.probe import ProbeResult

State = run_v2.Condition.State
SERVICE = "projects/my-project/locations/us-central1/services/team-a-llama-8b"
REVISION = "team-a-llama-8b-00002-abc"
URI = "https://team-a-llama-8b-abcdefghij-uc.a.run.app"
GPU_QUOTA = (
    "Revision 'team-a-llama-8b-00002-abc' is not ready and cannot serve traffic. Quota exceeded for total "
    "allowable count of GPUs per project per region. Requested: 1, allowed: 0."
)
HEALTHY = ProbeResult(True, "", {"model_id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"})
UNHEALTHY = ProbeResult(False, "GET /health answered 503")


def service(
    *,
    generation: int = 2,
    observed_generation: int = 2,
    reconciling: bool = False,
    state: Any = State.CONDITION_SUCCEEDED,
    message: str = "",
    uri: str = URI,
) -> run_v2.Service:
    """A service as GetService returns it; by default serving its latest generation."""
    return run_v2.Service(
        name=SERVICE,
        generation=generation,
        observed_generation=observed_generation,
        reconciling=reconciling,
        terminal_condition=run_v2.Condition(type_="Ready", state=state, message=message),
        uri=uri,
        latest_ready_revision=f"{SERVICE}/revisions/{REVISION}",
    )


def progressing(reason: str) -> tuple[bool, bool, bool, str]:
    return (False, True, False, reason)


def stalled(reason: str) -> tuple[bool, bool, bool, str]:
    return (False, False, True, reason)


def ready(reason: str) -> tuple[bool, bool, bool, str]:
    return (True, False, False, reason)


# (id, service, assess keyword arguments, expected (ready, reconciling, stalled, reason), text in the message)
CASES: list[tuple[str, run_v2.Service | None, dict[str, Any], tuple[bool, bool, bool, str], str]] = [
    (
        "problem wins over a healthy service",
        service(),
        {"problem": Problem("NoProject", "spec.project is unset"), "probe": HEALTHY},
        stalled("NoProject"),
        "spec.project is unset",
    ),
    ("problem without a service", None, {"problem": Problem("InvalidSpec", "spec.model.id: bad")}, stalled("InvalidSpec"), "spec.model.id"),
    ("not created yet", None, {}, progressing("Deploying"), "deploying"),
    ("just wrote", service(), {"wrote": True, "probe": HEALTHY}, progressing("Deploying"), "deploying"),
    (
        "revision failed: GPU quota",
        service(state=State.CONDITION_FAILED, message=GPU_QUOTA),
        {"probe": HEALTHY},
        stalled("RevisionFailed"),
        "Quota exceeded for total allowable count of GPUs per project per region",
    ),
    (
        "revision failed without a message",
        service(state=State.CONDITION_FAILED),
        {},
        stalled("RevisionFailed"),
        "failed",
    ),
    ("reconciling", service(reconciling=True, state=State.CONDITION_RECONCILING), {}, progressing("Deploying"), "deploying a new revision"),
    (
        "reconciling with the previous outcome still shown",
        service(reconciling=True, state=State.CONDITION_SUCCEEDED),
        {"probe": HEALTHY},
        progressing("Deploying"),
        "deploying a new revision",
    ),
    (
        "older generation observed",
        service(generation=3, observed_generation=2),
        {"probe": HEALTHY},
        progressing("Deploying"),
        "deploying a new revision",
    ),
    ("terminal condition pending", service(state=State.CONDITION_PENDING), {}, progressing("Deploying"), "deploying"),
    ("no URL yet", service(uri=""), {"probe": HEALTHY}, progressing("WaitingForURL"), "URL"),
    ("suspended", service(), {"suspended": True}, ready("Suspended"), "zero instances"),
    ("suspended needs no probe", service(), {"suspended": True, "probe": UNHEALTHY}, ready("Suspended"), "suspended"),
    ("model not probed yet", service(), {}, progressing("WaitingForModel"), "not probed yet"),
    ("model not answering", service(), {"probe": UNHEALTHY}, progressing("WaitingForModel"), "GET /health answered 503"),
    ("model answers", service(), {"probe": HEALTHY}, ready("Ready"), REVISION),
    ("probe not required", service(), {"probe_required": False}, ready("Ready"), REVISION),
    ("probe not required ignores an old result", service(), {"probe_required": False, "probe": UNHEALTHY}, ready("Ready"), REVISION),
]


@pytest.mark.parametrize(("observed", "kwargs", "expected", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_assess(observed: run_v2.Service | None, kwargs: dict[str, Any], expected: tuple[bool, bool, bool, str], text: str) -> None:
    result = assess(observed, **kwargs)
    assert (result.ready, result.reconciling, result.stalled, result.reason) == expected
    assert text.lower() in result.message.lower()
    assert [result.ready, result.reconciling, result.stalled].count(True) == 1  # exactly one kstatus state


def test_a_failed_revision_reports_the_clouds_own_message() -> None:
    result = assess(service(state=State.CONDITION_FAILED, message=GPU_QUOTA))
    assert result.message == f"Cloud Run: {GPU_QUOTA}"


def test_the_ready_message_names_the_short_revision() -> None:
    assert assess(service(), probe=HEALTHY).message == f"serving revision {REVISION}"


# ----------------------------------------------------------------------------------------- conditions()

NOW, EARLIER = "2025-06-01T12:00:00Z", "2025-05-31T08:00:00Z"
READY = Assessment(ready=True, reconciling=False, stalled=False, reason="Ready", message="serving revision r-1")
DEPLOYING = Assessment(ready=False, reconciling=True, stalled=False, reason="Deploying", message="Cloud Run is deploying")
STALLED = Assessment(ready=False, reconciling=False, stalled=True, reason="RevisionFailed", message="Cloud Run: quota")


def by_type(result: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in result}


def previous_for(assessment: Assessment, when: str, generation: int = 1) -> list[Condition]:
    return conditions(assessment, generation, [], when)


@pytest.mark.parametrize(
    ("assessment", "statuses", "reasons"),
    [
        (READY, ("True", "False", "False"), ("Ready", "Idle", "NotStalled")),
        (DEPLOYING, ("False", "True", "False"), ("Deploying", "Deploying", "NotStalled")),
        (STALLED, ("False", "False", "True"), ("RevisionFailed", "Idle", "RevisionFailed")),
    ],
    ids=["ready", "reconciling", "stalled"],
)
def test_kstatus_polarity(assessment: Assessment, statuses: tuple[str, ...], reasons: tuple[str, ...]) -> None:
    result = conditions(assessment, 7, [], NOW)
    assert [c.type for c in result] == ["Ready", "Reconciling", "Stalled"]
    assert tuple(c.status.value for c in result) == statuses
    assert tuple(c.reason for c in result) == reasons
    assert all(c.observed_generation == 7 for c in result)
    assert all(c.last_transition_time == NOW for c in result)  # no previous conditions: all new
    assert result[0].message == assessment.message
    for c in result[1:]:  # an abnormal-true condition explains itself only while it is True
        assert c.message == (assessment.message if c.status == ConditionStatus.TRUE else "")
    assert all(c.reason and c.reason[0].isupper() and " " not in c.reason for c in result)  # CamelCase


def test_last_transition_time_is_kept_while_a_status_is_unchanged() -> None:
    previous = previous_for(READY, EARLIER)
    result = by_type(conditions(READY, 2, previous, NOW))
    assert {t: c.last_transition_time for t, c in result.items()} == {t: EARLIER for t in result}
    assert all(c.observed_generation == 2 for c in result.values())  # but observedGeneration follows


def test_last_transition_time_moves_only_for_conditions_that_flip() -> None:
    previous = previous_for(READY, EARLIER)  # Ready=True, Reconciling=False, Stalled=False
    result = by_type(conditions(STALLED, 2, previous, NOW))  # Ready=False, Reconciling=False, Stalled=True
    assert result["Ready"].last_transition_time == NOW
    assert result["Reconciling"].last_transition_time == EARLIER
    assert result["Stalled"].last_transition_time == NOW


def test_a_changed_reason_with_the_same_status_keeps_the_transition_time() -> None:
    previous = previous_for(DEPLOYING, EARLIER)
    waiting = Assessment(ready=False, reconciling=True, stalled=False, reason="WaitingForModel", message="loading")
    result = by_type(conditions(waiting, 1, previous, NOW))
    assert result["Reconciling"].reason == "WaitingForModel"
    assert result["Reconciling"].message == "loading"
    assert result["Reconciling"].last_transition_time == EARLIER


def test_conditions_read_back_from_the_api_server_keep_their_time() -> None:
    """Previous conditions come from status as stored (camelCase, status strings)."""
    stored = [
        {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": EARLIER, "observedGeneration": 1},
        {"type": "Reconciling", "status": "False", "reason": "Idle", "lastTransitionTime": EARLIER},
    ]
    previous = [Condition.model_validate(c) for c in stored]
    result = by_type(conditions(READY, 1, previous, NOW))
    assert result["Ready"].last_transition_time == EARLIER
    assert result["Reconciling"].last_transition_time == EARLIER
    assert result["Stalled"].last_transition_time == NOW  # had none before


def test_a_previous_condition_without_a_time_gets_now() -> None:
    previous = [Condition(type="Ready", status=ConditionStatus.TRUE, reason="Ready")]
    assert by_type(conditions(READY, 1, previous, NOW))["Ready"].last_transition_time == NOW


def test_conditions_serialise_like_metav1_conditions() -> None:
    dumped = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions(DEPLOYING, 3, [], NOW)]
    assert dumped[1] == {
        "type": "Reconciling",
        "status": "True",
        "reason": "Deploying",
        "message": "Cloud Run is deploying",
        "lastTransitionTime": NOW,
        "observedGeneration": 3,
    }
