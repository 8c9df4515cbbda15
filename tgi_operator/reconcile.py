"""Observe ► render ► diff ► apply ► status, for one TGIService. No kopf here: handlers.py wires it in.

Never waits for a long-running operation: a create or update is started and the next pass (scheduler.py)
observes where it got to. Transient cloud errors end the pass with the status to record (Outcome.transient: the
handler retries with backoff); permanent ones become a Stalled status with the cloud's own message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from google.cloud import run_v2
from pydantic import ValidationError

from tgi_operator import conditions as cond
from tgi_operator.access import Access, InvokerAccountCreated, apply_invokers, refused_problem
from tgi_operator.cloudrun import CloudRunServices
from tgi_operator.conditions import short_revision
from tgi_operator.cost import PricingError, cost_status, hourly_cost, load_pricing
from tgi_operator.desired import Desired, desired_service, parsed_spec, spec_key
from tgi_operator.diff import claimed, merge_for_update, with_annotation
from tgi_operator.errors import CloudError, PermanentCloudError, Stall, TransientCloudError
from tgi_operator.hub import ModelHub
from tgi_operator.iam import ServiceAccounts
from tgi_operator.invokers import invoker_members_of, parse_members
from tgi_operator.model_check import check_model
from tgi_operator.models import Condition, CostStatus, ModelStatus, TGIServiceSpec, TGIServiceStatus, describe_errors
from tgi_operator.probe import ModelProbe, ProbeResult
from tgi_operator.naming import is_owned_by, legacy_service_id
from tgi_operator.ownership import ADOPT_ANNOTATION, OWNER_UID_ANNOTATION, Claim, claim
from tgi_operator.render import INVOKERS_ANNOTATION, Target, invoker_service_account, recorded_target, target
from tgi_operator.settings import Settings

log = logging.getLogger(__name__)
RETRY_ANNOTATION = "tgi-operator.dev/retry"  # bumped on the template to redeploy a failed revision
# kopf wrote this on every object that operator versions before the scheduler handled (and writes it no more): only
# such an object can own a service the first version made.
EARLIER_VERSION_MARK = "tgi-operator.dev/last-handled-configuration"


@dataclass
class Adapters:
    services: CloudRunServices
    accounts: ServiceAccounts
    probe: ModelProbe
    hub: ModelHub = field(default_factory=ModelHub)  # the model preflight's Hugging Face Hub


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
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""  # metadata.uid: written on the services this object creates (ownership.py)


RecordIntent = Callable[[TGIServiceStatus], Awaitable[bool]]  # True: the status is stored
INTENT_NOT_RECORDED = TransientCloudError(
    "INTENT_NOT_RECORDED", "the status naming the service could not be written before creating it; trying again")


@dataclass
class Outcome:
    status: TGIServiceStatus
    assessment: cond.Assessment | None  # None: a transient error cut the pass short (see `transient`)
    events: list[Event] = field(default_factory=list)
    transient: TransientCloudError | None = None  # retry later; `status` still carries what must be recorded
    again: bool = False  # run the next pass right away (the target was just recorded, by a caller without record_intent)


# -- checks that need no cloud call -----------------------------------------------------------------


def checked_spec(obj: ObjectRef) -> TGIServiceSpec:
    try:
        return parsed_spec(spec_key(obj.spec))
    except ValidationError as exc:  # admitted under an older CRD, or the CRD's rules were bypassed
        raise Stall("InvalidSpec", "; ".join(describe_errors(exc))) from None


def check_policy(spec: TGIServiceSpec, where: Target, settings: Settings) -> None:
    """What the platform team allows, beyond what the CRD can know. (Public access is checked in the pass: a
    refused public service is still deployed, privately.)"""
    if settings.allowed_projects and where.project not in settings.allowed_projects:
        raise Stall("ProjectNotAllowed", f"spec.project: {where.project} is not one this operator may use "
                    f"(allowed: {', '.join(settings.allowed_projects)})")
    if settings.allowed_regions and where.region not in settings.allowed_regions:
        raise Stall("RegionNotAllowed", f"spec.region: {where.region} is not one this operator may use "
                    f"(allowed: {', '.join(settings.allowed_regions)})")
    if settings.allowed_image_prefixes and not spec.image.startswith(tuple(settings.allowed_image_prefixes)):
        raise Stall("ImageNotAllowed", f"spec.image: {spec.image} does not start with an allowed prefix "
                    f"({', '.join(settings.allowed_image_prefixes)})")
    if settings.allowed_service_accounts and (spec.service_account or "") not in settings.allowed_service_accounts:
        identity = spec.service_account or "the default compute service account"
        raise Stall("ServiceAccountNotAllowed", f"spec.serviceAccount: {identity} is not a runtime identity this "
                    f"operator may use (allowed: {', '.join(settings.allowed_service_accounts)})")
    secrets = [("spec.model.hfTokenSecret", spec.model.hf_token_secret)]
    secrets += [(f"spec.env[{i}].valueFrom", e.value_from) for i, e in enumerate(spec.env)]
    for path, secret in secrets:
        if secret and secret.secret.startswith("projects/") and not secret.secret.startswith(f"projects/{where.project}/"):
            raise Stall("SecretNotAllowed", f"{path}.secret: {secret.secret} is in another project; "
                        f"use a secret of project {where.project}")


def public_refused(spec: TGIServiceSpec, settings: Settings) -> bool:
    return spec.access.public and not settings.allow_public_services


PUBLIC_REFUSED = cond.Problem(
    "PublicNotAllowed", "spec.access.public: this operator does not allow public services "
    "(TGI_OPERATOR_ALLOW_PUBLIC_SERVICES=false); the service is deployed private, list invokers instead")


def check_same_target(managed: str | None, where: Target) -> None:
    """The CRD makes project and region immutable; the operator's default project can still change. Never
    follow it silently: that would leave the old service running (and billing) with no owner."""
    if managed and managed != where.name:
        raise Stall("TargetChanged", f"this object manages {managed} but its spec now resolves to {where.name} "
                    "(did the operator's default project change?); set spec.project back, or recreate the TGIService")


def explain(exc: PermanentCloudError, runtime_identity: str | None) -> cond.Problem:
    """A refusal from Google Cloud as the user can act on it."""
    if exc.reason in ("GpuQuotaExceeded", "ApiNotEnabled"):
        return cond.Problem(exc.reason, exc.message)  # already says what to do
    if (exc.permission or "").lower() == "iam.serviceaccounts.actas" or "actAs" in exc.message:
        # Cloud Run answers the same 403 for a runtime identity that does not exist and for one it may not use.
        return cond.Problem("RuntimeServiceAccountNotUsable", f"spec.serviceAccount: {runtime_identity} does not exist "
                            "or the operator may not act as it: create it, and grant the operator "
                            f"roles/iam.serviceAccountUser on it. Cloud Run: {exc.message}")
    return cond.Problem(exc.reason, f"Cloud Run: {exc.message}")


def estimated_cost(spec: TGIServiceSpec, settings: Settings) -> CostStatus | None:
    """status.cost; None when the pricing file cannot be read (said once in the log)."""
    try:
        pricing = load_pricing(settings.pricing_file)
    except PricingError as exc:
        if str(exc) not in _PRICING_PROBLEMS:
            _PRICING_PROBLEMS.add(str(exc))
            log.error("no cost estimates: %s", exc)
        return None
    return cost_status(hourly_cost(spec, spec.region, pricing), spec, pricing)


_PRICING_PROBLEMS: set[str] = set()


def resolve_target(obj: ObjectRef, spec: TGIServiceSpec, settings: Settings, recorded: str | None = None) -> Target:
    try:
        return target(obj.namespace, obj.name, spec, settings.default_project, recorded)
    except ValueError as exc:
        raise Stall("NoProject", str(exc)) from None


# -- the pass -----------------------------------------------------------------------------------------


async def reconcile(
    obj: ObjectRef, adapters: Adapters, settings: Settings, *, now: str, redeploy_failed: bool = False,
    record_intent: RecordIntent | None = None,
) -> Outcome:
    """One pass. `redeploy_failed`: a failed revision of an unchanged spec is deployed again (the handler
    decides when, with backoff), so that e.g. raised GPU quota is picked up without a touch.
    `record_intent`: writes the status that names the service before it is created, and the pass goes on to create
    it (without it, the pass ends there and asks for the next one at once).
    Transient cloud errors do not raise: they come back in `Outcome.transient`, with the status to record."""
    previous = TGIServiceStatus.lenient(obj.status)  # a broken status is observed afresh, field by field
    recorded = recorded_target(obj.namespace, obj.name, previous.service_name)
    previous.service_name = recorded.name if recorded else None
    status = previous.model_copy(deep=True)
    status.observed_generation = obj.generation
    events: list[Event] = []
    wrote, service, probe, suspended, problem, refused_public = False, None, None, False, None, False
    access, runtime_identity, note = Access(), None, None
    try:
        spec = checked_spec(obj)
        status.cost = estimated_cost(spec, settings)
        runtime_identity = spec.service_account or "the default compute service account"
        if previous.service_name is None and (project := spec.project or settings.default_project):
            first = await first_version_service(obj, project, spec.region, adapters.services, settings)
            previous.service_name = status.service_name = first.name if first else None
        suspended = spec.suspend
        where = resolve_target(obj, spec, settings, previous.service_name)
        check_same_target(previous.service_name, where)
        check_policy(spec, where, settings)
        if public_refused(spec, settings):  # deploy it private (and revoke allUsers if it was public before)
            spec = spec.model_copy(update={"access": spec.access.model_copy(update={"public": False})})
            refused_public = True
        # Before any Cloud Run call: a model that cannot run stops here, without spending a GPU cold start.
        verdict = await check_model(spec, obj.generation, previous.preflight, adapters.hub, settings)
        status.preflight = verdict.status(obj.generation) if verdict else None
        if verdict and verdict.problem:
            raise Stall(verdict.problem.reason, verdict.problem.message)
        if verdict and verdict.wait:
            assessment = cond.waiting("WaitingForHub", verdict.message)
            status.conditions = cond.conditions(assessment, obj.generation, previous.conditions, now)
            return Outcome(status, assessment, events)
        note = verdict.note if verdict else None
        desired = desired_service(obj.namespace, obj.name, obj.uid, spec_key(obj.spec), where, settings.cluster_name,
                                  refused_public)
        unread = previous.service_name is None  # nothing recorded: a new object, created without a read first
        account_before = previous.invoker_service_account
        if unread:
            observed, adopting = None, False
        else:
            observed, adopting = await _observe(obj, where, adapters.services, settings, previous.service_name)
        if observed is None and previous.service_name != where.name:
            # Write the intent down before acting: whatever happens next, deletion knows what to clean up. The
            # first status already says Reconciling, so no reader takes a new object for a finished one.
            status.service_name = where.name
            if spec.access.create_invoker_service_account:  # the account it is about to make, too
                status.invoker_service_account = invoker_service_account(obj.namespace, obj.name, where.project)
            assessment = cond.assess(None)
            status.conditions = cond.conditions(assessment, obj.generation, previous.conditions, now)
            if record_intent is None:
                return Outcome(status, assessment, events, again=True)
            if not await record_intent(status):
                return Outcome(status, None, events, transient=INTENT_NOT_RECORDED)
            previous = status.model_copy(deep=True)  # what is stored now: the rest of the pass builds on it
        status.service_name = where.name
        if observed is None:
            try:
                await _create(where, desired, adapters.services)
            except CloudError:
                if not unread:
                    raise
                # A service already at the id (a lost status, someone else's, being deleted) explains a refused
                # create better than its own error; and the invoker account the intent named is not this object's
                # to claim while the service may not be either (deleting the object must not delete it).
                status.invoker_service_account = previous.invoker_service_account = account_before
                await _judge_existing(obj, where, adapters.services, settings, previous.service_name)
                raise
            wrote, events = True, [Event("Normal", "Creating", f"creating Cloud Run service {where.name}")]
        else:
            observed = await _record_invokers(observed, desired, adapters.services)
        if adopting:
            observed, adopted = await _adopt(obj, where, observed, desired, adapters.services)
            events.append(adopted)
        access = await apply_invokers(
            obj.namespace, obj.name, spec, where, observed.annotations.get(INVOKERS_ANNOTATION) if observed else None,
            bool(previous.invoker_service_account), adapters.services, adapters.accounts, new_service=observed is None)
        status.invoker_service_account = access.invoker_service_account
        if observed is not None:
            wrote, updates = await _update(observed, desired, adapters.services, settings, redeploy_failed)
            events += updates
        service = observed  # after a write it is Deploying whatever a read says: the next pass reads it
        if not wrote and _serving(service) and settings.model_probe and not suspended:
            probe = await _probe(service, previous, adapters.probe)
    except Stall as stall:
        problem = stall.problem
    except PermanentCloudError as exc:
        problem = explain(exc, runtime_identity)
    except TransientCloudError as exc:
        kept = previous.model_copy(update={"service_name": status.service_name})  # only what must not be lost
        if isinstance(exc, InvokerAccountCreated):  # deletion's evidence that this object made it
            kept.invoker_service_account = exc.email
        if not kept.conditions:  # never observed yet: on its way, not finished
            kept.conditions = cond.conditions(cond.assess(None), obj.generation, [], now)
        return Outcome(kept, None, events, transient=exc)

    assessment = cond.assess(service, problem=problem, wrote=wrote, suspended=suspended, probe=probe,
                             probe_required=settings.model_probe)
    if assessment.ready and (refused_public or access.refused):  # serving, but not to everyone asked for: say why
        assessment = cond.assess(service, problem=PUBLIC_REFUSED if refused_public else cond.Problem(*refused_problem(access.refused)))
    if assessment.reason == "RevisionFailed":
        assessment = _with_redeploy_plan(assessment, service, settings)
    assessment = cond.with_note(assessment, note)
    if service is not None:
        status.url = service.uri or None
        status.latest_ready_revision = short_revision(service.latest_ready_revision) or None
    if probe and probe.healthy and probe.info:
        status.model = _model_status(probe, short_revision(service.latest_ready_revision))
    status.conditions = cond.conditions(assessment, obj.generation, previous.conditions, now)
    events += _transition_events(previous.conditions, assessment)
    return Outcome(status, assessment, events)


def _being_deleted(service: run_v2.Service) -> bool:
    """Cloud Run's DeleteService is a long-running operation: until it ends, the service reads with a delete_time."""
    return "delete_time" in service


async def first_version_service(
    obj: ObjectRef, project: str, region: str, services: CloudRunServices, settings: Settings
) -> Target | None:
    """A service the first version made for this object (shorter id, owner labels, no uid or this object's), when the
    status that recorded it is gone (a restore, a reset status): it is used, never duplicated. One read, only while
    nothing is recorded, and only for an object an earlier version handled."""
    if EARLIER_VERSION_MARK not in obj.annotations:
        return None
    legacy = Target(project, region, legacy_service_id(obj.namespace, obj.name))
    found = await services.get(legacy.name)
    if found and is_owned_by(dict(found.labels), obj.namespace, obj.name, settings.cluster_name) \
            and found.annotations.get(OWNER_UID_ANNOTATION, obj.uid) == obj.uid:
        return legacy
    return None


def ownership_of(observed: run_v2.Service, obj: ObjectRef, where: Target, settings: Settings, recorded: str | None) -> Claim:
    return claim(observed.labels, observed.annotations, namespace=obj.namespace, name=obj.name, uid=obj.uid,
                 cluster=settings.cluster_name, adopt=obj.annotations.get(ADOPT_ANNOTATION), service_uid=observed.uid,
                 first_version=recorded == where.name and where.service_id == legacy_service_id(obj.namespace, obj.name))


async def _observe(
    obj: ObjectRef, where: Target, services: CloudRunServices, settings: Settings, recorded: str | None
) -> tuple[run_v2.Service | None, bool]:
    """The service at the object's id, and whether this pass takes it over (it asked to adopt it)."""
    observed = await services.get(where.name)
    if observed is None:
        return None, False
    if _being_deleted(observed):  # by someone else: create it again once it is gone
        raise TransientCloudError("DELETING", f"{where.name} is being deleted; it is created again once it is gone",
                                  retry_after=5.0)
    found = ownership_of(observed, obj, where, settings, recorded)
    if found is Claim.FOREIGN:
        raise Stall("NotOwned", f"Cloud Run service {where.name} exists but was not created by this TGIService "
                    f"of cluster {settings.cluster_name!r} (owner labels or uid missing or another object's); it is left "
                    f"untouched. To take it over, annotate the TGIService {ADOPT_ANNOTATION}={observed.uid} (its uid)")
    return observed, found is Claim.ADOPT


async def _judge_existing(
    obj: ObjectRef, where: Target, services: CloudRunServices, settings: Settings, recorded: str | None
) -> None:
    """After a create made without a read was refused: a service at the id ends the pass as a read would have
    (NotOwned, being deleted), or, when it is this object's, sends the next pass to carry on with it. Without a
    service at the id, nothing is raised: the create's own error stands."""
    found, _ = await _observe(obj, where, services, settings, recorded)
    if found is not None:
        raise TransientCloudError("ALREADY_EXISTS", f"{where.name} exists already; carrying on with it",
                                  retry_after=1.0)


async def _adopt(
    obj: ObjectRef, where: Target, observed: run_v2.Service, desired: Desired, services: CloudRunServices
) -> tuple[run_v2.Service, Event]:
    """Take a service over, as asked: mark it ours (labels, uid) in one metadata-only update whose record of granted
    members includes every invoker it holds, so the ones the spec does not list are revoked now or, should this pass
    fail, by the next one. Announced once: from then on the service is plainly ours."""
    held = invoker_members_of(await services.get_iam_policy(where.name))
    wanted = parse_members(desired.invokers)
    record = ",".join(sorted(held | wanted | parse_members(observed.annotations.get(INVOKERS_ANNOTATION))))
    marks = {k: v for k, v in desired.wanted["annotations"].items() if k == OWNER_UID_ANNOTATION}
    labels = dict(desired.wanted["labels"])  # a copy: the owned fields are shared between passes
    await services.update(claimed(observed, labels, {**marks, **({INVOKERS_ANNOTATION: record} if record else {})}))
    dropped = sorted(held - wanted)
    members = f"its invoker members not in the spec are revoked: {', '.join(dropped)}" if dropped else \
        "it had no invoker members beyond the spec's"
    event = Event("Warning", "Adopted", f"took over Cloud Run service {where.name}, which this TGIService did not create "
                  f"({ADOPT_ANNOTATION}); {members}")
    return await services.get(where.name) or observed, event


async def _record_invokers(
    observed: run_v2.Service, desired: Desired, services: CloudRunServices
) -> run_v2.Service:
    """Grow the record of granted members *before* granting them (a metadata-only update, no new revision), so a
    grant is always revocable later, whatever fails in between. It shrinks with the service update, after IAM."""
    recorded = parse_members(observed.annotations.get(INVOKERS_ANNOTATION))
    wanted = parse_members(desired.invokers)
    if wanted <= recorded:
        return observed
    await services.update(with_annotation(observed, INVOKERS_ANNOTATION, ",".join(sorted(recorded | wanted))))
    return await services.get(observed.name) or observed


async def _create(where: Target, desired: Desired, services: CloudRunServices) -> None:
    log.info("creating Cloud Run service %s", where.name)
    try:
        await services.create(where.parent, where.service_id, desired.service())
    except PermanentCloudError as exc:
        if exc.code != "ALREADY_EXISTS":
            raise
        # Made before this pass (a lost status, a previous operator life, someone else): judged by the next pass, or
        # by this one (_judge_existing) when it created without a read.
        raise TransientCloudError(exc.code, f"{where.name} exists already; looking at it",
                                  retry_after=1.0) from exc


async def _update(
    observed: run_v2.Service, desired: Desired, services: CloudRunServices, settings: Settings, redeploy_failed: bool,
) -> tuple[bool, list[Event]]:
    changed = desired.changed_fields(observed)
    if changed:
        log.info("updating Cloud Run service %s: %s", observed.name, ", ".join(changed))
        await services.update(merge_for_update(desired.service(), observed))
        return True, [Event("Normal", "Updating", f"updating {', '.join(changed)}")]
    attempt = int(observed.template.annotations.get(RETRY_ANNOTATION, "0")) + 1
    if redeploy_failed and _failed(observed) and attempt <= settings.max_redeploys:
        update = merge_for_update(desired.service(), observed)
        update.template.annotations[RETRY_ANNOTATION] = str(attempt)
        await services.update(update)
        return True, [Event("Normal", "Redeploying",
                            f"deploying the failed revision again (attempt {attempt} of {settings.max_redeploys})")]
    return False, []


async def _probe(service: run_v2.Service, previous: TGIServiceStatus, probe: ModelProbe) -> ProbeResult:
    """Ask the model once per revision: probing at every resync would keep a scale-to-zero service awake (and
    billing its GPU), or meet a cold start and report a healthy model as waiting."""
    revision = short_revision(service.latest_ready_revision)
    if previous.model and previous.model.revision == revision:
        return ProbeResult(True, "answered before")
    return await probe.check(service.uri)


def _with_redeploy_plan(assessment: cond.Assessment, service: run_v2.Service, settings: Settings) -> cond.Assessment:
    """A failed revision the operator will deploy again by itself is still on its way (Reconciling, kstatus
    InProgress); once it has given up, only a change can help (Stalled, kstatus Failed). So the state never flaps
    between Failed and InProgress while the operator retries, and GitOps tools wait instead of failing early."""
    attempts = int(service.template.annotations.get(RETRY_ANNOTATION, "0"))
    if attempts < settings.max_redeploys:
        plan = f"deploying it again with backoff ({attempts} of {settings.max_redeploys} attempts made)"
        return replace(assessment, reconciling=True, stalled=False, message=f"{assessment.message}; {plan}")
    plan = f"gave up after {attempts} redeploys: change the spec to try again"
    return replace(assessment, reconciling=False, stalled=True, message=f"{assessment.message}; {plan}")


def _failed(service: run_v2.Service) -> bool:
    return not service.reconciling and service.terminal_condition.state == cond.State.CONDITION_FAILED


def _serving(service: run_v2.Service | None) -> bool:
    return bool(
        service and service.uri and not service.reconciling
        and service.observed_generation == service.generation
        and service.terminal_condition.state == cond.State.CONDITION_SUCCEEDED
    )


def _model_status(probe: ProbeResult, revision: str) -> ModelStatus:
    info = probe.info or {}
    return ModelStatus(
        id=info.get("model_id"), max_concurrent_requests=info.get("max_concurrent_requests"),
        max_input_tokens=info.get("max_input_tokens"), max_total_tokens=info.get("max_total_tokens"),
        version=info.get("version"), revision=revision,
    )


def _transition_events(previous: list[Condition], now: cond.Assessment) -> list[Event]:
    """Ready when it becomes Ready; a Warning for each new stall or failed revision (not again while it is the same)."""
    before = {c.type: c for c in previous}
    was_ready = before.get(cond.READY) and before[cond.READY].status.value == "True"
    said = before.get(cond.READY)  # the Ready condition carries the reason and message of any state
    events = []
    if now.ready and not was_ready:
        events.append(Event("Normal", "Ready", now.message))
    warn = now.stalled or now.reason == "RevisionFailed"
    if warn and not (said and said.reason == now.reason and said.message == now.message):
        events.append(Event("Warning", now.reason, now.message))
    return events
