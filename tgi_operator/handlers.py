"""kopf wiring only: when to run a reconcile pass, and how its outcome reaches Kubernetes.

- create / update (of spec) / resume: a pass right away;
- a timer ticks every `poll_initial_seconds` but only runs a pass when this object's next check is due:
  soon (with backoff) while Cloud Run deploys or the model loads, every `resync_seconds` once Ready
  (drift correction), so the steady state costs one read and no write;
- delete: the finalizer stays until the service is deleted (or released, with Retain).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import kopf

from tgi_operator import API_GROUP, API_VERSION, PLURAL, logredact, metrics
from tgi_operator.cloudrun import CloudRunServices, services_client
from tgi_operator.errors import PermanentCloudError, TransientCloudError
from tgi_operator.iam import ServiceAccounts, iam_client
from tgi_operator.kopf_storage import TolerantDiffBaseStorage, TolerantProgressStorage
from tgi_operator.models import TGIServiceStatus
from tgi_operator.probe import ModelProbe
from tgi_operator.finalize import ABANDON_ANNOTATION, finalize
from tgi_operator.reconcile import Adapters, Event, ObjectRef, Outcome, reconcile
from tgi_operator.settings import Settings

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
CONFIG = Settings()  # read once at import: the timer's interval is fixed when the decorators run
log = logging.getLogger("tgi_operator")


class QuietPollTicks(logging.Filter):
    """The poll timer ticks every second per object and mostly finds nothing due: kopf's "Timer 'poll' ..."
    lines would flood the log. Passes that do something log for themselves (reconcile.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'poll' ")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping lives under our own prefix, and only in annotations (status is ours).
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # Read tolerantly: a garbage value someone wrote there must not block the object (and its finalizer) forever.
    settings.persistence.progress_storage = TolerantProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = TolerantDiffBaseStorage(prefix=API_GROUP)
    settings.posting.level = logging.WARNING  # we post our own Normal events; kopf adds its warnings
    logging.getLogger("kopf.objects").addFilter(QuietPollTicks())
    memo.adapters = Adapters(
        services=CloudRunServices(services_client(CONFIG.cloud_run_endpoint), CONFIG.request_timeout_seconds),
        accounts=ServiceAccounts(iam_client(CONFIG.cloud_run_endpoint), CONFIG.request_timeout_seconds),
        probe=ModelProbe(),
    )
    target = CONFIG.cloud_run_endpoint or "Google Cloud (Application Default Credentials)"
    log.info("tgi-operator started: Cloud Run at %s, resync every %ss, model probe %s",
             target, CONFIG.resync_seconds, "on" if CONFIG.model_probe else "off")


@kopf.on.probe(id="cloud")
def cloud_target(**_: Any) -> str:
    return CONFIG.cloud_run_endpoint or "google"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _mapping(value: Any) -> Mapping[str, Any]:
    """A stored object may hold anything (an older, looser CRD; a hand-written status): only a mapping is read."""
    return value if isinstance(value, Mapping) else {}


def _ref(body: kopf.Body) -> ObjectRef:
    return ObjectRef(
        namespace=body.metadata.namespace, name=body.metadata.name, generation=body.metadata.get("generation", 0),
        spec=_mapping(body.get("spec")), status=_mapping(body.get("status")), annotations=body.metadata.annotations,
        uid=body.metadata.uid or "",
    )


def _lock(memo: kopf.Memo) -> asyncio.Lock:
    if "lock" not in memo:
        memo.lock = asyncio.Lock()
    return memo.lock


def _post(body: kopf.Body, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


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


def _backoff(attempt: int, ceiling: float) -> float:
    """Exponential backoff with full jitter, so objects throttled together (a burst of 429s) do not retry together."""
    return random.uniform(0.5, 1.0) * min(CONFIG.poll_initial_seconds * 2 ** min(attempt, 16), ceiling)


def _count(outcome: Outcome) -> None:
    a = outcome.assessment
    if a is None:
        metrics.RECONCILES.labels("transient_error").inc()
        return
    metrics.RECONCILES.labels("ready" if a.ready else "stalled" if a.stalled else "progressing").inc()
    for event in outcome.events:
        if event.reason in ("Creating", "Updating", "Redeploying"):
            metrics.CLOUD_WRITES.labels(event.reason).inc()
        elif event.type == "Warning":
            metrics.STALLS.labels(event.reason).inc()


def _schedule(memo: kopf.Memo, outcome: Outcome) -> None:
    """When this object's timer should run its next pass."""
    a, cfg = outcome.assessment, CONFIG
    if outcome.again:
        delay = 0.0
    elif a is None:  # a transient cloud error: back off
        memo.attempt = memo.get("attempt", 0) + 1
        delay = outcome.transient.retry_after or _backoff(memo.attempt, cfg.poll_max_seconds)
    elif a.ready or a.stalled:
        memo.attempt, delay = 0, cfg.resync_seconds
    else:  # deploying, waiting for the model, or a failed revision to redeploy: back off, then check again
        memo.attempt = memo.get("attempt", 0) + 1
        delay = _backoff(memo.attempt - 1, cfg.resync_seconds if a.reason == "RevisionFailed" else cfg.poll_max_seconds)
    if a is not None:  # a failed revision the operator has not given up on: the next pass deploys it again
        memo.redeploy_failed = a.reason == "RevisionFailed" and not a.stalled
    memo.next_check = time.monotonic() + delay


async def _pass(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, *, redeploy_failed: bool, when_due: bool) -> Outcome | None:
    """One reconcile pass under the object's lock; its status goes into kopf's patch, its events out."""
    async with _lock(memo):
        # A pass that waited for the lock while the object was being finalized must not create it again, and a
        # timer tick queued behind an event-driven pass must not repeat it.
        if memo.get("deleting") or body.metadata.get("deletionTimestamp"):
            return None
        if when_due and time.monotonic() < memo.get("next_check", 0.0):
            return None
        with metrics.RECONCILE_SECONDS.time():
            outcome = await reconcile(_ref(body), memo.adapters, CONFIG, now=_now(), redeploy_failed=redeploy_failed)
        _schedule(memo, outcome)
    _count(outcome)
    status_patch = _status_patch(body.get("status"), outcome.status)
    if status_patch:
        patch.status.update(status_patch)
    _post(body, outcome.events)
    return outcome


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def apply(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any) -> None:
    outcome = await _pass(body, patch, memo, redeploy_failed=True, when_due=False)
    if outcome and outcome.transient:
        exc = outcome.transient
        raise kopf.TemporaryError(f"not done yet, retrying: {exc}",
                                  delay=exc.retry_after or _backoff(retry + 1, CONFIG.poll_max_seconds))


@kopf.timer(*RESOURCE, interval=min(CONFIG.poll_initial_seconds, 1.0), initial_delay=1.0)
async def poll(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if time.monotonic() < memo.get("next_check", 0.0):
        return  # cheap early exit; _pass checks again under the lock
    outcome = await _pass(body, patch, memo, redeploy_failed=memo.get("redeploy_failed", False), when_due=True)
    if outcome and outcome.transient:
        logger.warning("not done yet (%s); next check in %.0fs",
                       outcome.transient, memo.next_check - time.monotonic())


@kopf.on.delete(*RESOURCE)
async def delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    memo.deleting = True  # stops any pass queued behind the lock (see _pass)
    if retry == 0:
        _post(body, [Event("Normal", "Deleting", f"deletionPolicy {_mapping(body.get('spec')).get('deletionPolicy', 'Delete')}")])
    try:
        async with _lock(memo):
            events = await finalize(_ref(body), memo.adapters, CONFIG)
    except TransientCloudError as exc:
        raise kopf.TemporaryError(f"the finalizer stays, retrying: {exc}",
                                  delay=exc.retry_after or _backoff(retry, CONFIG.poll_max_seconds)) from exc
    except PermanentCloudError as exc:
        _post(body, [Event("Warning", exc.reason, f"cannot clean up: {exc.message} (annotate "
                           f"{ABANDON_ANNOTATION}=Abandon to let go without cleaning up)")])
        raise kopf.TemporaryError(f"cannot clean up ({exc}); the finalizer stays until this is fixed",
                                  delay=CONFIG.resync_seconds) from exc
    _post(body, events)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    adapters: Adapters | None = memo.get("adapters")
    if adapters:
        await adapters.services.close()
        await adapters.accounts.close()


def run_operator(*, namespaces: list[str], all_namespaces: bool, liveness_port: int | None,
                 liveness_host: str = "0.0.0.0", metrics_port: int | None = None,
                 verbose: bool = False, json_logs: bool = False) -> None:
    """Run kopf with these handlers until SIGINT/SIGTERM. Standalone: one operator replica, no peering."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    logredact.install()  # after configure: it filters the handler configure just made
    liveness = f"http://{liveness_host}:{liveness_port}/healthz" if liveness_port else None
    if metrics_port:
        metrics.serve(metrics_port, liveness_host)
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
