"""kopf wiring only: what kopf tells us about TGIServices, and how a pass's outcome reaches Kubernetes.

- every watch event (and the initial listing) updates the object's snapshot in the scheduler (scheduler.py),
  which runs a pass at once for a new or changed object, and then at each next check: soon with backoff while
  Cloud Run deploys or the model loads, every `resync_seconds` once settled (one read, no write);
- a pass writes its status itself (kubeapi.py), in order, before it ends;
- delete: the finalizer stays until the service is deleted (or released, with Retain).
kopf keeps only the finalizer on the object: no last-handled-configuration, no handler progress for passes.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import kopf

from tgi_operator import API_GROUP, API_VERSION, KIND, PLURAL, __version__, metrics
from tgi_operator.cloudrun import CloudRunServices, services_client
from tgi_operator.errors import PermanentCloudError, TransientCloudError
from tgi_operator.finalize import ABANDON_ANNOTATION, finalize
from tgi_operator.iam import ServiceAccounts, iam_client
from tgi_operator.interning import shared
from tgi_operator.kopf_storage import NoDiffBase, TolerantProgressStorage
from tgi_operator.kubeapi import KubeSession, StatusWriteError, StatusWriter
from tgi_operator.models import TGIServiceStatus
from tgi_operator.probe import ModelProbe
from tgi_operator.reconcile import (
    EARLIER_VERSION_MARK, INTENT_NOT_RECORDED, Adapters, Event, ObjectRef, Outcome, reconcile,
)
from tgi_operator.scheduler import Entry, Scheduler, backoff, key_of, plan_next
from tgi_operator.settings import Settings

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
CONFIG = Settings()
log = logging.getLogger("tgi_operator")


class QuietWatchLines(logging.Filter):
    """The watch handler runs on every event of every object: kopf's "Handler 'watch' is invoked/succeeded" lines
    would flood the log and say nothing. Passes that do something log for themselves (reconcile.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Handler 'watch' ")


class Runtime:
    """What every handler shares: the cloud adapters, the status writer and the scheduler (made at start-up)."""

    adapters: Adapters
    writer: StatusWriter | None = None
    scheduler: Scheduler
    identity: str = ""  # this process as the Lease and Cloud Audit Logs name it (lifecycle.py)


RUNTIME = Runtime()
# Read at scrape time from whichever scheduler runs (kopf may run more than once in a process: lifecycle.py).
metrics.watch_objects(metrics.ObjectsCollector(
    lambda: [(e.ref.namespace, e.ref.name, e.ref.status) for e in list(RUNTIME.scheduler.entries.values())]
    if hasattr(RUNTIME, "scheduler") else [],
    lambda: RUNTIME.scheduler.due_now() if hasattr(RUNTIME, "scheduler") else 0))


def login(settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any]) -> kopf.ConnectionInfo | None:
    """kopf's own choice of login, in its order: the `kubernetes` client's loader when installed (it knows exec
    plugins and in-cluster tokens), else kopf's service-account and kubeconfig readers."""
    if importlib.util.find_spec("kubernetes") is not None:
        return kopf.login_via_client(settings=settings, logger=logger)
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


@kopf.on.login()
def authenticate(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf's usual login, kept for the status writer too (renewed whenever kopf logs in again)."""
    credentials = login(settings, logger)
    if credentials is not None:
        if RUNTIME.writer is None:
            RUNTIME.writer = StatusWriter(KubeSession(credentials, relogin=lambda: login(settings, logger),
                                                      connections=CONFIG.max_concurrent_passes))
        else:
            RUNTIME.writer.session.renew(credentials)
    return credentials


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping lives under our own prefix, and only in annotations (status is ours).
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.diffbase_storage = NoDiffBase()  # the scheduler detects changes: kopf stores nothing
    # Read tolerantly: a garbage value someone wrote there must not block the object (and its finalizer) forever.
    settings.persistence.progress_storage = TolerantProgressStorage(prefix=API_GROUP)
    settings.posting.level = logging.WARNING  # we post our own Normal events; kopf adds its warnings
    # Events say who posted them: `kubectl describe` shows "From tgi-operator", with the pod as the instance.
    settings.posting.reporting_component = "tgi-operator"
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    settings.posting.event_name_prefix = "tgi-operator-"
    logging.getLogger("kopf.objects").addFilter(QuietWatchLines())
    user_agent = f"tgi-operator/{__version__} instance/{RUNTIME.identity or socket.gethostname()}"
    RUNTIME.adapters = Adapters(
        services=CloudRunServices(services_client(CONFIG.cloud_run_endpoint, user_agent), CONFIG.request_timeout_seconds),
        accounts=ServiceAccounts(iam_client(CONFIG.cloud_run_endpoint, user_agent), CONFIG.request_timeout_seconds),
        probe=ModelProbe(),
    )
    RUNTIME.scheduler = Scheduler(run_pass, CONFIG, CONFIG.max_concurrent_passes)
    metrics.MAX_WORKERS.labels(metrics.CONTROLLER).set(CONFIG.max_concurrent_passes)
    target = CONFIG.cloud_run_endpoint or "Google Cloud (Application Default Credentials)"
    log.info("tgi-operator started: Cloud Run at %s, resync every %ss, model probe %s, %d passes at once",
             target, CONFIG.resync_seconds, "on" if CONFIG.model_probe else "off", CONFIG.max_concurrent_passes)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _mapping(value: Any) -> Mapping[str, Any]:
    """A stored object may hold anything (an older, looser CRD; a hand-written status): only a mapping is read."""
    return value if isinstance(value, Mapping) else {}


OUR_ANNOTATIONS = f"{API_GROUP}/"


def _ref(body: Mapping[str, Any]) -> ObjectRef:
    """The part of the object a pass reads, taken out of kopf's body (the rest, managedFields and all, is not kept):
    spec, status and our own annotations (of an earlier version's bookkeeping, only that it is there)."""
    metadata = _mapping(body.get("metadata"))
    annotations = {k: "" if k == EARLIER_VERSION_MARK else v for k, v in _mapping(metadata.get("annotations")).items()
                   if k.startswith(OUR_ANNOTATIONS)}
    return ObjectRef(
        namespace=metadata.get("namespace", ""), name=metadata.get("name", ""),
        generation=metadata.get("generation", 0), spec=shared(_mapping(body.get("spec"))),
        status=shared(_mapping(body.get("status"))), annotations=annotations, uid=metadata.get("uid") or "",
    )


def _post(ref: ObjectRef, events: list[Event]) -> None:
    involved = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
                "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}}
    for event in events:
        kopf.event(involved, type=event.type, reason=event.reason, message=event.message)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: removed keys become None, at any depth."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            nested = merge_patch(old[key], value)
            if nested:
                patch[key] = nested
        elif old.get(key) != value:
            patch[key] = value
    return patch


STATUS_KEYS = frozenset(field.alias or name for name, field in TGIServiceStatus.model_fields.items())


def _status_patch(current: Any, status: TGIServiceStatus) -> dict[str, Any]:
    """The merge patch for .status; empty when nothing we own changed (the steady state writes nothing). Compared
    with the stored status as it is, so a broken field someone wrote is overwritten or removed, never kept."""
    ours = {k: v for k, v in dict(current).items() if k in STATUS_KEYS} if isinstance(current, Mapping) else {}
    return merge_patch(ours, status.to_k8s())


def _count(outcome: Outcome, seconds: float) -> None:
    a = outcome.assessment
    metrics.RECONCILE_TIME.labels(metrics.CONTROLLER).observe(seconds)
    metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, _result(outcome)).inc()
    for event in outcome.events:  # what the pass did, whatever it ended on
        if event.reason in ("Creating", "Updating", "Redeploying"):
            metrics.CLOUD_WRITES.labels(event.reason).inc()
        elif event.type == "Warning":
            metrics.STALLS.labels(event.reason).inc()
    if a is None:
        if not _routine(outcome):
            metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
        metrics.RECONCILES.labels("progressing" if _routine(outcome) else "transient_error").inc()
        return
    metrics.RECONCILES.labels("ready" if a.ready else "stalled" if a.stalled else "progressing").inc()


def _routine(outcome: Outcome) -> bool:
    return outcome.transient is not None and outcome.transient.routine


def _result(outcome: Outcome) -> str:
    """controller-runtime's `result` label: an error, a requeue at once or after a delay, or done (the resync is
    the informer's business there, as it is the scheduler's here)."""
    a = outcome.assessment
    if a is None:
        return "requeue_after" if _routine(outcome) else "error"
    if outcome.again:
        return "requeue"
    return "success" if a.ready or a.stalled else "requeue_after"


async def run_pass(entry: Entry) -> float | None:
    """One reconcile pass of one object, run by the scheduler: its status written before it ends, its events
    posted; returns when to pass it again."""
    async with entry.lock:
        ref = entry.ref
        if entry.deleting:  # the finalizer has it now
            return None
        stored = ref.status  # the status as stored, which the pass's own writes change
        intent_refused: StatusWriteError | None = None

        async def record_intent(status: TGIServiceStatus) -> bool:
            """The status naming the service and its invoker account, written before they are created (in the same
            pass: no extra pass, no extra read)."""
            nonlocal stored, intent_refused
            try:
                if (patch := _status_patch(stored, status)) and not await _write_status(entry, patch):
                    return False
            except StatusWriteError as exc:
                intent_refused = exc
                return False
            stored = status.to_k8s()
            return True

        started = time.monotonic()
        with metrics.RECONCILE_SECONDS.time(), metrics.ACTIVE_WORKERS.labels(metrics.CONTROLLER).track_inprogress():
            outcome = await reconcile(ref, RUNTIME.adapters, CONFIG, now=_now(), redeploy_failed=entry.redeploy_failed,
                                      record_intent=record_intent)
        _count(outcome, time.monotonic() - started)
        _post(ref, outcome.events)  # what was done in the cloud is said, whatever happens to the status below
        if entry.ref.generation != ref.generation:
            return 0.0  # the spec changed during the pass: its status would describe the old one; pass it again
        if outcome.transient is INTENT_NOT_RECORDED:
            if intent_refused is None:
                return None  # the object is gone
            return _status_refused(entry, intent_refused, "not creating anything before it is")
        plan = plan_next(outcome, entry.attempt, CONFIG)
        status_patch = _status_patch(stored, outcome.status)
        try:
            if status_patch and not await _write_status(entry, status_patch):
                return None  # the object is gone
        except StatusWriteError as exc:  # the next pass computes the status afresh and writes it
            return _status_refused(entry, exc, "passing it again")
        entry.attempt, entry.redeploy_failed = plan.attempt, plan.redeploy_failed
        if outcome.transient:
            log.log(logging.INFO if _routine(outcome) else logging.WARNING, "%s/%s not done yet (%s); next check in "
                    "%.0fs", ref.namespace, ref.name, outcome.transient, plan.delay)
        return plan.delay


def _status_refused(entry: Entry, exc: StatusWriteError, what_now: str) -> float:
    """The API server refused the status write: not again at once (its Retry-After, else a backoff)."""
    entry.attempt += 1
    delay = exc.retry_after or backoff(entry.attempt, CONFIG, CONFIG.poll_max_seconds)
    log.warning("%s; %s, in %.1fs", exc, what_now, delay)
    metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
    return delay


async def _write_status(entry: Entry, status_patch: dict[str, Any]) -> bool:
    """Writes the status now; False when the object is gone."""
    assert RUNTIME.writer is not None, "kopf logs in before it reports any object"
    written = await RUNTIME.writer.patch_status(entry.ref.namespace, entry.ref.name, status_patch)
    if written is None:
        RUNTIME.scheduler.forget(key_of(entry.ref))
        return False
    RUNTIME.scheduler.wrote_status(entry, *written)
    return True


@kopf.on.event(*RESOURCE)
async def watch(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Every event and the initial listing: the scheduler keeps the latest snapshot and passes what changed."""
    scheduler = RUNTIME.scheduler
    scheduler.start()  # in kopf's handler context, where its event posting lives
    ref = _ref(body)
    if type == "DELETED":
        scheduler.forget(key_of(ref))
        return
    scheduler.observe(ref, body.metadata.get("resourceVersion", ""),
                      deleting=bool(body.metadata.get("deletionTimestamp")))


@kopf.on.delete(*RESOURCE)
async def delete(body: kopf.Body, retry: int, **_: Any) -> None:
    ref = _ref(body)
    entry = RUNTIME.scheduler.entry(ref)
    entry.deleting = True  # no further pass starts
    if retry == 0:
        _post(ref, [Event("Normal", "Deleting", f"deletionPolicy {ref.spec.get('deletionPolicy', 'Delete')}")])
    try:
        async with entry.lock, RUNTIME.scheduler.slot():  # after a running pass; bounded like passes
            events = await finalize(ref, RUNTIME.adapters, CONFIG)
    except TransientCloudError as exc:
        raise kopf.TemporaryError(f"the finalizer stays, retrying: {exc}",
                                  delay=exc.retry_after or backoff(retry, CONFIG, CONFIG.poll_max_seconds)) from exc
    except PermanentCloudError as exc:
        _post(ref, [Event("Warning", exc.reason, f"cannot clean up: {exc.message} (annotate "
                          f"{ABANDON_ANNOTATION}=Abandon to let go without cleaning up)")])
        raise kopf.TemporaryError(f"cannot clean up ({exc}); the finalizer stays until this is fixed",
                                  delay=CONFIG.resync_seconds) from exc
    _post(ref, events)


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if hasattr(RUNTIME, "scheduler"):
        await RUNTIME.scheduler.stop()
    if hasattr(RUNTIME, "adapters"):
        await RUNTIME.adapters.services.close()
        await RUNTIME.adapters.accounts.close()
        await RUNTIME.adapters.probe.close()
    if RUNTIME.writer is not None:
        await RUNTIME.writer.session.close()
