"""Deletion of one TGIService: what its finalizer does before it lets the object go. No kopf here.

Delete: remove the invoker account and the Cloud Run service this object made, and wait until Cloud Run has
deleted the service (a long-running operation). Retain: release the service (owner labels off). Abandon (an
annotation): touch nothing. Works whatever the stored object holds: the target is the service recorded in status
(written before the create), else derived from namespace and name, and never a record the object cannot have made.
"""

from __future__ import annotations

from tgi_operator.access import delete_invoker_account_if_made
from tgi_operator.diff import without_owner
from tgi_operator.errors import PermanentCloudError, TransientCloudError
from tgi_operator.invokers import parse_members
from tgi_operator.naming import service_id
from tgi_operator.ownership import Claim
from tgi_operator.reconcile import Adapters, Event, ObjectRef, first_version_service, ownership_of
from tgi_operator.render import INVOKERS_ANNOTATION, Target, recorded_target
from tgi_operator.settings import Settings

ABANDON_ANNOTATION = "tgi-operator.dev/deletion-policy"  # "Abandon": let go without touching the cloud


async def finalize(obj: ObjectRef, adapters: Adapters, settings: Settings) -> list[Event]:
    """Raises transient errors (the finalizer stays and kopf retries) and permanent ones (a Warning, then retries)."""
    if obj.annotations.get(ABANDON_ANNOTATION) == "Abandon":
        return [Event("Warning", "Abandoned", f"{ABANDON_ANNOTATION}: Abandon; nothing in Google Cloud was touched")]
    where, retain = deletion_target(obj, settings)
    if where is None:
        return [Event("Normal", "Deleted", "no Cloud Run service was ever made for this object: nothing to remove")]
    recorded = obj.status.get("serviceName")
    try:
        if recorded_target(obj.namespace, obj.name, recorded) is None:  # the status is lost: look for both ids
            if first := await first_version_service(obj, where.project, where.region, adapters.services, settings):
                where, recorded = first, first.name
        observed = await adapters.services.get(where.name)
    except PermanentCloudError as exc:
        if obj.status.get("url") or exc.reason == "ApiNotEnabled" or exc.code not in ("PERMISSION_DENIED", "NOT_FOUND"):
            raise  # it served (or may still be there behind a disabled API): cleaning up must not be skipped
        # Never served, and its project cannot be read (a typo, or not allowed): nothing of ours can be there.
        return [Event("Warning", "Deleted", f"{where.name} cannot be read ({exc.code}) and never served: released")]
    if not retain:  # the invoker account is this object's by its description, whoever holds the service
        await _delete_invoker_account(obj, where, observed, adapters)
    if observed is not None and ownership_of(observed, obj, where, settings, recorded) is not Claim.OURS:
        return [Event("Normal", "Deleted", f"{where.name} is not managed by this object: left untouched")]
    if retain:
        if observed is not None:
            await adapters.services.update(without_owner(observed))
        return [Event("Normal", "Retained", f"released Cloud Run service {where.name}; it keeps running and serving")]
    if observed is not None:
        # Cloud Run shows no sign of a delete in progress on a read (delete_time is only in the Delete operation), so
        # each retry asks again: a second delete answers with the pending operation (or "being deleted", transient).
        await adapters.services.delete(where.name)
        if await adapters.services.get(where.name) is not None:  # the delete is a long-running operation
            raise TransientCloudError("DELETING", f"{where.name} is being deleted", retry_after=5.0)
    return [Event("Normal", "Deleted", f"deleted Cloud Run service {where.name}")]


async def _delete_invoker_account(obj: ObjectRef, where: Target, observed, adapters: Adapters) -> None:
    recorded = parse_members(observed.annotations.get(INVOKERS_ANNOTATION) if observed is not None else None)
    await delete_invoker_account_if_made(obj.namespace, obj.name, where.project, recorded,
                                         bool(obj.status.get("invokerServiceAccount")), adapters.accounts)


def deletion_target(obj: ObjectRef, settings: Settings) -> tuple[Target | None, bool]:
    """What to clean up: the service recorded in status (recorded before it is created), else what the spec names.
    Works for a spec that no longer validates (stricter CRD, unset default project): nothing may be orphaned."""
    retain = obj.spec.get("deletionPolicy") == "Retain"
    recorded = recorded_target(obj.namespace, obj.name, obj.status.get("serviceName"))
    if recorded:
        return recorded, retain
    # Never recorded (or the record is broken): the id derives from namespace and name alone, so the spec's project
    # and region are enough, even when the rest of the spec no longer validates.
    project, region = obj.spec.get("project") or settings.default_project, obj.spec.get("region")
    derived = f"projects/{project}/locations/{region}/services/{service_id(obj.namespace, obj.name)}"
    return recorded_target(obj.namespace, obj.name, derived), retain
