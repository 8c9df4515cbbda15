"""`google.cloud.run.v2.Services`: Cloud Run services, their asynchronous reconcile and their IAM policies.

A write validates the request (rules.py), stores the service with `reconciling=True` and returns
an operation; a task then waits `reconcile_seconds`, creates the revision (`<service>-0000N-xyz`),
applies the GPU quota and the admin API's "fail the next revision", publishes the URL through the
data plane, and completes the operation. A failed revision leaves the previous ready one serving.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import random
import secrets
import string
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import status_pb2

from tgi_operator.emulator import rules
from tgi_operator.emulator.dataplane import DataPlane, Endpoint
from tgi_operator.emulator.errors import ApiError, invalid, not_found
from tgi_operator.emulator.operations import OperationBook
from tgi_operator.emulator.rules import Violation
from tgi_operator.emulator.state import State

log = logging.getLogger(__name__)

State_ = run_v2.Condition.State
DEFAULT_CONCURRENCY = 80
DEFAULT_PORT = 8080
CONTAINER_START_FAILURE = (
    "The user-provided container failed to start and listen on the port defined provided by the PORT={port} "
    "environment variable within the allocated timeout. This can happen when the container port is misconfigured "
    "or if the timeout is too short. The health check timeout can be extended."
)
# Fields the caller may set; everything else on a Service is output only.
USER_FIELDS = (
    "description", "labels", "annotations", "client", "client_version", "ingress", "launch_stage",
    "binary_authorization", "template", "traffic", "scaling", "invoker_iam_disabled", "default_uri_disabled",
    "custom_audiences", "multi_region_settings", "iap_enabled", "build_config", "threat_detection_enabled",
)  # fmt: skip
ETAG_MISMATCH = "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _etag() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()


def _clone(service: run_v2.Service) -> run_v2.Service:
    return run_v2.Service.deserialize(run_v2.Service.serialize(service))


def _spec(service: run_v2.Service) -> run_v2.Service:
    """Only the user-settable part of a service: what decides whether a write changed anything."""
    spec = _clone(service)
    pb = run_v2.Service.pb(spec)
    for f in pb.DESCRIPTOR.fields:
        if f.name not in USER_FIELDS:
            pb.ClearField(f.name)
    return spec


def _ingress_container(template: run_v2.RevisionTemplate) -> run_v2.Container:
    with_ports = [c for c in template.containers if c.ports]
    return with_ports[0] if with_ports else template.containers[0]


def apply_defaults(service: run_v2.Service, project: str) -> None:
    """The defaults Cloud Run fills in and returns on reads (the operator's diff must ignore them)."""
    if not service.ingress:
        service.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    if not service.launch_stage:
        service.launch_stage = "GA"
    if not service.traffic:
        service.traffic = [
            run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100)
        ]
    t = service.template
    if "timeout" not in t:
        t.timeout = duration_pb2.Duration(seconds=300)
    if not t.max_instance_request_concurrency:
        t.max_instance_request_concurrency = DEFAULT_CONCURRENCY
    if not t.service_account:
        t.service_account = f"{rules.project_number(project)}-compute@developer.gserviceaccount.com"
    for i, c in enumerate(t.containers):
        if not c.resources.limits:
            c.resources.limits = {"cpu": "1000m", "memory": "512Mi"}
        if len(t.containers) == 1 and not c.ports:
            c.ports = [run_v2.ContainerPort(name="http1", container_port=DEFAULT_PORT)]
        if c.ports and "startup_probe" not in c:
            port = c.ports[0].container_port or DEFAULT_PORT
            c.startup_probe = run_v2.Probe(
                timeout_seconds=240, period_seconds=240, failure_threshold=1, tcp_socket=run_v2.TCPSocketAction(port=port)
            )


def _condition(type_: str, state: State_, message: str = "", **extra: Any) -> run_v2.Condition:
    return run_v2.Condition(type_=type_, state=state, message=message, last_transition_time=_now(), **extra)


class CloudRunServices:
    def __init__(self, state: State, operations: OperationBook, dataplane: DataPlane, caller: Callable[[], str]) -> None:
        self._state = state
        self._ops = operations
        self._dataplane = dataplane
        self._caller = caller  # the identity writes are attributed to (creator, last_modifier, TestIamPermissions)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------ lifecycle

    async def resume(self) -> None:
        """After a restart: serve every ready service on its old port and finish interrupted reconciles."""
        for name, snapshot in list(self._state.serving.items()):
            if name in self._state.services:
                await self._publish(name, snapshot)
        for name, pending in list(self._state.pending.items()):
            if name in self._state.services:
                self._schedule(name, pending["operation"], pending["newRevision"])

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------ invocation rights (for the data plane)

    def may_invoke(self, name: str, email: str) -> bool:
        """run.routes.invoke: the service policy, `invoker_iam_disabled`, or a project-level role."""
        service = self._state.services.get(name)
        if service is None:
            return False
        if service.invoker_iam_disabled:
            return True
        members = rules.members_for(email)
        policy = self._state.policies.get(name, policy_pb2.Policy())
        for binding in policy.bindings:
            if binding.role in rules.INVOKER_ROLES and members.intersection(binding.members):
                return True
        return bool(email) and bool(self._state.project_roles.get(email, set()) & rules.INVOKER_ROLES)

    # ------------------------------------------------------------ Services RPCs

    async def create_service(self, request: run_v2.CreateServiceRequest, context: object) -> operations_pb2.Operation:
        parsed = rules.parse_parent(request.parent)
        if parsed is None:
            raise invalid("CreateServiceRequest", [Violation("parent", "must be projects/{project}/locations/{location}.")])
        project, region = parsed
        violations = rules.check_service_id(request.service_id)
        violations += self._check(request.service, region, request.service_id)
        if violations:
            raise invalid("CreateServiceRequest", violations)
        name = f"{request.parent}/services/{request.service_id}"
        if name in self._state.services:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Resource '{request.service_id}' already exists.")
        service = self._new_service(name, project, request.service)
        if request.validate_only:
            return self._ops.done_now(request.parent, service)
        self._state.services[name] = service
        self._state.policies[name] = policy_pb2.Policy(version=1, etag=secrets.token_bytes(8))
        return self._start_reconcile(name, new_revision=True)

    async def get_service(self, request: run_v2.GetServiceRequest, context: object) -> run_v2.Service:
        return self._get(request.name)

    async def list_services(self, request: run_v2.ListServicesRequest, context: object) -> run_v2.ListServicesResponse:
        parsed = rules.parse_parent(request.parent)
        if parsed is None:
            raise invalid("ListServicesRequest", [Violation("parent", "must be projects/{project}/locations/{location}.")])
        project, region = parsed
        if request.page_size < 0:
            raise invalid("ListServicesRequest", [Violation("page_size", "must not be negative.")])
        names = sorted(
            n
            for n in self._state.services
            if (p := rules.parse_service_name(n)) and p[0] == project and region in ("-", p[1])
        )
        after = base64.urlsafe_b64decode(request.page_token.encode()).decode() if request.page_token else ""
        names = [n for n in names if n > after]
        size = min(request.page_size or 100, 1000)
        page = names[:size]
        token = base64.urlsafe_b64encode(page[-1].encode()).decode() if len(names) > size else ""
        return run_v2.ListServicesResponse(services=[self._state.services[n] for n in page], next_page_token=token)

    async def update_service(self, request: run_v2.UpdateServiceRequest, context: object) -> operations_pb2.Operation:
        name = request.service.name
        parsed = rules.parse_service_name(name)
        if parsed is None:
            raise invalid(
                "UpdateServiceRequest",
                [Violation("service.name", "must be projects/{project}/locations/{location}/services/{service}.")],
            )
        project, region, service_id = parsed
        existing = self._state.services.get(name)
        if existing is None:
            if not request.allow_missing:
                raise not_found(name)
            violations = rules.check_service_id(service_id) + self._check(request.service, region, service_id)
            if violations:
                raise invalid("UpdateServiceRequest", violations)
            service = self._new_service(name, project, request.service)
            parent = name.rsplit("/services/", 1)[0]
            if request.validate_only:
                return self._ops.done_now(parent, service)
            self._state.services[name] = service
            self._state.policies[name] = policy_pb2.Policy(version=1, etag=secrets.token_bytes(8))
            return self._start_reconcile(name, new_revision=True)
        if request.service.etag and request.service.etag != existing.etag:
            raise ApiError(grpc.StatusCode.ABORTED, f"The etag {request.service.etag!r} does not match the current etag of {name}.")
        desired = self._merge(existing, request.service, list(request.update_mask.paths) if "update_mask" in request else [])
        violations = self._check(desired, region, service_id)
        if violations:
            raise invalid("UpdateServiceRequest", violations)
        apply_defaults(desired, project)
        parent = name.rsplit("/services/", 1)[0]
        if request.validate_only:
            return self._ops.done_now(parent, desired)
        changed = _spec(desired) != _spec(existing)
        # A changed template makes a revision; so does any write after a failed one (it is never resurrected).
        failed_latest = existing.latest_created_revision != existing.latest_ready_revision and not existing.reconciling
        new_revision = desired.template != existing.template or failed_latest
        desired.update_time = _now()
        desired.last_modifier = self._caller()
        desired.etag = _etag()
        if not changed:
            self._state.services[name] = desired
            self._save()
            return self._ops.done_now(parent, desired)
        desired.generation = existing.generation + 1
        self._state.services[name] = desired
        return self._start_reconcile(name, new_revision=new_revision)

    async def delete_service(self, request: run_v2.DeleteServiceRequest, context: object) -> operations_pb2.Operation:
        service = self._get(request.name)
        if request.etag and request.etag != service.etag:
            raise ApiError(grpc.StatusCode.ABORTED, f"The etag {request.etag!r} does not match the current etag of {request.name}.")
        parent = request.name.rsplit("/services/", 1)[0]
        deleted = _clone(service)
        deleted.delete_time = _now()
        deleted.etag = _etag()
        if request.validate_only:
            return self._ops.done_now(parent, deleted)
        self._supersede(request.name, "The service was deleted.")
        for table in (self._state.services, self._state.policies, self._state.serving, self._state.ports,
                      self._state.fail_next_revision, self._state.revision_counters):  # fmt: skip
            table.pop(request.name, None)
        await self._dataplane.withdraw(request.name)
        return self._ops.done_now(parent, deleted)

    # ------------------------------------------------------------ IAM RPCs

    async def get_iam_policy(self, request: iam_policy_pb2.GetIamPolicyRequest, context: object) -> policy_pb2.Policy:
        self._get(request.resource)
        return self._state.policies[request.resource]

    async def set_iam_policy(self, request: iam_policy_pb2.SetIamPolicyRequest, context: object) -> policy_pb2.Policy:
        self._get(request.resource)
        current = self._state.policies[request.resource]
        if request.policy.etag and request.policy.etag != current.etag:
            raise ApiError(grpc.StatusCode.ABORTED, ETAG_MISMATCH)
        # Like IAM, a user-managed service account must exist when it is bound; members the policy already holds
        # are not checked again (a deleted account's bindings were rewritten to deleted:serviceAccount:...).
        held = {m.lower() for b in current.bindings for m in b.members}
        accounts = self._state.service_accounts
        violations = []
        for i, binding in enumerate(request.policy.bindings):
            if reason := rules.check_role(binding.role):
                violations.append(Violation(f"policy.bindings[{i}].role", reason))
            for j, member in enumerate(binding.members):
                reason = rules.check_member(member)
                if reason is None and member.lower() not in held:
                    reason = rules.missing_account(member, accounts)
                if reason:
                    violations.append(Violation(f"policy.bindings[{i}].members[{j}]", reason))
        if violations:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "; ".join(v.description for v in violations), violations
            )
        policy = policy_pb2.Policy()
        policy.CopyFrom(request.policy)
        # Cloud Run keeps bindings with members only, merged per role, like IAM does.
        merged: dict[str, set[str]] = {}
        for binding in request.policy.bindings:
            merged.setdefault(binding.role, set()).update(binding.members)
        del policy.bindings[:]
        for role in sorted(merged):
            if merged[role]:
                policy.bindings.add(role=role, members=sorted(merged[role]))
        policy.version = 1
        policy.etag = secrets.token_bytes(8)
        self._state.policies[request.resource] = policy
        self._save()
        return policy

    async def test_iam_permissions(
        self, request: iam_policy_pb2.TestIamPermissionsRequest, context: object
    ) -> iam_policy_pb2.TestIamPermissionsResponse:
        self._get(request.resource)
        unknown = [p for p in request.permissions if p not in rules.ALL_RUN_PERMISSIONS]
        if unknown:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Permission {unknown[0]} is not valid for this resource.")
        email = self._caller()
        roles = set(self._state.project_roles.get(email, set()))
        members = rules.members_for(email)
        for binding in self._state.policies[request.resource].bindings:
            if members.intersection(binding.members):
                roles.add(binding.role)
        granted = rules.permissions_of(roles)
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=[p for p in request.permissions if p in granted])

    # ------------------------------------------------------------ admin API hooks

    def fail_next_revision(self, name: str, message: str) -> None:
        self._get(name)
        self._state.fail_next_revision[name] = message
        self._save()

    # ------------------------------------------------------------ internals

    def _save(self) -> None:
        self._state.save()

    def _get(self, name: str) -> run_v2.Service:
        service = self._state.services.get(name)
        if service is None:
            raise not_found(name)
        return service

    def _check(self, service: run_v2.Service, region: str, service_id: str) -> list[Violation]:
        found = rules.check_service(service, region)
        if service.template.revision and not service.template.revision.startswith(service_id + "-"):
            found.append(
                Violation("service.template.revision", f"Revision name must be prefixed by the name of the enclosing Service: {service_id}-.")
            )
        return found

    def _new_service(self, name: str, project: str, requested: run_v2.Service) -> run_v2.Service:
        service = _spec(requested)
        apply_defaults(service, project)
        now = _now()
        service.name = name
        service.uid = str(uuid.uuid4())
        service.generation = 1
        service.create_time = now
        service.update_time = now
        service.creator = self._caller()
        service.last_modifier = self._caller()
        service.etag = _etag()
        return service

    @staticmethod
    def _merge(existing: run_v2.Service, requested: run_v2.Service, paths: list[str]) -> run_v2.Service:
        """The desired service: the request's user fields (only the masked ones, with a mask) over the stored one."""
        if not paths or paths == ["*"]:
            spec = _spec(requested)
        else:
            bad = [p for p in paths if p.split(".")[0] not in USER_FIELDS]
            mask = field_mask_pb2.FieldMask(paths=paths)
            if bad or not mask.IsValidForDescriptor(run_v2.Service.pb().DESCRIPTOR):
                raise invalid("UpdateServiceRequest", [Violation("update_mask", f"Field {(bad or paths)[0]!r} cannot be updated.")])
            spec = _spec(existing)
            mask.MergeMessage(
                run_v2.Service.pb(requested), run_v2.Service.pb(spec), replace_message_field=True, replace_repeated_field=True
            )
        desired = _clone(existing)  # output-only fields stay as the server has them
        target = run_v2.Service.pb(desired)
        for f in target.DESCRIPTOR.fields:
            if f.name in USER_FIELDS:
                target.ClearField(f.name)
        target.MergeFrom(run_v2.Service.pb(spec))
        return desired

    def _start_reconcile(self, name: str, new_revision: bool) -> operations_pb2.Operation:
        service = self._state.services[name]
        self._supersede(name, "The operation was superseded by a newer update of the service.")
        service.reconciling = True
        service.terminal_condition = _condition("Ready", State_.CONDITION_RECONCILING, "Deploying revision.")
        service.conditions = [
            _condition("RoutesReady", State_.CONDITION_RECONCILING),
            _condition("ConfigurationsReady", State_.CONDITION_RECONCILING),
        ]
        parent = name.rsplit("/services/", 1)[0]
        op = self._ops.start(parent, service)
        self._state.pending[name] = {"operation": op.name, "newRevision": new_revision}
        self._save()
        self._schedule(name, op.name, new_revision)
        return op

    def _schedule(self, name: str, operation: str, new_revision: bool) -> None:
        self._tasks[name] = asyncio.create_task(self._reconcile(name, operation, new_revision), name=f"reconcile {name}")

    def _supersede(self, name: str, reason: str) -> None:
        """Stop an in-flight reconcile of `name` and fail its operation, as a newer write replaces it."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        pending = self._state.pending.pop(name, None)
        if pending is not None and name in self._state.services:
            status = status_pb2.Status(code=grpc.StatusCode.ABORTED.value[0], message=reason)
            self._ops.finish(pending["operation"], self._state.services[name], status)

    async def _reconcile(self, name: str, operation: str, new_revision: bool) -> None:
        try:
            await asyncio.sleep(self._state.reconcile_seconds)
            await self._settle(name, operation, new_revision)
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

    async def _settle(self, name: str, operation: str, new_revision: bool) -> None:
        service = self._state.services.get(name)
        if service is None:
            return
        project, region, service_id = rules.parse_service_name(name)  # type: ignore[misc]
        revision_name = service.latest_created_revision
        if new_revision or not revision_name:
            number = self._state.revision_counters.get(name, 0) + 1
            self._state.revision_counters[name] = number
            suffix = "".join(random.choices(string.ascii_lowercase, k=3))
            revision_id = service.template.revision or f"{service_id}-{number:05d}-{suffix}"
            revision_name = f"{name}/revisions/{revision_id}"
            service.latest_created_revision = revision_name
        failure = self._failure(name, service, project, region)
        service.observed_generation = service.generation
        service.reconciling = False
        service.update_time = _now()
        if failure is None:
            uri = await self._publish(name, service)
            self._state.serving[name] = _clone(service)
            service.latest_ready_revision = revision_name
            service.uri = uri
            service.urls = [uri]
            service.terminal_condition = _condition("Ready", State_.CONDITION_SUCCEEDED)
            service.conditions = [
                _condition("RoutesReady", State_.CONDITION_SUCCEEDED),
                _condition("ConfigurationsReady", State_.CONDITION_SUCCEEDED),
            ]
            error = None
        else:
            code, cause = failure
            message = f"Revision '{revision_name.rsplit('/', 1)[-1]}' is not ready and cannot serve traffic. {cause}"
            service.terminal_condition = _condition("Ready", State_.CONDITION_FAILED, message)
            service.conditions = [
                _condition("RoutesReady", State_.CONDITION_FAILED, message),
                _condition(
                    "ConfigurationsReady", State_.CONDITION_FAILED, message, reason=run_v2.Condition.CommonReason.REVISION_FAILED
                ),
            ]
            error = status_pb2.Status(code=code.value[0], message=message)
        self._set_traffic_statuses(service)
        self._state.pending.pop(name, None)
        self._ops.finish(operation, service, error)
        self._save()

    def _failure(self, name: str, service: run_v2.Service, project: str, region: str) -> tuple[grpc.StatusCode, str] | None:
        """Why the new revision cannot start: the admin API's injected failure, or the GPU quota."""
        if name in self._state.fail_next_revision:
            message = self._state.fail_next_revision.pop(name)
            port = _ingress_container(service.template).ports[0].container_port if _ingress_container(service.template).ports else DEFAULT_PORT
            return grpc.StatusCode.FAILED_PRECONDITION, message or CONTAINER_START_FAILURE.format(port=port)
        demand = rules.gpu_demand(service)
        if demand is None:
            return None
        in_use = 0
        for other, snapshot in self._state.serving.items():
            theirs = rules.gpu_demand(snapshot)
            if other == name or theirs is None or other not in self._state.services:
                continue
            p, r, _ = rules.parse_service_name(other)  # type: ignore[misc]
            if (p, r, theirs.zonal_redundancy) == (project, region, demand.zonal_redundancy):
                in_use += theirs.count
        limit = self._state.quotas.limit(project, region, demand.zonal_redundancy)
        if in_use + demand.count > limit:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, rules.quota_message(demand, in_use, limit)
        return None

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
        container = next((c for c in t.containers if rules.gpu_count(c) is not None), _ingress_container(t))
        endpoint = Endpoint(
            service_name=name,
            launcher_args=list(container.args),
            env={e.name: e.value for e in container.env if "value_source" not in e},
            concurrency=t.max_instance_request_concurrency or DEFAULT_CONCURRENCY,
            may_invoke=lambda email, _name=name: self.may_invoke(_name, email),
        )
        uri = await self._dataplane.publish(endpoint, port=self._state.ports.get(name))
        self._state.ports[name] = int(uri.rsplit(":", 1)[1].split("/")[0])
        return uri
