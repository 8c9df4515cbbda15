"""`tgi-operator render`: the seed sample renders the seed's settings; bad input exits 1 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tgi_operator.naming import service_id
from tgi_operator.cli import app
from tgi_operator.naming import invoker_account_id

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
SEED = SAMPLES / "llama-3-1-8b-awq.yaml"
SEED_NAME = "llama-3-1-8b-awq"
MODEL = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
TGI_IMAGE = "us-docker.pkg.dev/deeplearning-platform-release/gcr.io/huggingface-text-generation-inference-cu124.2-4.ubuntu2204.py311"


@pytest.fixture(autouse=True)
def _no_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own TGI_OPERATOR_* settings must not change what these tests see."""
    for name in ("TGI_OPERATOR_DEFAULT_PROJECT", "TGI_OPERATOR_CLOUD_RUN_ENDPOINT", "TGI_OPERATOR_ALLOW_PUBLIC_SERVICES",
                 "TGI_OPERATOR_ALLOWED_PROJECTS", "TGI_OPERATOR_ALLOWED_REGIONS", "TGI_OPERATOR_PRICING_FILE"):
        monkeypatch.delenv(name, raising=False)


def render(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["render", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def manifest(spec: str, name: str = "bad", namespace: str | None = None) -> str:
    meta = f"  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    return f"apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n{meta}spec:\n{spec}"


def test_the_seed_sample_renders_the_seed_settings_and_the_invoker_binding() -> None:
    code, out, err = render("-f", str(SEED), "--project", "my-project")
    assert code == 0, err
    service, iam = list(yaml.safe_load_all(out))

    assert service["name"] == f"projects/my-project/locations/us-central1/services/{service_id('default', SEED_NAME)}"
    assert service["ingress"] == "INGRESS_TRAFFIC_ALL"
    assert service["invokerIamDisabled"] is False  # --no-allow-unauthenticated
    template = service["template"]
    [container] = template["containers"]
    assert container["image"] == TGI_IMAGE
    assert container["args"] == [f"--model-id={MODEL}", "--quantize=awq", "--max-concurrent-requests=64"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["cpuIdle"] is False  # --no-cpu-throttling
    assert template["nodeSelector"] == {"accelerator": "nvidia-l4"}
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 3}
    assert template["maxInstanceRequestConcurrency"] == 64
    assert template["gpuZonalRedundancyDisabled"] is True

    account = f"{invoker_account_id('default', SEED_NAME)}@my-project.iam.gserviceaccount.com"
    assert iam["resource"] == service["name"]
    assert iam["bindings"] == [{"role": "roles/run.invoker", "members": [f"serviceAccount:{account}"]}]
    assert [sa["email"] for sa in iam["serviceAccounts"]] == [account]


def test_output_is_stable_and_the_namespace_option_names_the_service() -> None:
    first = render("-f", str(SEED), "--project", "my-project", "-n", "team-a")
    second = render("-f", str(SEED), "--project", "my-project", "-n", "team-a")
    assert first == second
    service = next(yaml.safe_load_all(first[1]))
    assert service["name"].endswith(f"/services/{service_id('team-a', SEED_NAME)}")
    assert list(service["labels"]) == sorted(service["labels"])


def test_stdin_and_several_documents_and_the_default_project_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGI_OPERATOR_DEFAULT_PROJECT", "env-project")
    text = SEED.read_text() + "\n---\n" + (SAMPLES / "suspended.yaml").read_text()
    code, out, err = render("-f", "-", input=text)
    assert code == 0, err
    seed, seed_iam, suspended, suspended_iam = list(yaml.safe_load_all(out))
    assert seed["name"].startswith("projects/env-project/locations/us-central1/")
    assert suspended["name"] == f"projects/env-project/locations/europe-west4/services/{service_id('default', 'qwen-2-5-7b-awq')}"
    assert suspended["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": 0}
    assert suspended_iam["bindings"] == [] and "serviceAccounts" not in suspended_iam


def test_spec_project_wins_over_the_project_option_as_in_the_operator() -> None:
    code, out, err = render("-f", str(SAMPLES / "gated-model-hf-token.yaml"), "--project", "other-project")
    assert code == 0, err
    service, iam = list(yaml.safe_load_all(out))
    assert service["name"].startswith("projects/my-ml-project/locations/us-east4/services/")
    assert "spec.project my-ml-project wins over --project other-project" in err
    hf_token = service["template"]["containers"][0]["env"][-1]
    assert hf_token == {"name": "HF_TOKEN", "valueSource": {"secretKeyRef": {"secret": "hf-token", "version": "latest"}}}
    assert iam["bindings"][0]["members"] == [
        "group:ml-engineers@example.com", "serviceAccount:chat-backend@my-ml-project.iam.gserviceaccount.com"
    ]


@pytest.mark.parametrize(
    ("spec", "problems"),
    [
        ("  region: us-central1\n  model: {id: not-a-repo-id}\n", ["spec.model.id: model.id must be a Hugging Face repository id"]),
        ("  region: us-central1\n  model: {id: a/b}\n  scaling: {concurrency: 0}\n",
         ["spec.scaling.concurrency: Input should be greater than or equal to 1"]),
        ("  region: us-central1\n  model: {id: a/b}\n  resources: {cpu: 2}\n", ["spec.resources: cpu must be one of 4, 6, 8 with an nvidia-l4 GPU"]),
        ("  region: mars-north1\n  model: {id: a/b}\n", ["spec: region must be one that offers nvidia-l4 GPUs"]),
        ("  model: {id: a/b}\n  replicas: 2\n", ["spec.region: Field required", "spec.replicas: Extra inputs are not permitted"]),
    ],
)
def test_an_invalid_manifest_exits_1_naming_each_field(spec: str, problems: list[str]) -> None:
    code, out, err = render("-f", "-", "--project", "my-project", input=manifest(spec))
    assert code == 1
    assert out == ""
    assert "TGIService default/bad is invalid" in err
    for problem in problems:
        assert problem in err


def test_without_any_project_the_error_says_where_to_set_one() -> None:
    code, out, err = render("-f", str(SEED))
    assert (code, out) == (1, "")
    assert "no project: set spec.project, pass --project, or set TGI_OPERATOR_DEFAULT_PROJECT" in err


@pytest.mark.parametrize(
    ("args", "text", "message"),
    [
        (["-f", "/nonexistent/manifest.yaml"], None, "cannot read /nonexistent/manifest.yaml"),
        (["-f", "-"], "kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\n", "no TGIService in -"),
        (["-f", "-"], "a: [unclosed\n", "not valid YAML"),
        (["-f", "-"], "apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nspec: {}\n", "metadata.name is required"),
        (["-f", "-", "-n", "team-b"], manifest("  region: us-central1\n  model: {id: a/b}\n", namespace="team-a"),
         "metadata.namespace 'team-a' does not match --namespace 'team-b'"),
    ],
)
def test_unusable_input_exits_1_with_the_reason(args: list[str], text: str | None, message: str) -> None:
    code, out, err = render(*args, "--project", "my-project", input=text)
    assert (code, out) == (1, "")
    assert message in err


def test_a_policy_the_operator_would_refuse_is_noted_but_still_rendered() -> None:
    code, out, err = render("-f", str(SAMPLES / "public-demo.yaml"), "--project", "my-project")
    assert code == 0, err
    service, iam = list(yaml.safe_load_all(out))
    assert iam["bindings"] == [{"role": "roles/run.invoker", "members": ["allUsers"]}]
    assert "PublicNotAllowed" in err and "TGI_OPERATOR_ALLOW_PUBLIC_SERVICES" in err


def test_the_cost_estimate_is_noted_for_each_object_and_the_yaml_stays_pipeable() -> None:
    text = SEED.read_text() + "\n---\n" + (SAMPLES / "suspended.yaml").read_text()
    code, out, err = render("-f", "-", "--project", "my-project", input=text)
    assert code == 0, err
    assert len(list(yaml.safe_load_all(out))) == 4  # stdout: services and IAM only
    assert ("cost: default/llama-3-1-8b-awq: 1.42 USD per instance-hour; 0.00 an hour while idle (minInstances 0), "
            "4.26 at most (maxInstances 3). Cloud Run Tier 1 (us-central1), instance-based billing; "
            "https://cloud.google.com/run/pricing as transcribed (Tier 2 GPU prices assumed) read 2026-12-01") in err
    assert "cost: default/qwen-2-5-7b-awq: 1.42 USD per instance-hour; 0.00 an hour while idle (suspended)" in err
    assert "preflight:" not in err  # the Hub is asked only with --preflight


def test_a_pricing_file_of_ones_own_is_used_and_a_broken_one_is_said(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("TGI_OPERATOR_PRICING_FILE", str(tmp_path / "missing.yaml"))
    code, out, err = render("-f", str(SEED), "--project", "my-project")
    assert code == 0 and "cost: default/llama-3-1-8b-awq: no estimate: cannot read the pricing file" in err
