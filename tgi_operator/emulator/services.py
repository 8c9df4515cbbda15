"""`google.cloud.run.v2.Services`: Cloud Run services, their asynchronous reconcile and their IAM policies.

A write validates the request (rules.py, and the GPU quota at the request, gpu_quota.py), stores the
service with `reconciling=True` and returns an operation; reconcile.py then makes the revision (or deletes
the service), publishes the URL through the data plane, and completes the operation.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from collections.abc import Callable

import grpc
from google.cloud import run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2

from tgi_operator.emulator import gpu_quota, iam_policy, rules
from tgi_operator.emulator.access import Access
from tgi_operator.emulator.dataplane import DataPlane
from tgi_operator.emulator.errors import ApiError, invalid, not_found
from tgi_operator.emulator.operations import OperationBook
from tgi_operator.emulator.reconcile import Reconciler
from tgi_operator.emulator.rules import Violation
from tgi_operator.emulator.service_spec import USER_FIELDS, apply_defaults, keep_scaling
from tgi_operator.emulator.service_spec import clone as _clone
from tgi_operator.emulator.service_spec import new_etag as _etag
from tgi_operator.emulator.service_spec import now as _now
from tgi_operator.emulator.service_spec import spec as _spec
from tgi_operator.emulator.state import State
from tgi_operator.emulator.tables import offset_page

log = logging.getLogger(__name__)

ETAG_MISMATCH = "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."


class CloudRunServices:
    def __init__(
        self, state: State, operations: OperationBook, dataplane: DataPlane, caller: Callable[[], str], access: Access | None = None
    ) -> None:
        self._state = state
        self._access = access or Access(state, lambda: "")  # actAs, org policy, groups, account visibility
        self._ops = operations
        self._dataplane = dataplane
        self._caller = caller  # the identity writes are attributed to (creator, last_modifier, TestIamPermissions)
        self._reconciler = Reconciler(state, operations, dataplane, self.may_invoke)  # revisions, deletion

    # ------------------------------------------------------------ lifecycle

    async def resume(self) -> None:
        """After a restart: serve every ready service on its old port (a new one if that was taken meanwhile) and
        finish interrupted reconciles and deletes."""
        await self._reconciler.resume()

    async def close(self) -> None:
        await self._reconciler.close()

    # ------------------------------------------------------------ invocation rights (for the data plane)

    def may_invoke(self, name: str, email: str) -> bool:
        """run.routes.invoke: the service policy, `invoker_iam_disabled`, or a project-level role."""
        service = self._state.services.get(name)
        if service is None:
            return False
        if service.invoker_iam_disabled:
            return True
        members = self._access.members_for(email)  # groups included
        policy = self._state.policies.get(name, policy_pb2.Policy())
        for binding in policy.bindings:
            # Only unconditional bindings grant (assumption: the emulator does not evaluate CEL; stricter).
            if binding.role in rules.INVOKER_ROLES and not binding.HasField("condition") and members.intersection(binding.members):
                return True
        return bool(email) and bool(self._state.project_roles.get(email, set()) & rules.INVOKER_ROLES)

    # ------------------------------------------------------------ Services RPCs

    async def create_service(self, request: run_v2.CreateServiceRequest, context: object) -> operations_pb2.Operation:
        parsed = rules.parse_parent(request.parent)
        if parsed is None:
            raise invalid("CreateServiceRequest", [Violation("parent", "must be projects/{project}/locations/{location}.")])
        project, region = parsed
        violations = rules.check_service_id(request.service_id)
        violations += self._check(request.service, region, request.service_id) + self._quota(request.service, project, region)
        if violations:
            raise invalid("CreateServiceRequest", violations)
        self._check_runtime_identity(request.service, project)
        name = f"{request.parent}/services/{request.service_id}"
        if name in self._state.services:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Resource '{request.service_id}' already exists.")
        service = self._new_service(name, project, request.service)
        if request.validate_only:
            return self._ops.done_now(request.parent, service)
        self._state.services[name] = service
        self._state.policies[name] = policy_pb2.Policy(version=1, etag=secrets.token_bytes(8))
        return self._reconciler.start(name, new_revision=True, creating=True)

    async def get_service(self, request: run_v2.GetServiceRequest, context: object) -> run_v2.Service:
        return self._get(request.name)

    async def list_services(self, request: run_v2.ListServicesRequest, context: object) -> run_v2.ListServicesResponse:
        parsed = rules.parse_parent(request.parent)
        if parsed is None:
            raise invalid("ListServicesRequest", [Violation("parent", "must be projects/{project}/locations/{location}.")])
        project, region = parsed
        if request.page_size < 0:
            raise invalid("ListServicesRequest", [Violation("page_size", "must not be negative.")])
        after = base64.urlsafe_b64decode(request.page_token.encode()).decode() if request.page_token else ""
        # The project's (or the region's) names are one sorted run of the index: read this page of it, no more.
        prefix = f"projects/{project}/locations/" + ("" if region == "-" else f"{region}/services/")
        names = (
            n
            for n in self._state.service_names.starting_with(prefix, after)
            if (p := rules.parse_service_name(n)) and p[0] == project and region in ("-", p[1])
        )
        size = min(request.page_size or 100, 1000)
        page, more = offset_page(names, 0, size)
        token = base64.urlsafe_b64encode(page[-1].encode()).decode() if more else ""
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
            violations += self._quota(request.service, project, region)
            if violations:
                raise invalid("UpdateServiceRequest", violations)
            self._check_runtime_identity(request.service, project)
            service = self._new_service(name, project, request.service)
            parent = name.rsplit("/services/", 1)[0]
            if request.validate_only:
                return self._ops.done_now(parent, service)
            self._state.services[name] = service
            self._state.policies[name] = policy_pb2.Policy(version=1, etag=secrets.token_bytes(8))
            return self._reconciler.start(name, new_revision=True, creating=True)
        self._reconciler.check_writable(name)
        if request.service.etag and request.service.etag != existing.etag:
            raise ApiError(grpc.StatusCode.ABORTED, f"The etag {request.service.etag!r} does not match the current etag of {name}.")
        desired = self._merge(existing, request.service, list(request.update_mask.paths) if "update_mask" in request else [])
        keep_scaling(desired, existing)
        violations = self._check(desired, region, service_id) + self._quota(desired, project, region)
        if violations:
            raise invalid("UpdateServiceRequest", violations)
        self._check_runtime_identity(desired, project)
        apply_defaults(desired, project)
        self._reconciler.check_revision_name(name, desired.template)
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
        return self._reconciler.start(name, new_revision=new_revision)

    async def delete_service(self, request: run_v2.DeleteServiceRequest, context: object) -> operations_pb2.Operation:
        """Long-running, like Cloud Run: the service reads with delete_time until it is gone (reconcile.py)."""
        service = self._get(request.name)
        if self._reconciler.deleting(request.name):
            return self._reconciler.start_delete(request.name)  # the pending operation
        if request.etag and request.etag != service.etag:
            raise ApiError(grpc.StatusCode.ABORTED, f"The etag {request.etag!r} does not match the current etag of {request.name}.")
        if request.validate_only:
            deleted = _clone(service)
            deleted.delete_time = _now()
            return self._ops.done_now(request.name.rsplit("/services/", 1)[0], deleted)
        return self._reconciler.start_delete(request.name)

    # ------------------------------------------------------------ IAM RPCs

    async def get_iam_policy(self, request: iam_policy_pb2.GetIamPolicyRequest, context: object) -> policy_pb2.Policy:
        self._get(request.resource)
        version = request.options.requested_policy_version
        if bad := iam_policy.check_requested_version(version):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, bad.description, [bad])
        return iam_policy.view(self._state.policies[request.resource], version)

    async def set_iam_policy(self, request: iam_policy_pb2.SetIamPolicyRequest, context: object) -> policy_pb2.Policy:
        self._get(request.resource)
        self._reconciler.check_writable(request.resource)  # a service being deleted takes no writes
        current = self._state.policies[request.resource]
        if request.policy.etag and request.policy.etag != current.etag:
            raise ApiError(grpc.StatusCode.ABORTED, ETAG_MISMATCH)
        # Like IAM, a user-managed service account must exist (and be visible: IAM is eventually consistent) when it
        # is bound; members the policy already holds are not checked again (a deleted account's bindings were
        # rewritten to deleted:serviceAccount:...).
        held = {m.lower() for b in current.bindings for m in b.members}
        accounts = self._access.visible_account_names()
        violations = iam_policy.check_write(request.policy, current)
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
        added = {m for b in request.policy.bindings for m in b.members if m.lower() not in held}
        project = request.resource.split("/")[1]
        if refused := self._access.domain_violations(project, sorted(added)):
            raise refused
        # Cloud Run keeps bindings with members only, merged per (role, condition), like IAM does.
        policy = iam_policy.merged(request.policy)
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
        members = self._access.members_for(email)
        for binding in self._state.policies[request.resource].bindings:
            if not binding.HasField("condition") and members.intersection(binding.members):  # as may_invoke
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

    def _check_runtime_identity(self, service: run_v2.Service, project: str) -> None:
        """Every deploy needs actAs on the revision's identity (the default compute account when unset); a missing or
        still-propagating user-managed account gets the same PERMISSION_DENIED (see access.Access.check_act_as)."""
        email = service.template.service_account or f"{rules.project_number(project)}-compute@developer.gserviceaccount.com"
        self._access.check_act_as(email)

    def _quota(self, service: run_v2.Service, project: str, region: str) -> list[Violation]:
        """The GPU quota at the request: the service's own ceiling must fit its pool (gpu_quota.py)."""
        found = gpu_quota.request_violation(service, self._state.quotas, project, region)
        return [found] if found else []

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
