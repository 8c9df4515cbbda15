"""Pure: what an observed Cloud Run service (and the model probe) means, as kstatus conditions.

kstatus polarity (what `kubectl wait`, Flux and Argo CD read):
  Ready=True                         the desired generation serves and the model answers
  Ready=False, Reconciling=True      on its way (Deploying, WaitingForModel, ...)
  Ready=False, Stalled=True          cannot get there without a change (quota, bad spec, not ours, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from google.cloud import run_v2

from tgi_operator.models import Condition, ConditionStatus
from tgi_operator.probe import ProbeResult

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
State = run_v2.Condition.State


@dataclass(frozen=True)
class Problem:
    """Why the object is stalled: a CamelCase reason and a message that says what to change."""

    reason: str
    message: str


@dataclass(frozen=True)
class Assessment:
    ready: bool
    reconciling: bool
    stalled: bool
    reason: str
    message: str


def _progress(reason: str, message: str) -> Assessment:
    return Assessment(ready=False, reconciling=True, stalled=False, reason=reason, message=message)


# One message for every pass while Cloud Run deploys (no generation number in it): the status is written once.
DEPLOYING = "Cloud Run is deploying a new revision"


def assess(
    service: run_v2.Service | None,
    *,
    problem: Problem | None = None,
    wrote: bool = False,
    suspended: bool = False,
    probe: ProbeResult | None = None,
    probe_required: bool = True,
) -> Assessment:
    """The state of one TGIService, from what was just observed (and whether this pass wrote to Cloud Run)."""
    if problem:
        return Assessment(False, False, True, problem.reason, problem.message)
    if service is None or wrote:
        return _progress("Deploying", DEPLOYING)
    terminal = service.terminal_condition
    if service.reconciling or service.observed_generation != service.generation:
        return _progress("Deploying", DEPLOYING)
    if terminal.state == State.CONDITION_FAILED:
        message = terminal.message or "the latest revision failed"
        return Assessment(False, False, True, "RevisionFailed", f"Cloud Run: {message}")
    if terminal.state != State.CONDITION_SUCCEEDED:
        return _progress("Deploying", DEPLOYING)
    if not service.uri:
        return _progress("WaitingForURL", "Cloud Run has not assigned a URL yet")
    if suspended:
        return Assessment(True, False, False, "Suspended", "suspended: scaled to zero instances")
    if probe_required and not (probe and probe.healthy):
        detail = probe.detail if probe else "not probed yet"
        return _progress("WaitingForModel", f"revision {short_revision(service.latest_ready_revision)} is up; the model does not answer yet ({detail})")
    return Assessment(True, False, False, "Ready", f"serving revision {short_revision(service.latest_ready_revision)}")


def waiting(reason: str, message: str) -> Assessment:
    """On its way, held back by something outside the spec that is expected to pass (Reconciling, not Stalled)."""
    return _progress(reason, message)


def with_note(assessment: Assessment, note: str | None) -> Assessment:
    """The same state, its message followed by what the reader should also know (e.g. what was not checked)."""
    if not note or assessment.stalled:
        return assessment
    return replace(assessment, message=f"{assessment.message}; {note}")


def short_revision(revision: str) -> str:
    """`projects/.../revisions/svc-00001-abc` ► `svc-00001-abc`."""
    return revision.rsplit("/", 1)[-1]


def conditions(assessment: Assessment, generation: int, previous: list[Condition], now: str) -> list[Condition]:
    """Ready, Reconciling and Stalled, keeping each one's lastTransitionTime while its status is unchanged."""
    before = {c.type: c for c in previous}

    def condition(kind: str, value: bool, reason: str, message: str) -> Condition:
        status = ConditionStatus.TRUE if value else ConditionStatus.FALSE
        old = before.get(kind)
        since = old.last_transition_time if old and old.status == status and old.last_transition_time else now
        return Condition(type=kind, status=status, reason=reason, message=message,
                         last_transition_time=since, observed_generation=generation)

    a = assessment
    return [
        condition(READY, a.ready, a.reason, a.message),
        condition(RECONCILING, a.reconciling, a.reason if a.reconciling else "Idle", a.message if a.reconciling else ""),
        condition(STALLED, a.stalled, a.reason if a.stalled else "NotStalled", a.message if a.stalled else ""),
    ]
