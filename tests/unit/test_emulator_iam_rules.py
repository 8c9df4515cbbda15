"""The emulator's IAM rules as pure functions: policy versions and conditions, the organization's domain
restriction, account visibility, disabled APIs, actAs and groups (access.py, iam_policy.py, rules.py)."""

from __future__ import annotations

import grpc
import pytest
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2
from google.type import expr_pb2

from tgi_operator.emulator import iam_policy, rules
from tgi_operator.emulator.access import Access, service_disabled
from tgi_operator.emulator.errors import ApiError
from tgi_operator.emulator.state import State

COND = expr_pb2.Expr(title="until 2030", expression='request.time < timestamp("2030-01-01T00:00:00Z")')
APP = "app-caller@p1.iam.gserviceaccount.com"


def _policy(*bindings: tuple[str, list[str], expr_pb2.Expr | None], version: int = 1) -> policy_pb2.Policy:
    policy = policy_pb2.Policy(version=version)
    for role, members, condition in bindings:
        b = policy.bindings.add(role=role, members=members)
        if condition is not None:
            b.condition.CopyFrom(condition)
    return policy


# ---------------------------------------------------------------- organization policy (domains)


@pytest.mark.parametrize(
    ("member", "outside"),
    [
        ("user:a@example.com", False),
        ("user:a@EXAMPLE.com", False),
        ("group:ml@example.com", False),
        ("domain:example.com", False),
        ("user:a@other.com", True),
        ("user:a@sub.example.com", True),  # exact domains only
        ("group:ml@other.com", True),
        ("domain:other.com", True),
        ("allUsers", True),
        ("allAuthenticatedUsers", True),
        ("principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s", True),
        (f"serviceAccount:{APP}", False),
        (f"deleted:serviceAccount:{APP}?uid=1", False),
    ],
)
def test_outside_domains(member: str, outside: bool) -> None:
    assert rules.outside_domains(member, ["example.com"]) is outside


# ---------------------------------------------------------------- roles


def test_run_developer_may_invoke() -> None:
    assert "roles/run.developer" in rules.INVOKER_ROLES
    assert "run.routes.invoke" in rules.permissions_of({"roles/run.developer"})
    assert "run.routes.invoke" not in rules.permissions_of({"roles/run.viewer"})
    assert rules.check_role("roles/run.developer") is None


# ---------------------------------------------------------------- policy versions and conditions


@pytest.mark.parametrize(
    ("new", "stored", "fields"),
    [
        (_policy(("roles/run.invoker", ["allUsers"], None)), _policy(), []),
        (_policy(("roles/run.invoker", ["allUsers"], COND), version=3), _policy(), []),
        (_policy(version=2), _policy(), ["policy.version"]),
        (_policy(("roles/run.invoker", ["allUsers"], COND), version=1), _policy(), ["policy.bindings[0].condition"]),
        (_policy(("roles/run.invoker", ["allUsers"], COND), version=0), _policy(), ["policy.bindings[0].condition"]),
        # Any write over a conditional policy must be at version 3, even one that drops the conditions.
        (_policy(("roles/run.invoker", ["allUsers"], None)), _policy(("roles/run.invoker", ["allUsers"], COND), version=3), ["policy.version"]),
        (_policy(version=3), _policy(("roles/run.invoker", ["allUsers"], COND), version=3), []),
        (
            _policy(("roles/run.invoker", ["allUsers"], COND), ("roles/run.viewer_withcond_0123456789abcdef0123", ["allUsers"], None), version=3),
            _policy(),
            ["policy.bindings"],
        ),
        (
            _policy(("roles/run.invoker", ["allUsers"], expr_pb2.Expr(expression="true")), version=3),
            _policy(),
            ["policy.bindings[0].condition.title"],
        ),
        (
            _policy(("roles/run.invoker", ["allUsers"], expr_pb2.Expr(title="t", expression=" ")), version=3),
            _policy(),
            ["policy.bindings[0].condition.expression"],
        ),
    ],
)
def test_check_write(new: policy_pb2.Policy, stored: policy_pb2.Policy, fields: list[str]) -> None:
    assert [v.field for v in iam_policy.check_write(new, stored)] == fields


def test_lower_version_over_conditional_policy_message() -> None:
    stored = _policy(("roles/run.invoker", ["allUsers"], COND), version=3)
    [violation] = iam_policy.check_write(_policy(version=1), stored)
    assert violation.description == (
        "Specified policy version (1) cannot be less than the existing policy version (3). "
        "For more information, please refer to https://cloud.google.com/iam/docs/policies#versions."
    )


@pytest.mark.parametrize(("version", "ok"), [(0, True), (1, True), (3, True), (2, False), (4, False), (-1, False)])
def test_requested_policy_version(version: int, ok: bool) -> None:
    assert (iam_policy.check_requested_version(version) is None) is ok


def test_version_1_view_hides_conditions_behind_withcond_roles() -> None:
    stored = _policy(("roles/run.invoker", ["user:a@example.com"], COND), ("roles/run.viewer", ["allUsers"], None), version=3)
    shown = iam_policy.view(stored, 1)
    assert shown.version == 1 and not any(b.HasField("condition") for b in shown.bindings)
    role = shown.bindings[0].role
    assert role.startswith("roles/run.invoker_withcond_") and len(role.rsplit("_", 1)[1]) == 20
    assert shown.bindings[1].role == "roles/run.viewer"
    assert iam_policy.view(stored, 0) == shown  # unset is version 0: the same view
    assert iam_policy.view(stored, 3) == stored
    assert stored.bindings[0].HasField("condition")  # the stored policy is not changed
    other = _policy(("roles/run.invoker", ["user:a@example.com"], expr_pb2.Expr(title="x", expression="false")), version=3)
    assert iam_policy.view(other, 1).bindings[0].role != role  # the hash follows the condition


def test_merged_per_role_and_condition() -> None:
    new = _policy(
        ("roles/run.invoker", ["user:b@example.com"], None),
        ("roles/run.invoker", ["user:a@example.com"], COND),
        ("roles/run.invoker", ["user:a@example.com", "user:b@example.com"], None),
        ("roles/run.invoker", ["user:c@example.com"], COND),
        ("roles/run.viewer", [], None),
        version=3,
    )
    policy = iam_policy.merged(new)
    assert [(b.role, list(b.members), b.HasField("condition")) for b in policy.bindings] == [
        ("roles/run.invoker", ["user:a@example.com", "user:b@example.com"], False),
        ("roles/run.invoker", ["user:a@example.com", "user:c@example.com"], True),
    ]
    assert policy.version == 3
    assert iam_policy.merged(_policy(("roles/run.invoker", ["allUsers"], None), version=3)).version == 1


# ---------------------------------------------------------------- access: visibility, APIs, actAs, groups


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _access(**state: object) -> tuple[Access, State, Clock]:
    s = State(**state)  # type: ignore[arg-type]
    clock = Clock()
    return Access(s, lambda: "caller-project", clock), s, clock


def test_new_account_is_invisible_while_it_propagates() -> None:
    access, state, clock = _access(iam_propagation_seconds=2.0)
    state.service_accounts[APP] = iam_admin_v1.ServiceAccount(email=APP)
    access.created(APP)
    assert not access.visible(APP) and access.visible_accounts() == set()
    clock.now += 1.99
    assert not access.visible(APP)
    clock.now += 0.01
    assert access.visible(APP) and access.visible_accounts() == {APP}
    access.forget(APP)
    assert access.visible(APP)  # an account without a creation time (an older state file) is visible


@pytest.mark.parametrize(
    ("method", "request_", "api"),
    [
        ("google.cloud.run.v2.Services/CreateService", run_v2.CreateServiceRequest(parent="projects/p1/locations/r"), "run.googleapis.com"),
        ("google.cloud.run.v2.Services/UpdateService", run_v2.UpdateServiceRequest(service=run_v2.Service(name="projects/p1/locations/r/services/s")), "run.googleapis.com"),
        ("google.cloud.run.v2.Services/GetIamPolicy", iam_policy_pb2.GetIamPolicyRequest(resource="projects/p1/locations/r/services/s"), "run.googleapis.com"),
        ("google.longrunning.Operations/GetOperation", operations_pb2.GetOperationRequest(name="projects/p1/locations/r/operations/o"), "run.googleapis.com"),
        ("google.iam.admin.v1.IAM/CreateServiceAccount", iam_admin_v1.CreateServiceAccountRequest(name="projects/p1"), "iam.googleapis.com"),
    ],
)
def test_api_gate(method: str, request_: object, api: str) -> None:
    access, state, _ = _access()
    access.api_gate(method, request_)  # enabled: passes
    other = "iam.googleapis.com" if api == "run.googleapis.com" else "run.googleapis.com"
    state.disabled_apis["p1"] = {other}
    access.api_gate(method, request_)  # another API disabled: passes
    state.disabled_apis["p2"] = {api}
    access.api_gate(method, request_)  # another project: passes
    state.disabled_apis["p1"] = {api}
    with pytest.raises(ApiError) as caught:
        access.api_gate(method, request_)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    [info, _help] = caught.value.details
    assert (info.reason, info.domain, info.metadata["service"], info.metadata["consumer"]) == ("SERVICE_DISABLED", "googleapis.com", api, "projects/p1")


def test_api_gate_any_project_means_the_callers() -> None:
    access, state, _ = _access(disabled_apis={"caller-project": {"iam.googleapis.com"}})
    with pytest.raises(ApiError):
        access.api_gate("google.iam.admin.v1.IAM/GetServiceAccount", iam_admin_v1.GetServiceAccountRequest(name=f"projects/-/serviceAccounts/{APP}"))


def test_service_disabled_message() -> None:
    error = service_disabled("run.googleapis.com", "p1")
    url = "https://console.developers.google.com/apis/api/run.googleapis.com/overview?project=p1"
    assert error.message == (
        f"Cloud Run Admin API has not been used in project p1 before or it is disabled. Enable it by visiting {url} then "
        "retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
    )
    info, help_ = error.details
    assert dict(info.metadata) == {
        "service": "run.googleapis.com", "consumer": "projects/p1", "activationUrl": url,
        "serviceTitle": "Cloud Run Admin API", "containerInfo": "p1",
    }  # fmt: skip
    assert isinstance(help_, error_details_pb2.Help) and help_.links[0].url == url
    assert service_disabled("iam.googleapis.com", "p1").message.startswith("Identity and Access Management (IAM) API has not")


def _act_as_denied(access: Access, email: str) -> bool:
    try:
        access.check_act_as(email)
    except ApiError as error:
        assert error.code == grpc.StatusCode.PERMISSION_DENIED
        assert error.message == f"Permission 'iam.serviceaccounts.actAs' denied on service account {email} (or it may not exist)."
        assert error.details[0].metadata["permission"] == "iam.serviceaccounts.actAs"
        return True
    return False


def test_act_as() -> None:
    access, state, clock = _access(iam_propagation_seconds=1.0)
    default = "123456789012-compute@developer.gserviceaccount.com"
    assert _act_as_denied(access, APP)  # missing
    state.service_accounts[APP] = iam_admin_v1.ServiceAccount(email=APP)
    access.created(APP)
    assert _act_as_denied(access, APP)  # propagating
    clock.now += 1
    assert not _act_as_denied(access, APP) and not _act_as_denied(access, default)
    state.act_as_denied.add(APP)
    assert _act_as_denied(access, APP) and not _act_as_denied(access, default)
    state.act_as_denied.clear()
    state.iam_denied.add("iam.serviceAccounts.actAs")
    assert _act_as_denied(access, APP) and _act_as_denied(access, default)


def test_domain_violations() -> None:
    access, state, _ = _access()
    assert access.domain_violations("p1", ["allUsers"]) is None  # no policy
    state.allowed_domains["p1"] = ["example.com"]
    assert access.domain_violations("p1", ["user:a@example.com", f"serviceAccount:{APP}"]) is None
    error = access.domain_violations("p1", ["user:a@example.com", "user:b@other.com", "allUsers"])
    assert error is not None and error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.message.startswith("One or more users named in the policy do not belong to a permitted customer")
    [failure] = error.details
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        ("constraints/iam.allowedPolicyMemberDomains", "orgpolicy:projects/p1?configvalue=b@other.com", "User b@other.com is not in permitted organization."),
        ("constraints/iam.allowedPolicyMemberDomains", "orgpolicy:projects/p1?configvalue=allUsers", "User allUsers is not in permitted organization."),
    ]
    assert access.domain_violations("p2", ["allUsers"]) is None  # per project


def test_members_for_includes_groups() -> None:
    access, state, _ = _access(groups={"ml@example.com": {"user:a@example.com"}, "ops@example.com": {f"serviceAccount:{APP}"}})
    assert "group:ml@example.com" in access.members_for("a@example.com")
    assert "group:ops@example.com" not in access.members_for("a@example.com")
    assert "group:ops@example.com" in access.members_for(APP)
    assert access.members_for("") == {"allUsers"}
