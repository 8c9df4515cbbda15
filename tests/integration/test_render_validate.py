"""`tgi-operator render --validate` against a `tgi-operator emulator` process: Cloud Run's own check, nothing created."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from emulator_fixtures import PROJECT, REGION, AdminApi, emulator_process, seed_service, sync_clients  # noqa: F401
from google.cloud import run_v2

from tgi_operator.emulator.testing import EmulatorProcess
from tgi_operator.naming import service_id

pytestmark = pytest.mark.integration
SEED = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "llama-3-1-8b-awq.yaml"
SEED_ID = service_id("default", "llama-3-1-8b-awq")
PARENT = f"projects/{PROJECT}/locations/{REGION}"


def render(emulator: EmulatorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGI_OPERATOR_")}
    env["TGI_OPERATOR_CLOUD_RUN_ENDPOINT"] = emulator.grpc_endpoint
    return subprocess.run([sys.executable, "-m", "tgi_operator.cli", "render", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def run_client(emulator_process: EmulatorProcess) -> Iterator[run_v2.ServicesClient]:  # noqa: F811
    with sync_clients(emulator_process.grpc_endpoint) as clients:
        yield clients.run


def create_calls(admin: AdminApi) -> dict[str, int]:
    return admin.calls().get("google.cloud.run.v2.Services/CreateService", {})


def test_the_seed_is_valid_and_nothing_is_created(emulator_process: EmulatorProcess, run_client: run_v2.ServicesClient) -> None:  # noqa: F811
    admin = AdminApi(emulator_process.http_url)
    result = render(emulator_process, "-f", str(SEED), "--project", PROJECT, "--validate")
    assert result.returncode == 0, result.stderr
    assert f"valid: default/llama-3-1-8b-awq ({PARENT}/services/{SEED_ID})" in result.stderr
    assert next(yaml.safe_load_all(result.stdout))["name"] == f"{PARENT}/services/{SEED_ID}"  # the YAML still comes first
    assert create_calls(admin) == {"OK": 1}  # Cloud Run was really asked ...
    assert list(run_client.list_services(parent=PARENT)) == []  # ... and validate_only created nothing
    assert list(run_client.list_services(parent=f"projects/{PROJECT}/locations/-")) == []


def test_a_refusal_exits_1_with_the_clouds_message(emulator_process: EmulatorProcess) -> None:  # noqa: F811
    admin = AdminApi(emulator_process.http_url)
    admin.fault("CreateService", "INVALID_ARGUMENT", count=1)
    result = render(emulator_process, "-f", str(SEED), "--project", PROJECT, "--validate")
    assert result.returncode == 1
    assert (f"error: default/llama-3-1-8b-awq ({PARENT}/services/{SEED_ID}): Cloud Run refused it: "
            "INVALID_ARGUMENT: Injected fault (emulator).") in result.stderr
    assert "valid:" not in result.stderr
    assert create_calls(admin) == {"INVALID_ARGUMENT": 1}


def test_too_little_gpu_quota_is_said_before_anything_is_deployed(emulator_process: EmulatorProcess) -> None:  # noqa: F811
    """Cloud Run checks max instances x GPUs against the project's quota at the request, validate_only included."""
    admin = AdminApi(emulator_process.http_url)
    admin.set_quota(2)  # the seed asks for 3 instances of one L4
    result = render(emulator_process, "-f", str(SEED), "--project", PROJECT, "--validate")
    assert result.returncode == 1
    assert "Cloud Run refused it: GpuQuotaExceeded: GPU quota NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion" in result.stderr
    assert "lower spec.scaling.maxInstances to 2 or fewer" in result.stderr and "g.co/cloudrun/gpu-quota" in result.stderr


def test_an_unreachable_endpoint_exits_1_saying_it_could_not_validate(emulator_process: EmulatorProcess) -> None:  # noqa: F811
    admin = AdminApi(emulator_process.http_url)
    admin.fault("CreateService", "UNAVAILABLE", count=1)
    result = render(emulator_process, "-f", str(SEED), "--project", PROJECT, "--validate")
    assert result.returncode == 1
    assert "could not validate: UNAVAILABLE" in result.stderr


def test_an_existing_service_is_checked_as_the_update_that_would_replace_it(
    emulator_process: EmulatorProcess, run_client: run_v2.ServicesClient  # noqa: F811
) -> None:
    run_client.create_service(parent=PARENT, service_id=SEED_ID, service=seed_service(max_instances=1)).result(timeout=30)
    before = run_client.get_service(name=f"{PARENT}/services/{SEED_ID}")
    result = render(emulator_process, "-f", str(SEED), "--project", PROJECT, "--validate")
    assert result.returncode == 0, result.stderr
    assert "valid: default/llama-3-1-8b-awq" in result.stderr
    after = run_client.get_service(name=f"{PARENT}/services/{SEED_ID}")
    assert (after.generation, after.etag, after.template.scaling.max_instance_count) == (before.generation, before.etag, 1)
    calls = AdminApi(emulator_process.http_url).calls()
    assert calls["google.cloud.run.v2.Services/UpdateService"] == {"OK": 1}


# -- --preflight: the model checked on the Hub (the emulator's stand-in), as the operator would ---------------------


TOO_LARGE = """apiVersion: tgi-operator.dev/v1alpha1
kind: TGIService
metadata: {name: big}
spec:
  region: us-central1
  model: {id: hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4}
"""


def render_preflight(hub: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGI_OPERATOR_")}
    env["TGI_OPERATOR_HF_ENDPOINT"] = hub
    return subprocess.run([sys.executable, "-m", "tgi_operator.cli", "render", "--preflight", *args],
                          capture_output=True, text=True, env=env, timeout=60, input=input)


def test_preflight_passes_the_seed_and_stops_a_model_too_large_for_an_l4(emulator_process: EmulatorProcess) -> None:  # noqa: F811
    result = render_preflight(emulator_process.http_url, "-f", "-", "--project", PROJECT,
                              input=SEED.read_text() + "\n---\n" + TOO_LARGE)
    assert result.returncode == 1, result.stderr
    assert len(list(yaml.safe_load_all(result.stdout))) == 4  # both are rendered all the same
    assert ("preflight: default/llama-3-1-8b-awq (hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4): Passed: "
            "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4 at 679e824e119a fits an nvidia-l4 (24 GB)") in result.stderr
    assert ("error: default/big (hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4): the operator would stall it "
            "before deploying (ModelDoesNotFit)") in result.stderr
    assert "What would fit: spec.resources.gpu.type: nvidia-rtx-pro-6000 (96 GB)" in result.stderr
    assert "cost: default/big: 1.42 USD per instance-hour" in result.stderr
    asked = AdminApi(emulator_process.http_url)._call("GET", "/hub/requests")["requests"]
    assert {r["path"] for r in asked} >= {"/api/models/hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"}


def test_preflight_with_no_hub_exits_1_saying_the_model_was_not_checked() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
    result = render_preflight(nowhere, "-f", str(SEED), "--project", PROJECT)
    assert result.returncode == 1
    assert ("error: default/llama-3-1-8b-awq (hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4): the model was not "
            "checked: the Hugging Face Hub could not be asked (ConnectError") in result.stderr
