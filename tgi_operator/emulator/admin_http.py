"""The emulator's HTTP admin API for tests, benchmarks and the demo (documented in README.md).

Everything lives under /emulator/v1 on the HTTP port, next to the metadata-server routes.
Bodies are JSON and validated with pydantic; a bad body is a 400 with {"error": ...}.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.cloud import run_v2
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tgi_operator.emulator.access import API_TITLES, IAM_PERMISSIONS
from tgi_operator.emulator.calls import Fault
from tgi_operator.emulator.errors import ApiError, code_from_name

if TYPE_CHECKING:
    from tgi_operator.emulator.server import Emulator

PREFIX = "/emulator/v1"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FaultBody(_Body):
    method: str = Field(min_length=1)
    code: str | int
    count: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, gt=0, le=1)
    message: str = "Injected fault (emulator)."

    @model_validator(mode="after")
    def _one_of(self) -> FaultBody:
        if (self.count is None) == (self.rate is None):
            raise ValueError("give exactly one of count and rate")
        return self


class SecondsBody(_Body):
    seconds: float = Field(ge=0, le=3600)


class FailBody(_Body):
    message: str = ""


class QuotaBody(_Body):
    project: str | None = None  # None: change the default for every project and region
    region: str | None = None
    zonal_redundancy: bool = Field(alias="zonalRedundancy")
    limit: int = Field(ge=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> QuotaBody:
        if (self.project is None) != (self.region is None):
            raise ValueError("give both project and region, or neither for the default")
        return self


class ProjectRolesBody(_Body):
    email: str = Field(min_length=3)
    roles: list[str]


class SecretAccessorsBody(_Body):
    secret: str = Field(pattern=r"^projects/[^/]+/secrets/[^/]+$")
    accounts: list[str]  # emails granted roles/secretmanager.secretAccessor on the secret; empty: none


class TokenBody(_Body):
    email: str = Field(min_length=3)
    audience: str = Field(min_length=1)
    lifetime_seconds: int = Field(default=3600, alias="lifetimeSeconds", ge=1, le=86400)


class IdentityBody(_Body):
    email: str = Field(min_length=3)
    project_id: str | None = Field(default=None, alias="projectId")


class PermissionsBody(_Body):
    permissions: list[str]

    @field_validator("permissions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        if unknown := sorted(set(value) - IAM_PERMISSIONS):
            raise ValueError(f"unknown permissions {unknown}; known: {sorted(IAM_PERMISSIONS)}")
        return value


class ActAsBody(_Body):
    email: str = Field(min_length=3)
    allowed: bool


class ApiBody(_Body):
    project: str = Field(min_length=1)
    service: str
    enabled: bool

    @field_validator("service")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in API_TITLES:
            raise ValueError(f"service must be one of {sorted(API_TITLES)}")
        return value


class OrgPolicyBody(_Body):
    project: str = Field(min_length=1)
    allowed_domains: list[str] | None = Field(default=None, alias="allowedDomains")  # empty or null: no policy


class GroupBody(_Body):
    group: str = Field(min_length=3)
    members: list[str]

    @field_validator("members")
    @classmethod
    def _principals(cls, value: list[str]) -> list[str]:
        if bad := [m for m in value if not m.startswith(("user:", "serviceAccount:"))]:
            raise ValueError(f"members must be user:EMAIL or serviceAccount:EMAIL, got {bad}")
        return value


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.json() if request.can_read_body else {}
        return model.model_validate(raw)
    except (json.JSONDecodeError, ValidationError) as error:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(error)}), content_type="application/json") from None


def add_admin_routes(app: web.Application, emulator: Emulator) -> None:
    state, calls = emulator.state, emulator.calls

    async def get_calls(request: web.Request) -> web.Response:
        return web.json_response({"calls": calls.snapshot()})

    async def reset_calls(request: web.Request) -> web.Response:
        calls.reset()
        return web.json_response({"calls": {}})

    async def get_audit(request: web.Request) -> web.Response:
        return web.json_response({"entries": list(calls.audit)})

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_json() for f in calls.faults]})

    async def add_fault(request: web.Request) -> web.Response:
        body: FaultBody = await _body(request, FaultBody)
        try:
            code = code_from_name(body.code)
        except ValueError as error:
            return _error(400, str(error))
        fault = Fault(method=body.method, code=code, count=body.count, rate=body.rate, message=body.message)
        calls.faults.append(fault)
        return web.json_response(fault.to_json(), status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        calls.faults.clear()
        return web.json_response({"faults": []})

    async def get_reconcile(request: web.Request) -> web.Response:
        return web.json_response({"seconds": state.reconcile_seconds})

    async def put_reconcile(request: web.Request) -> web.Response:
        body: SecondsBody = await _body(request, SecondsBody)
        state.reconcile_seconds = body.seconds
        state.save()
        return web.json_response({"seconds": state.reconcile_seconds})

    async def fail_next_revision(request: web.Request) -> web.Response:
        body: FailBody = await _body(request, FailBody)
        m = request.match_info
        name = f"projects/{m['project']}/locations/{m['region']}/services/{m['service']}"
        try:
            emulator.services.fail_next_revision(name, body.message)
        except ApiError as error:
            return _error(404, error.message)
        return web.json_response({"service": name, "message": body.message})

    async def get_quotas(request: web.Request) -> web.Response:
        return web.json_response(state.quotas.to_json())

    async def put_quota(request: web.Request) -> web.Response:
        body: QuotaBody = await _body(request, QuotaBody)
        if body.project is None or body.region is None:
            if body.zonal_redundancy:
                state.quotas.default_zonal = body.limit
            else:
                state.quotas.default_no_zonal = body.limit
        else:
            state.quotas.limits[(body.project, body.region, body.zonal_redundancy)] = body.limit
        state.save()
        return web.json_response(state.quotas.to_json())

    def replace_set(table: dict[str, set[str]], key: str, values: list[str], label: str) -> web.Response:
        """`table[key]` becomes `values` (none: the key goes), saved; answers the whole table under `label`."""
        if values:
            table[key] = set(values)
        else:
            table.pop(key, None)
        state.save()
        return web.json_response({label: {k: sorted(v) for k, v in table.items()}})

    async def get_roles(request: web.Request) -> web.Response:
        return web.json_response({"projectRoles": {e: sorted(r) for e, r in state.project_roles.items()}})

    async def put_roles(request: web.Request) -> web.Response:
        body: ProjectRolesBody = await _body(request, ProjectRolesBody)
        return replace_set(state.project_roles, body.email, body.roles, "projectRoles")

    async def get_secret_accessors(request: web.Request) -> web.Response:
        return web.json_response({"secretAccessors": {k: sorted(m) for k, m in state.secret_accessors.items()}})

    async def put_secret_accessors(request: web.Request) -> web.Response:
        body: SecretAccessorsBody = await _body(request, SecretAccessorsBody)
        return replace_set(state.secret_accessors, body.secret, body.accounts, "secretAccessors")

    async def mint_token(request: web.Request) -> web.Response:
        body: TokenBody = await _body(request, TokenBody)
        token = emulator.issuer.mint(body.email, body.audience, body.lifetime_seconds)
        return web.json_response({"token": token})

    async def get_identity(request: web.Request) -> web.Response:
        return web.json_response({"email": emulator.identity.email, "projectId": emulator.identity.project_id})

    async def put_identity(request: web.Request) -> web.Response:
        body: IdentityBody = await _body(request, IdentityBody)
        emulator.identity.email = body.email
        if body.project_id:
            emulator.identity.project_id = body.project_id
        return await get_identity(request)

    async def get_propagation(request: web.Request) -> web.Response:
        return web.json_response({"seconds": state.iam_propagation_seconds})

    async def put_propagation(request: web.Request) -> web.Response:
        body: SecondsBody = await _body(request, SecondsBody)
        state.iam_propagation_seconds = body.seconds
        state.save()
        return await get_propagation(request)

    async def get_denied(request: web.Request) -> web.Response:
        return web.json_response({"permissions": sorted(state.iam_denied)})

    async def put_denied(request: web.Request) -> web.Response:
        body: PermissionsBody = await _body(request, PermissionsBody)
        state.iam_denied = set(body.permissions)
        state.save()
        return await get_denied(request)

    async def get_act_as(request: web.Request) -> web.Response:
        return web.json_response({"denied": sorted(state.act_as_denied)})

    async def put_act_as(request: web.Request) -> web.Response:
        body: ActAsBody = await _body(request, ActAsBody)
        if body.allowed:
            state.act_as_denied.discard(body.email.lower())
        else:
            state.act_as_denied.add(body.email.lower())
        state.save()
        return await get_act_as(request)

    async def get_apis(request: web.Request) -> web.Response:
        return web.json_response({"disabled": {p: sorted(s) for p, s in sorted(state.disabled_apis.items()) if s}})

    async def put_api(request: web.Request) -> web.Response:
        body: ApiBody = await _body(request, ApiBody)
        disabled = state.disabled_apis.setdefault(body.project, set())
        if body.enabled:
            disabled.discard(body.service)
        else:
            disabled.add(body.service)
        if not disabled:
            del state.disabled_apis[body.project]
        state.save()
        return await get_apis(request)

    async def get_org_policy(request: web.Request) -> web.Response:
        return web.json_response({"allowedDomains": dict(sorted(state.allowed_domains.items()))})

    async def put_org_policy(request: web.Request) -> web.Response:
        body: OrgPolicyBody = await _body(request, OrgPolicyBody)
        if body.allowed_domains:
            state.allowed_domains[body.project] = sorted({d.lower() for d in body.allowed_domains})
        else:
            state.allowed_domains.pop(body.project, None)
        state.save()
        return await get_org_policy(request)

    async def get_groups(request: web.Request) -> web.Response:
        return web.json_response({"groups": {g: sorted(m) for g, m in sorted(state.groups.items())}})

    async def put_group(request: web.Request) -> web.Response:
        body: GroupBody = await _body(request, GroupBody)
        group = body.group.removeprefix("group:")
        if body.members:
            state.groups[group] = set(body.members)
        else:
            state.groups.pop(group, None)
        state.save()
        return await get_groups(request)

    async def dump_services(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "services": [json.loads(run_v2.Service.to_json(s)) for _, s in sorted(state.services.items())],
                "policies": {n: json_format.MessageToDict(p) for n, p in sorted(state.policies.items())},
            }
        )

    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]]]] = [
        ("GET", "/calls", get_calls),
        ("DELETE", "/calls", reset_calls),
        ("GET", "/audit", get_audit),
        ("GET", "/faults", get_faults),
        ("POST", "/faults", add_fault),
        ("DELETE", "/faults", clear_faults),
        ("GET", "/reconcile-seconds", get_reconcile),
        ("PUT", "/reconcile-seconds", put_reconcile),
        ("POST", "/services/{project}/{region}/{service}:fail-next-revision", fail_next_revision),
        ("GET", "/services", dump_services),
        ("GET", "/quotas", get_quotas),
        ("PUT", "/quotas", put_quota),
        ("GET", "/project-roles", get_roles),
        ("PUT", "/project-roles", put_roles),
        ("GET", "/secret-accessors", get_secret_accessors),
        ("PUT", "/secret-accessors", put_secret_accessors),
        ("POST", "/tokens", mint_token),
        ("GET", "/identity", get_identity),
        ("PUT", "/identity", put_identity),
        ("GET", "/iam-propagation-seconds", get_propagation),
        ("PUT", "/iam-propagation-seconds", put_propagation),
        ("GET", "/iam-denied", get_denied),
        ("PUT", "/iam-denied", put_denied),
        ("GET", "/act-as", get_act_as),
        ("PUT", "/act-as", put_act_as),
        ("GET", "/apis", get_apis),
        ("PUT", "/apis", put_api),
        ("GET", "/org-policy", get_org_policy),
        ("PUT", "/org-policy", put_org_policy),
        ("GET", "/groups", get_groups),
        ("PUT", "/groups", put_group),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, handler)
