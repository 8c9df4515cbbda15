"""What happens after a write is accepted: the long-running part of Cloud Run's Services API.

- A create first reads Ready=CONDITION_PENDING (no conditions, no URL), then CONDITION_RECONCILING while its
  revision starts; an update reads Ready=CONDITION_RECONCILING while the old revision keeps serving (its
  RoutesReady/ConfigurationsReady stay as they were). After `reconcile_seconds` the revision
  (`<service>-0000N-xyz`, or `template.revision`) is made and checked: the admin API's "fail the next revision",
  then the GPU quota for the instances that must run (gpu_quota.py). A failed revision leaves the previous ready
  one serving.
- A delete is long-running too: the service stays readable with `delete_time`, `expire_time` and
  `reconciling=true` until it is gone, then the operation completes with the deleted service.
A newer write supersedes an in-flight reconcile: the older operation ends ABORTED.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import random
import string
from collections.abc import Awaitable, Callable

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.rpc import status_pb2

from tgi_operator.emulator import gpu_quota, rules, secrets
from tgi_operator.emulator.dataplane import DataPlane, Endpoint
from tgi_operator.emulator.errors import ApiError
from tgi_operator.emulator.operations import OperationBook
from tgi_operator.emulator.service_spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PORT,
    State_,
    clone,
    condition,
    ingress_container,
    new_etag,
    now,
    template_json,
)
from tgi_operator.emulator.state import State

log = logging.getLogger(__name__)

CONTAINER_START_FAILURE = (
    "The user-provided container failed to start and listen on the port defined provided by the PORT={port} "
    "environment variable within the allocated timeout. This can happen when the container port is misconfigured "
    "or if the timeout is too short. The health check timeout can be extended."
)
# A deleted service can be read (with expire_time) until it is gone; Cloud Run's Service.expire_time:
# "For a deleted resource, the time after which it will be permamently deleted" (google/cloud/run/v2/service.proto).
DELETED_KEPT = datetime.timedelta(days=30)
BEING_DELETED = "Service is being deleted."  # contract wording (assumption: real text unknown)


def _parent(name: str) -> str:
    return name.rsplit("/services/", 1)[0]


def _as_deleted(service: run_v2.Service) -> run_v2.Service:
    shown = clone(service)
    shown.delete_time = now()
    shown.expire_time = shown.delete_time + DELETED_KEPT
    return shown


class Reconciler:
    def __init__(self, state: State, operations: OperationBook, dataplane: DataPlane, may_invoke: Callable[[str, str], bool]) -> None:
        self._state = state
        self._ops = operations
        self._dataplane = dataplane
        self._may_invoke = may_invoke  # (service name, email) -> run.routes.invoke
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------ lifecycle

    async def resume(self) -> None:
        """After a restart: serve every ready service on its old port (a new one if that was taken meanwhile) and
        finish interrupted reconciles and deletes."""
        for name, snapshot in list(self._state.serving.items()):
            if name in self._state.services:
                uri = await self._publish(name, snapshot)
                self._record_uri(name, uri)
        for name, pending in list(self._state.pending.items()):
            if name not in self._state.services:
                continue
            if pending.get("delete"):
                self._schedule(name, lambda n=name, op=pending["operation"]: self._delete_later(n, op))
            else:
                creating = self._state.services[name].terminal_condition.state == State_.CONDITION_PENDING
                work = functools.partial(self._reconcile, name, pending["operation"], pending["newRevision"], creating)
                self._schedule(name, work)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------ writes

    def deleting(self, name: str) -> bool:
        return bool(self._state.pending.get(name, {}).get("delete"))

    def check_writable(self, name: str) -> None:
        """Writes to a service that is being deleted are refused (contract B6; assumption, the stricter answer)."""
        if self.deleting(name):
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, BEING_DELETED)

    def check_revision_name(self, name: str, template: run_v2.RevisionTemplate) -> bool:
        """Whether `template.revision` names a revision this service already has with the same configuration (then
        there is nothing to make). Another configuration under that name is ALREADY_EXISTS, as Knative's
        bring-your-own revision names (Cloud Run YAML `metadata.name`; contract B5 wording)."""
        revision = template.revision
        if not revision:
            return False
        recorded = self._state.revisions.get(name, {}).get(revision)
        if recorded is None:
            return False
        if recorded != template_json(template):
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Revision named '{revision}' with different configuration already exists.")
        return True

    def start(self, name: str, new_revision: bool, creating: bool = False) -> operations_pb2.Operation:
        service = self._state.services[name]
        self.supersede(name, "The operation was superseded by a newer update of the service.")
        service.reconciling = True
        if creating:
            service.terminal_condition = condition("Ready", State_.CONDITION_PENDING)
            service.conditions = []
        else:  # the old revision keeps serving: RoutesReady and ConfigurationsReady stay as they were
            service.terminal_condition = condition("Ready", State_.CONDITION_RECONCILING, "Deploying revision.")
        op = self._ops.start(_parent(name), service)
        self._state.pending[name] = {"operation": op.name, "newRevision": new_revision}
        self._state.save()
        self._schedule(name, functools.partial(self._reconcile, name, op.name, new_revision, creating))
        return op

    def start_delete(self, name: str) -> operations_pb2.Operation:
        """Begin deleting `name`; a second delete while it is in progress returns the same operation."""
        pending = self._state.pending.get(name)
        if pending is not None and pending.get("delete") and pending["operation"] in self._state.operations:
            return self._state.operations[pending["operation"]]
        self.supersede(name, "The service was deleted.")
        service = self._state.services[name]
        service.generation += 1
        service.etag = new_etag()
        service.reconciling = True
        service.terminal_condition = condition("Ready", State_.CONDITION_RECONCILING, "Deleting service.")
        # delete_time and expire_time appear only in the Delete operation's service, never on GetService: "only
        # populated as a response to a Delete request" (service.proto, delete_time). A reader cannot tell a
        # deleting service from a reconciling one (the stricter reading).
        op = self._ops.start(_parent(name), _as_deleted(service))
        self._state.pending[name] = {"operation": op.name, "delete": True}
        self._state.save()
        self._schedule(name, functools.partial(self._delete_later, name, op.name))
        return op

    def supersede(self, name: str, reason: str) -> None:
        """Stop an in-flight reconcile of `name` and fail its operation, as a newer write replaces it."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        pending = self._state.pending.pop(name, None)
        if pending is not None and name in self._state.services:
            status = status_pb2.Status(code=grpc.StatusCode.ABORTED.value[0], message=reason)
            self._ops.finish(pending["operation"], self._state.services[name], status)

    # ------------------------------------------------------------ internals

    def _schedule(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._guarded(name, work), name=f"reconcile {name}")

    async def _guarded(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        operation = self._state.pending.get(name, {}).get("operation", "")
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconcile of %s failed", name)
            service = self._state.services.get(name)
            if service is not None:
                status = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message="Internal error in the emulator.")
                self._ops.finish(operation, service, status)
        finally:
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]

    async def _reconcile(self, name: str, operation: str, new_revision: bool, creating: bool) -> None:
        if creating:  # pending first, then the revision starts
            await asyncio.sleep(self._state.reconcile_seconds / 2)
            service = self._state.services.get(name)
            if service is None:
                return
            service.terminal_condition = condition("Ready", State_.CONDITION_RECONCILING, "Deploying revision.")
            self._state.save()
            await asyncio.sleep(self._state.reconcile_seconds / 2)
        else:
            await asyncio.sleep(self._state.reconcile_seconds)
        await self._settle(name, operation, new_revision)

    async def _delete_later(self, name: str, operation: str) -> None:
        await asyncio.sleep(self._state.reconcile_seconds)
        service = self._state.services.get(name)
        if service is None:
            return
        service.reconciling = False
        for table in (self._state.services, self._state.policies, self._state.serving, self._state.ports,
                      self._state.fail_next_revision, self._state.revision_counters, self._state.revisions,
                      self._state.pending):  # fmt: skip
            table.pop(name, None)  # type: ignore[attr-defined]
        await self._dataplane.withdraw(name)
        self._ops.finish(operation, _as_deleted(service))
        self._state.save()

    async def _settle(self, name: str, operation: str, new_revision: bool) -> None:
        service = self._state.services.get(name)
        if service is None:
            return
        service_id = name.rsplit("/", 1)[-1]
        revisions = self._state.revisions.setdefault(name, {})
        revision_name = service.latest_created_revision
        reused = service.template.revision in revisions  # named revision with this configuration: nothing to make
        if reused:
            revision_name = f"{name}/revisions/{service.template.revision}"
        elif new_revision or not revision_name:
            number = self._state.revision_counters.get(name, 0) + 1
            self._state.revision_counters[name] = number
            suffix = "".join(random.choices(string.ascii_lowercase, k=3))
            revision_id = service.template.revision or f"{service_id}-{number:05d}-{suffix}"
            revision_name = f"{name}/revisions/{revision_id}"
            revisions[revision_id] = template_json(service.template)
        service.latest_created_revision = revision_name
        failure = self._failure(name, service)
        service.observed_generation = service.generation
        service.reconciling = False
        service.update_time = now()
        if failure is None:
            uri = await self._publish(name, service)
            self._state.serving[name] = clone(service)
            service.latest_ready_revision = revision_name
            service.uri = uri
            service.urls = [uri]
            service.terminal_condition = condition("Ready", State_.CONDITION_SUCCEEDED)
            service.conditions = [
                condition("RoutesReady", State_.CONDITION_SUCCEEDED),
                condition("ConfigurationsReady", State_.CONDITION_SUCCEEDED),
            ]
            error = None
        else:
            code, cause = failure
            message = f"Revision '{revision_name.rsplit('/', 1)[-1]}' is not ready and cannot serve traffic. {cause}"
            service.terminal_condition = condition("Ready", State_.CONDITION_FAILED, message)
            service.conditions = [
                condition("RoutesReady", State_.CONDITION_FAILED, message),
                condition("ConfigurationsReady", State_.CONDITION_FAILED, message, reason=run_v2.Condition.CommonReason.REVISION_FAILED),
            ]
            error = status_pb2.Status(code=code.value[0], message=message)
        self._set_traffic_statuses(service)
        self._state.pending.pop(name, None)
        self._ops.finish(operation, service, error)
        self._state.save()

    def _failure(self, name: str, service: run_v2.Service) -> tuple[grpc.StatusCode, str] | None:
        """Why the new revision cannot start: the admin API's injected failure, a secret its account may not read,
        or the GPU quota."""
        if name in self._state.fail_next_revision:
            message = self._state.fail_next_revision.pop(name)
            container = ingress_container(service.template)
            port = container.ports[0].container_port if container.ports else DEFAULT_PORT
            return grpc.StatusCode.FAILED_PRECONDITION, message or CONTAINER_START_FAILURE.format(port=port)
        project = name.split("/")[1]
        if refused := secrets.refused_secrets(project, service.template, self._may_read_secret):
            return grpc.StatusCode.INTERNAL, "\n".join(refused)  # "Error code 13" in the recorded operation
        cause = gpu_quota.start_failure(self._state, name, service)
        return None if cause is None else (grpc.StatusCode.RESOURCE_EXHAUSTED, cause)

    def _may_read_secret(self, secret: str, email: str) -> bool:
        return (email in self._state.secret_accessors.get(secret, ())
                or bool(self._state.project_roles.get(email, set()) & secrets.ACCESSOR_ROLES))

    @staticmethod
    def _set_traffic_statuses(service: run_v2.Service) -> None:
        if not service.latest_ready_revision:
            return
        service.traffic_statuses = [
            run_v2.TrafficTargetStatus(type_=t.type_, revision=t.revision, percent=t.percent, tag=t.tag)
            for t in service.traffic
        ]

    async def _publish(self, name: str, snapshot: run_v2.Service) -> str:
        """Serve the revision made from `snapshot` at the service's URL (same port as before, if any)."""
        t = snapshot.template
        container = next((c for c in t.containers if rules.gpu_count(c) is not None), ingress_container(t))
        endpoint = Endpoint(
            service_name=name,
            launcher_args=list(container.args),
            env={e.name: e.value for e in container.env if "value_source" not in e},
            concurrency=t.max_instance_request_concurrency or DEFAULT_CONCURRENCY,
            may_invoke=lambda email, _name=name: self._may_invoke(_name, email),
            timeout_s=t.timeout.total_seconds() if "timeout" in t else 300.0,
        )
        saved = self._state.ports.get(name)
        try:
            uri = await self._dataplane.publish(endpoint, port=saved)
        except OSError as exc:
            if saved is None:
                raise
            # Another process took the port while the emulator was down: serve on a new one, and the URL moves
            # (the caller records it), rather than refuse to start.
            log.warning("port %d of %s cannot be used again (%s): serving it on a new port", saved, name, exc)
            uri = await self._dataplane.publish(endpoint)
        self._state.ports[name] = int(uri.rsplit(":", 1)[1].split("/")[0])
        return uri

    def _record_uri(self, name: str, uri: str) -> None:
        """Write a moved URL everywhere it is kept (the service and its serving snapshot) and save, as a deploy does."""
        service = self._state.services[name]
        if service.uri == uri:
            return
        for kept in (service, self._state.serving[name]):
            kept.uri = uri
            kept.urls = [uri]
        self._state.save()
