"""Observe ► render ► diff ► apply ► status, for one TGIService. No kopf here: handlers.py wires it in.

Never waits for a long-running operation: a create or update is started and the next pass (the poll timer)
observes where it got to. Transient cloud errors propagate (the handler retries with backoff); permanent
ones become a Stalled status with the cloud's own message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud import run_v2
from pydantic import ValidationError

from tgi_operator import conditions as cond
from tgi_operator.cloudrun import CloudRunServices
from tgi_operator.diff import diff, merge_for_update, without_owner
from tgi_operator.errors import PermanentCloudError
from tgi_operator.iam import ServiceAccounts
from tgi_operator.invokers import parse_members, updated_policy
from tgi_operator.models import Condition, ModelStatus, TGIServiceSpec, TGIServiceStatus, describe_errors, parse_spec
from tgi_operator.naming import invoker_account_id, is_owned_by
from tgi_operator.probe import ModelProbe, ProbeResult
from tgi_operator.render import (
    INVOKERS_ANNOTATION,
    Target,
    invoker_members,
    invoker_service_account,
    render_service,
    target,
)
from tgi_operator.settings import Settings

log = logging.getLogger(__name__)
RETRY_ANNOTATION = "tgi-operator.dev/retry"  # bumped on the template to redeploy a failed revision


@dataclass
class Adapters:
    services: CloudRunServices
    accounts: ServiceAccounts
    probe: ModelProbe


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


@dataclass
class Outcome:
    status: TGIServiceStatus
    assessment: cond.Assessment
    events: list[Event] = field(default_factory=list)


class Stall(Exception):
    """A problem only a change of the spec, the operator's settings or the cloud project can fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = cond.Problem(reason, message)


# -- checks that need no cloud call -----------------------------------------------------------------


def checked_spec(obj: ObjectRef) -> TGIServiceSpec:
    try:
        return parse_spec(obj.spec)
    except ValidationError as exc:  # admitted under an older CRD, or the CRD's rules were bypassed
        raise Stall("InvalidSpec", "; ".join(describe_errors(exc))) from None


def check_policy(spec: TGIServiceSpec, where: Target, settings: Settings) -> None:
    """What the platform team allows, beyond what the CRD can know."""
    if settings.allowed_projects and where.project not in settings.allowed_projects:
        raise Stall("ProjectNotAllowed", f"spec.project: {where.project} is not one this operator may use "
                    f"(allowed: {', '.join(settings.allowed_projects)})")
    if settings.allowed_regions and where.region not in settings.allowed_regions:
        raise Stall("RegionNotAllowed", f"spec.region: {where.region} is not one this operator may use "
                    f"(allowed: {', '.join(settings.allowed_regions)})")
    if spec.access.public and not settings.allow_public_services:
        raise Stall("PublicNotAllowed", "spec.access.public: this operator does not allow public services "
                    "(TGI_OPERATOR_ALLOW_PUBLIC_SERVICES=false); list invokers instead")


def check_same_target(managed: str | None, where: Target) -> None:
    """The CRD makes project and region immutable; the operator's default project can still change. Never
    follow it silently: that would leave the old service running (and billing) with no owner."""
    if managed and managed != where.name:
        raise Stall("TargetChanged", f"this object manages {managed} but its spec now resolves to {where.name} "
                    "(did the operator's default project change?); set spec.project back, or recreate the TGIService")


def resolve_target(obj: ObjectRef, spec: TGIServiceSpec, settings: Settings) -> Target:
    try:
        return target(obj.namespace, obj.name, spec, settings.default_project)
    except ValueError as exc:
        raise Stall("NoProject", str(exc)) from None


# -- the pass -----------------------------------------------------------------------------------------


async def reconcile(
    obj: ObjectRef, adapters: Adapters, settings: Settings, *, now: str, redeploy_failed: bool = False
) -> Outcome:
    """One pass. `redeploy_failed`: a failed revision of an unchanged spec is deployed again (the handler
    decides when, with backoff), so that e.g. raised GPU quota is picked up without a touch."""
    previous = TGIServiceStatus.model_validate(dict(obj.status or {}))
    status = previous.model_copy(deep=True)
    status.observed_generation = obj.generation
    events: list[Event] = []
    wrote, service, probe, suspended = False, None, None, False
    try:
        spec = checked_spec(obj)
        suspended = spec.suspend
        where = resolve_target(obj, spec, settings)
        check_same_target(previous.service_name, where)
        status.service_name = where.name
        check_policy(spec, where, settings)
        desired = render_service(obj.namespace, obj.name, spec, where)
        service, wrote, write_events = await _apply_service(obj, where, desired, adapters.services, redeploy_failed)
        events += write_events
        status.invoker_service_account = await _apply_invokers(obj, spec, where, service, adapters)
        if wrote:
            service = await adapters.services.get(where.name) or service
        if _serving(service) and settings.model_probe and not suspended:
            probe = await adapters.probe.check(service.uri)
        problem = None
    except Stall as stall:
        problem = stall.problem
    except PermanentCloudError as exc:
        problem = cond.Problem(exc.reason, f"Cloud Run: {exc.message}")

    assessment = cond.assess(service, problem=problem, wrote=wrote, suspended=suspended, probe=probe,
                             probe_required=settings.model_probe)
    if service is not None and problem is None:
        status.url = service.uri or None
        status.latest_ready_revision = _short(service.latest_ready_revision) or None
    if probe and probe.healthy and probe.info:
        status.model = _model_status(probe)
    status.conditions = cond.conditions(assessment, obj.generation, previous.conditions, now)
    events += _transition_events(previous.conditions, assessment)
    return Outcome(status, assessment, events)


async def _apply_service(
    obj: ObjectRef, where: Target, desired: run_v2.Service, services: CloudRunServices, redeploy_failed: bool
) -> tuple[run_v2.Service | None, bool, list[Event]]:
    observed = await services.get(where.name)
    if observed is None:
        log.info("creating Cloud Run service %s", where.name)
        try:
            await services.create(where.parent, where.service_id, desired)
            return None, True, [Event("Normal", "Creating", f"creating Cloud Run service {where.name}")]
        except PermanentCloudError as exc:
            if exc.code != "ALREADY_EXISTS":
                raise
            # Someone (a previous operator life, or another writer) created it since we looked: judge that one.
            observed = await services.get(where.name)
            if observed is None:
                raise
    if not is_owned_by(dict(observed.labels), obj.namespace, obj.name):
        raise Stall("NotOwned", f"Cloud Run service {where.name} exists but is not managed by this TGIService "
                    "(its owner labels are missing or name another object); it is left untouched")
    changed = diff(desired, observed)
    if not changed and redeploy_failed and _failed(observed):
        attempt = int(observed.template.annotations.get(RETRY_ANNOTATION, "0")) + 1
        update = merge_for_update(desired, observed)
        update.template.annotations[RETRY_ANNOTATION] = str(attempt)
        await services.update(update)
        return observed, True, [Event("Normal", "Redeploying", f"deploying the failed revision again (attempt {attempt})")]
    if not changed:
        return observed, False, []
    log.info("updating Cloud Run service %s: %s", where.name, ", ".join(changed))
    await services.update(merge_for_update(desired, observed))
    return observed, True, [Event("Normal", "Updating", f"updating {', '.join(changed)}")]


async def _apply_invokers(
    obj: ObjectRef, spec: TGIServiceSpec, where: Target, service: run_v2.Service | None, adapters: Adapters
) -> str | None:
    """Grant this object's invoker members, revoke the ones it dropped; returns the invoker SA's email."""
    previous = parse_members(service.annotations.get(INVOKERS_ANNOTATION) if service else None)
    desired = set(invoker_members(obj.namespace, obj.name, spec, where.project))
    sa_email = invoker_service_account(obj.namespace, obj.name, where.project)
    sa_member = f"serviceAccount:{sa_email}"
    if sa_member in desired and sa_member not in previous:
        await adapters.accounts.ensure(
            where.project, invoker_account_id(obj.namespace, obj.name),
            display_name=f"Invoker of {obj.namespace}/{obj.name}",
            description=f"Created by tgi-operator to call TGIService {obj.namespace}/{obj.name}",
        )
    policy = await adapters.services.get_iam_policy(where.name)
    new = updated_policy(policy, previous, desired)
    if new is not None:
        await adapters.services.set_iam_policy(where.name, new)
    if sa_member in previous and sa_member not in desired:
        await adapters.accounts.delete(where.project, sa_email)
    return sa_email if sa_member in desired else None


def _failed(service: run_v2.Service) -> bool:
    return not service.reconciling and service.terminal_condition.state == cond.State.CONDITION_FAILED


def _serving(service: run_v2.Service | None) -> bool:
    return bool(
        service and service.uri and not service.reconciling
        and service.observed_generation == service.generation
        and service.terminal_condition.state == cond.State.CONDITION_SUCCEEDED
    )


def _short(revision: str) -> str:
    return revision.rsplit("/", 1)[-1]


def _model_status(probe: ProbeResult) -> ModelStatus:
    info = probe.info or {}
    return ModelStatus(
        id=info.get("model_id"), max_concurrent_requests=info.get("max_concurrent_requests"),
        max_input_tokens=info.get("max_input_tokens"), max_total_tokens=info.get("max_total_tokens"),
        version=info.get("version"),
    )


def _transition_events(previous: list[Condition], now: cond.Assessment) -> list[Event]:
    before = {c.type: c for c in previous}
    was_ready = before.get(cond.READY) and before[cond.READY].status.value == "True"
    was_stalled = before.get(cond.STALLED)
    events = []
    if now.ready and not was_ready:
        events.append(Event("Normal", "Ready", now.message))
    if now.stalled and not (was_stalled and was_stalled.status.value == "True" and was_stalled.message == now.message):
        events.append(Event("Warning", now.reason, now.message))
    return events


# -- deletion -----------------------------------------------------------------------------------------


async def finalize(obj: ObjectRef, adapters: Adapters, settings: Settings) -> list[Event]:
    """Delete: remove the service and the invoker SA this object created. Retain: release the service.
    Raises transient errors (the finalizer stays and kopf retries)."""
    try:
        spec = parse_spec(obj.spec)
        where = target(obj.namespace, obj.name, spec, settings.default_project)
    except (ValidationError, ValueError):
        return [Event("Normal", "Deleted", "the spec never named a valid Cloud Run service: nothing to remove")]
    managed = obj.status.get("serviceName")
    if managed and managed != where.name:  # clean up what we made, not what the spec resolves to today
        project, region, service = managed.split("/")[1::2]
        where = Target(project, region, service)
    observed = await adapters.services.get(where.name)
    if observed is not None and not is_owned_by(dict(observed.labels), obj.namespace, obj.name):
        return [Event("Normal", "Deleted", f"{where.name} is not managed by this object: left untouched")]
    retain = spec.deletion_policy.value == "Retain"
    members = parse_members(observed.annotations.get(INVOKERS_ANNOTATION)) if observed else set()
    sa_email = invoker_service_account(obj.namespace, obj.name, where.project)
    if retain:
        if observed is not None:
            await adapters.services.update(without_owner(observed))
        return [Event("Normal", "Retained", f"released Cloud Run service {where.name}; it keeps running and serving")]
    if observed is not None:
        await adapters.services.delete(where.name)
    if f"serviceAccount:{sa_email}" in members or obj.status.get("invokerServiceAccount"):
        await adapters.accounts.delete(where.project, sa_email)
    return [Event("Normal", "Deleted", f"deleted Cloud Run service {where.name}")]
