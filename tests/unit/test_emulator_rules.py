"""Cloud Run's rules as the emulator applies them: pure functions, table-driven."""

from __future__ import annotations

import pytest
from google.cloud import run_v2

from tgi_operator.emulator import rules
from tgi_operator.emulator.calls import CallLog, Fault
from tgi_operator.emulator.errors import code_from_name


@pytest.mark.parametrize(
    ("service_id", "ok"),
    [
        ("llama-8b", True), ("a", True), ("a" * 49, True), ("a1-b2", True),
        ("a" * 50, False), ("1abc", False), ("abc-", False), ("Abc", False), ("a_b", False), ("", False), ("-a", False),
    ],
)  # fmt: skip
def test_service_id(service_id: str, ok: bool) -> None:
    assert (rules.check_service_id(service_id) == []) is ok


@pytest.mark.parametrize(
    ("account_id", "ok"),
    [("llama-invoker", True), ("abcdef", True), ("a" * 30, True), ("abcde", False), ("a" * 31, False),
     ("1abcdef", False), ("abcdef-", False), ("Abcdef", False), ("abc_def", False)],
)  # fmt: skip
def test_account_id(account_id: str, ok: bool) -> None:
    assert (rules.check_account_id(account_id) == []) is ok


@pytest.mark.parametrize(
    ("display_name", "description", "fields"),
    [
        ("", "", []), ("d" * 100, "d" * 256, []), ("é" * 50, "é" * 128, []),
        ("d" * 101, "", ["service_account.display_name"]), ("é" * 51, "", ["service_account.display_name"]),
        ("", "d" * 257, ["service_account.description"]),
        ("d" * 101, "d" * 257, ["service_account.display_name", "service_account.description"]),
    ],
)  # fmt: skip
def test_account_text(display_name: str, description: str, fields: list[str]) -> None:
    assert [v.field for v in rules.check_account_text(display_name, description)] == fields


KNOWN = {"tgi-x@proj.iam.gserviceaccount.com"}


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("serviceAccount:tgi-x@proj.iam.gserviceaccount.com", None),
        ("serviceAccount:TGI-X@proj.iam.gserviceaccount.com", None),  # IAM compares emails case-insensitively
        ("serviceAccount:tgi-y@proj.iam.gserviceaccount.com", "Service account tgi-y@proj.iam.gserviceaccount.com does not exist."),
        ("serviceAccount:tgi-x@other.iam.gserviceaccount.com", "Service account tgi-x@other.iam.gserviceaccount.com does not exist."),
        ("serviceAccount:123456789012-compute@developer.gserviceaccount.com", None),
        ("serviceAccount:proj@appspot.gserviceaccount.com", None),
        ("serviceAccount:service-123456789012@gcp-sa-aiplatform.iam.gserviceaccount.com", None),
        ("serviceAccount:agent@gcp-sa-firebase.iam.gserviceaccount.com", None),
        ("serviceAccount:service-123456789012@compute-system.iam.gserviceaccount.com", None),
        ("serviceAccount:app@example.com", None),  # not an IAM service-account email: not ours to check
        ("user:tgi-y@proj.iam.gserviceaccount.com", None), ("group:ml@example.com", None), ("allUsers", None),
        ("deleted:serviceAccount:tgi-y@proj.iam.gserviceaccount.com?uid=1", None),
    ],
)  # fmt: skip
def test_missing_account(member: str, reason: str | None) -> None:
    assert rules.missing_account(member, KNOWN) == reason


@pytest.mark.parametrize(
    ("member", "ok"),
    [
        ("allUsers", True), ("allAuthenticatedUsers", True), ("user:a@example.com", True),
        ("serviceAccount:x@p.iam.gserviceaccount.com", True), ("group:ml@example.com", True), ("domain:example.com", True),
        ("deleted:serviceAccount:x@p.iam.gserviceaccount.com?uid=1", True),
        ("a@example.com", False), ("user:", False), ("user:nobody", False), ("robot:a@example.com", False),
        ("domain:a@example.com", False), ("allusers", False),
    ],
)  # fmt: skip
def test_member(member: str, ok: bool) -> None:
    assert (rules.check_member(member) is None) is ok


@pytest.mark.parametrize(
    ("value", "cpu"), [("8", 8), ("8000m", 8), ("4.5", 4.5), ("0", None), ("-1", None), ("eight", None)]
)
def test_parse_cpu(value: str, cpu: float | None) -> None:
    parsed = rules.parse_cpu(value)
    assert (parsed if parsed is None else float(parsed)) == cpu


@pytest.mark.parametrize(
    ("value", "size"), [("32Gi", 32 * 1024**3), ("512Mi", 512 * 1024**2), ("16G", 16 * 10**9), ("0", None), ("lots", None)]
)
def test_parse_memory(value: str, size: int | None) -> None:
    assert rules.parse_memory(value) == size


def _template(accelerator: str = "nvidia-l4", limits: dict[str, str] | None = None, cpu_idle: bool = False) -> run_v2.RevisionTemplate:
    return run_v2.RevisionTemplate(
        node_selector=run_v2.NodeSelector(accelerator=accelerator) if accelerator else None,
        containers=[
            run_v2.Container(
                image="tgi",
                resources=run_v2.ResourceRequirements(
                    limits=limits if limits is not None else {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
                    cpu_idle=cpu_idle,
                ),
            )
        ],
    )


@pytest.mark.parametrize(
    ("template", "region", "fields"),
    [
        (_template(), "us-central1", []),
        (_template(limits={"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}), "europe-west1", []),
        (_template(), "us-west1", ["t.node_selector.accelerator"]),
        (_template("nvidia-a100"), "us-central1", ["t.node_selector.accelerator"]),
        (_template(limits={"cpu": "8", "memory": "32Gi"}), "us-central1", ["t.node_selector.accelerator"]),
        (_template("", limits={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}), "us-central1", ["t.node_selector.accelerator"]),
        (_template(limits={"cpu": "3", "memory": "32Gi", "nvidia.com/gpu": "1"}), "us-central1", ["t.containers[0].resources.limits.cpu"]),
        (_template(limits={"cpu": "8", "memory": "15Gi", "nvidia.com/gpu": "1"}), "us-central1", ["t.containers[0].resources.limits.memory"]),
        (_template(limits={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}), "us-central1",
         ["t.containers[0].resources.limits.nvidia.com/gpu"]),
        (_template(cpu_idle=True), "us-central1", ["t.containers[0].resources.cpu_idle"]),
        (_template("nvidia-rtx-pro-6000"), "us-central1", ["t.containers[0].resources.limits.cpu"]),  # gpus.cpu_memory_problems
        (_template("nvidia-rtx-pro-6000", {"cpu": "20", "memory": "96Gi", "nvidia.com/gpu": "1"}), "us-central1",
         ["t.containers[0].resources.limits.memory"]),
        (_template("nvidia-rtx-pro-6000", {"cpu": "20", "memory": "80Gi", "nvidia.com/gpu": "1"}), "us-central1", []),
        (run_v2.RevisionTemplate(containers=[run_v2.Container(image="x")]), "us-west1", []),  # no GPU: nothing to check
    ],
)  # fmt: skip
def test_gpu_rules(template: run_v2.RevisionTemplate, region: str, fields: list[str]) -> None:
    assert [v.field for v in rules.check_gpu(template, region, "t")] == fields


@pytest.mark.parametrize(
    ("labels", "annotations", "fields"),
    [
        ({"app": "x", "tgi-operator.dev/name": "y"}, {"note": "z"}, []),
        ({"run.googleapis.com/x": "y"}, {}, ["s.labels"]),
        ({}, {"serving.knative.dev/creator": "y"}, ["s.annotations"]),
        ({"cloud.googleapis.com/location": "y"}, {"autoscaling.knative.dev/maxScale": "3"}, ["s.labels", "s.annotations"]),
    ],
)
def test_reserved_metadata(labels: dict[str, str], annotations: dict[str, str], fields: list[str]) -> None:
    assert [v.field for v in rules.check_metadata("s", labels, annotations)] == fields


@pytest.mark.parametrize(
    ("roles", "permission", "granted"),
    [
        ({"roles/run.admin"}, "run.services.setIamPolicy", True),
        ({"roles/editor"}, "run.services.setIamPolicy", False),
        ({"roles/editor"}, "run.routes.invoke", True),
        ({"roles/run.invoker"}, "run.routes.invoke", True),
        ({"roles/run.invoker"}, "run.services.get", False),
        ({"roles/run.viewer"}, "run.routes.invoke", False),
        (set(), "run.services.get", False),
    ],
)
def test_role_permissions(roles: set[str], permission: str, granted: bool) -> None:
    assert (permission in rules.permissions_of(roles)) is granted


def test_anonymous_caller_is_only_all_users() -> None:
    assert rules.members_for("") == {"allUsers"}
    assert "allAuthenticatedUsers" in rules.members_for("a@example.com")


@pytest.mark.parametrize(("value", "name"), [("UNAVAILABLE", "UNAVAILABLE"), ("not_found", "NOT_FOUND"), (14, "UNAVAILABLE"), ("8", "RESOURCE_EXHAUSTED")])
def test_code_from_name(value: str | int, name: str) -> None:
    assert code_from_name(value).name == name


def test_counted_fault_fires_exactly_count_times_on_matching_methods() -> None:
    calls = CallLog()
    calls.faults.append(Fault(method="GetService", code=code_from_name("UNAVAILABLE"), count=2))
    assert calls.next_fault("google.cloud.run.v2.Services/ListServices") is None
    fired = [calls.next_fault("google.cloud.run.v2.Services/GetService") for _ in range(3)]
    assert [f is not None for f in fired] == [True, True, False]
    assert calls.faults == []
