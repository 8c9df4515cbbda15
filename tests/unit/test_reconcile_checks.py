"""reconcile.py's checks that need no cloud call: stored spec, operator policy, target project."""

from __future__ import annotations

from typing import Any

import pytest

from tgi_operator.models import TGIServiceSpec, parse_spec
from tgi_operator.naming import service_id
from tgi_operator.reconcile import ObjectRef, Stall, check_policy, checked_spec, resolve_target
from tgi_operator.render import Target
from tgi_operator.settings import Settings

VALID: dict[str, Any] = {"region": "us-central1", "model": {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"}}
SERVICE_ID = service_id("team-a", "llama-8b")


def settings(**values: Any) -> Settings:
    """Settings given explicitly (init arguments win over any TGI_OPERATOR_* in the environment)."""
    values = {"default_project": None, "allowed_projects": [], "allowed_regions": [], "allow_public_services": False} | values
    return Settings(**values)


def obj(spec: dict[str, Any], *, namespace: str = "team-a", name: str = "llama-8b") -> ObjectRef:
    return ObjectRef(namespace=namespace, name=name, generation=1, spec=spec, status={})


def spec_with(**overrides: Any) -> dict[str, Any]:
    return VALID | overrides


# ----------------------------------------------------------------------------------------- checked_spec


def test_a_valid_stored_spec_is_parsed() -> None:
    spec = checked_spec(obj(spec_with(project="my-project")))
    assert isinstance(spec, TGIServiceSpec)
    assert spec.project == "my-project"
    assert spec.scaling.concurrency == 64  # defaults applied like the API server would


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        (spec_with(model={"id": "not-a-repo"}), "spec.model.id", "Hugging Face repository id"),
        ({"model": VALID["model"]}, "spec.region", "required"),
        (spec_with(model={"id": "a/b", "quantize": "awq", "dtype": "float16"}), "spec.model", "dtype must not be set together with quantize"),
        (spec_with(env=[{"name": "PORT", "value": "9000"}]), "spec.env[0].name", "env name must not be"),
        (spec_with(env=[{"name": "A", "value": "x"}, {"name": "API_KEY"}]), "spec.env[1]", "set exactly one of value (a literal) or valueFrom"),
        (spec_with(replicas=2), "spec.replicas", "not permitted"),
        (spec_with(access={"invokers": ["allUsers"]}), "spec.access.invokers[0]", "set access.public: true"),
        (spec_with(resources={"cpu": "8.5"}), "spec.resources", "one of 4, 6, 8"),
        (spec_with(resources={"memory": "64Gi"}), "spec.resources", "memory must be between 16Gi and 32Gi"),
        (spec_with(scaling={"minInstances": 4, "maxInstances": 3}), "spec.scaling", "minInstances must not exceed maxInstances"),
        (spec_with(region="us-west1"), "spec", "region must be one that offers nvidia-l4"),
        (spec_with(suspend="yes"), "spec.suspend", "boolean"),
    ],
)
def test_an_invalid_stored_spec_stalls_naming_the_field(spec: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(Stall) as caught:
        checked_spec(obj(spec))
    problem = caught.value.problem
    assert problem.reason == "InvalidSpec"
    assert problem.message.startswith(f"{field}: "), problem.message
    assert text.lower() in problem.message.lower()


def test_every_problem_of_a_spec_is_reported() -> None:
    with pytest.raises(Stall) as caught:
        checked_spec(obj({"region": "us-central1", "model": {"id": "nope"}, "replicas": 2}))
    fields = [part.split(":", 1)[0] for part in caught.value.problem.message.split("; ")]
    assert sorted(fields) == ["spec.model.id", "spec.replicas"]


# ----------------------------------------------------------------------------------------- check_policy


def where(project: str = "my-project", region: str = "us-central1") -> Target:
    return Target(project, region, "team-a-llama-8b")


@pytest.mark.parametrize(
    ("spec", "target", "policy", "reason", "field"),
    [
        (spec_with(), where("other-project"), {"allowed_projects": ["my-project", "ml-prod"]}, "ProjectNotAllowed", "spec.project"),
        (
            spec_with(region="europe-west4"),
            where(region="europe-west4"),
            {"allowed_regions": ["us-central1"]},
            "RegionNotAllowed",
            "spec.region",
        ),
        (spec_with(image="docker.io/someone/tgi:latest"), where(),
         {"allowed_image_prefixes": ["us-docker.pkg.dev/deeplearning-platform-release/"]}, "ImageNotAllowed", "spec.image"),
        (spec_with(serviceAccount="admin@my-project.iam.gserviceaccount.com"), where(),
         {"allowed_service_accounts": ["tgi-runtime@my-project.iam.gserviceaccount.com"]},
         "ServiceAccountNotAllowed", "spec.serviceAccount"),
        (spec_with(), where(), {"allowed_service_accounts": ["tgi-runtime@my-project.iam.gserviceaccount.com"]},
         "ServiceAccountNotAllowed", "spec.serviceAccount"),  # the default compute identity is not on the list
        (spec_with(model={"id": "org/model", "hfTokenSecret": {"secret": "projects/other/secrets/hf"}}), where(), {},
         "SecretNotAllowed", "spec.model.hfTokenSecret.secret"),
        (spec_with(env=[{"name": "A", "value": "x"}, {"name": "API_KEY", "valueFrom": {"secret": "projects/other/secrets/k"}}]),
         where(), {}, "SecretNotAllowed", "spec.env[1].valueFrom.secret"),
    ],
)
def test_policy_refusals_name_the_field(
    spec: dict[str, Any], target: Target, policy: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(Stall) as caught:
        check_policy(parse_spec(spec), target, settings(**policy))
    assert caught.value.problem.reason == reason
    assert caught.value.problem.message.startswith(f"{field}: ")


@pytest.mark.parametrize(("public", "allowed", "refused"), [(True, False, True), (True, True, False), (False, False, False)])
def test_public_is_refused_unless_allowed(public: bool, allowed: bool, refused: bool) -> None:
    from tgi_operator.reconcile import PUBLIC_REFUSED, public_refused

    spec = parse_spec(spec_with(access={"public": public}))
    assert public_refused(spec, settings(allow_public_services=allowed)) is refused
    assert PUBLIC_REFUSED.message.startswith("spec.access.public: ")


def test_a_refused_project_message_lists_the_allowed_ones() -> None:
    with pytest.raises(Stall) as caught:
        check_policy(parse_spec(spec_with()), where("other-project"), settings(allowed_projects=["my-project", "ml-prod"]))
    assert "other-project" in caught.value.problem.message
    assert "my-project, ml-prod" in caught.value.problem.message


@pytest.mark.parametrize(
    ("spec", "target", "policy"),
    [
        (spec_with(), where(), {}),  # empty lists allow any project and region
        (spec_with(), where(), {"allowed_projects": ["my-project"], "allowed_regions": ["us-central1", "us-east4"]}),
        (spec_with(access={"public": True}), where(), {"allow_public_services": True}),
        (spec_with(access={"invokers": ["group:ml@example.com"], "createInvokerServiceAccount": True}), where(), {}),
        (spec_with(model={"id": "org/model", "hfTokenSecret": {"secret": "projects/my-project/secrets/hf"}}), where(), {}),
        (spec_with(model={"id": "org/model", "hfTokenSecret": {"secret": "hf"}}), where(), {}),
        (spec_with(env=[{"name": "API_KEY", "valueFrom": {"secret": "projects/my-project/secrets/k", "version": "3"}},
                        {"name": "OTHER_KEY", "valueFrom": {"secret": "k"}}]), where(), {}),
        (spec_with(serviceAccount="tgi-runtime@my-project.iam.gserviceaccount.com"), where(),
         {"allowed_service_accounts": ["tgi-runtime@my-project.iam.gserviceaccount.com"]}),
    ],
)
def test_policy_allows(spec: dict[str, Any], target: Target, policy: dict[str, Any]) -> None:
    check_policy(parse_spec(spec), target, settings(**policy))  # no Stall


def test_allowed_lists_read_from_the_environment_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGI_OPERATOR_ALLOWED_PROJECTS", "my-project, ml-prod")
    monkeypatch.setenv("TGI_OPERATOR_ALLOWED_REGIONS", "us-central1")
    monkeypatch.delenv("TGI_OPERATOR_ALLOW_PUBLIC_SERVICES", raising=False)
    from_env = Settings()
    check_policy(parse_spec(spec_with()), where("ml-prod"), from_env)
    with pytest.raises(Stall, match="spec.region"):
        check_policy(parse_spec(spec_with(region="us-east4")), where(region="us-east4"), from_env)


# ----------------------------------------------------------------------------------------- resolve_target


def test_resolve_target_without_any_project_stalls() -> None:
    spec = parse_spec(spec_with())
    with pytest.raises(Stall) as caught:
        resolve_target(obj(spec_with()), spec, settings(default_project=None))
    assert caught.value.problem.reason == "NoProject"
    assert "spec.project" in caught.value.problem.message
    assert "TGI_OPERATOR_DEFAULT_PROJECT" in caught.value.problem.message


@pytest.mark.parametrize(
    ("spec", "default_project", "expected"),
    [
        (spec_with(), "ops-default", f"projects/ops-default/locations/us-central1/services/{SERVICE_ID}"),
        (spec_with(project="my-project"), "ops-default", f"projects/my-project/locations/us-central1/services/{SERVICE_ID}"),
        (spec_with(project="my-project"), None, f"projects/my-project/locations/us-central1/services/{SERVICE_ID}"),
    ],
)
def test_resolve_target(spec: dict[str, Any], default_project: str | None, expected: str) -> None:
    assert resolve_target(obj(spec), parse_spec(spec), settings(default_project=default_project)).name == expected


def test_a_changed_target_stalls_instead_of_orphaning_the_service() -> None:
    from tgi_operator.reconcile import Stall, check_same_target
    from tgi_operator.render import Target

    where = Target("new-project", "us-central1", "team-a-llama")
    check_same_target(None, where)  # first pass: nothing managed yet
    check_same_target(where.name, where)  # unchanged
    with pytest.raises(Stall) as stall:
        check_same_target("projects/old-project/locations/us-central1/services/team-a-llama", where)
    assert stall.value.problem.reason == "TargetChanged"
    assert "projects/old-project" in stall.value.problem.message


def test_explain_turns_an_act_as_refusal_into_a_runtime_identity_problem() -> None:
    from tgi_operator.errors import PermanentCloudError
    from tgi_operator.reconcile import explain

    refusal = PermanentCloudError("PERMISSION_DENIED", "Permission 'iam.serviceaccounts.actAs' denied on service "
                                  "account rt@p.iam.gserviceaccount.com (or it may not exist).",
                                  reason="PermissionDenied", permission="iam.serviceaccounts.actAs")
    problem = explain(refusal, "rt@p.iam.gserviceaccount.com")
    assert problem.reason == "RuntimeServiceAccountNotUsable"
    assert "spec.serviceAccount: rt@p.iam.gserviceaccount.com" in problem.message
    assert "roles/iam.serviceAccountUser" in problem.message
    other = explain(PermanentCloudError("INVALID_ARGUMENT", "bad", reason="InvalidSpec"), None)
    assert (other.reason, other.message) == ("InvalidSpec", "Cloud Run: bad")
