"""The release path (.github/workflows/release.yml): actionlint accepts every workflow, the release workflow builds
amd64 and arm64, publishes only from a version tag, signs by digest with least privilege, and every image
reference in the repository follows the release (pyproject.toml's version, the chart's appVersion).

actionlint is built from its Go module by hack/build-actionlint.sh (or TGI_ACTIONLINT_BIN); like kstatus, a failed
build fails here, never skips."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
DEPLOYMENT = ROOT / "manifests" / "base" / "deployment.yaml"
OVERLAY = ROOT / "manifests" / "overlays" / "example" / "kustomization.yaml"
CHART = ROOT / "charts" / "tgi-operator" / "Chart.yaml"
CHECK = ROOT / "hack" / "check-release.sh"
# What manifests/base names: the release's image under the project's own owner.
CANONICAL_OWNER = "tgi-operator"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


@functools.cache
def actionlint_binary() -> str:
    done = subprocess.run(["bash", str(ROOT / "hack" / "build-actionlint.sh")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"hack/build-actionlint.sh failed:\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([actionlint_binary(), "-no-color", *map(str, files)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def release() -> dict[str, Any]:
    return yaml.safe_load(RELEASE.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job["steps"]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]
    return step


def index_of(job: dict[str, Any], step: dict[str, Any]) -> int:
    return next(i for i, s in enumerate(steps(job)) if s is step)


def base_image() -> str:
    [container] = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"]
    return container["image"]


# --- actionlint -------------------------------------------------------------------------------------------------

def test_actionlint_accepts_every_workflow() -> None:
    files = sorted(p for p in WORKFLOWS.iterdir() if p.suffix in (".yml", ".yaml"))
    assert RELEASE in files
    done = actionlint(*files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("old", "new", "says"), [
    # An expression context that does not exist (a typo for `steps`).
    ("${{ steps.build.outputs.digest }}", "${{ step.build.outputs.digest }}", 'undefined variable "step"'),
    # A permission scope that does not exist, on the signing job.
    ("id-token: write", "id_token: write", "unknown permission scope"),
    # An output of a step that is not there.
    ("${{ steps.version.outputs.image }}", "${{ steps.versions.outputs.image }}", 'property "versions" is not defined'),
], ids=["unknown-context", "unknown-permission", "unknown-step"])
def test_actionlint_catches_a_broken_release_workflow(tmp_path: Path, old: str, new: str, says: str) -> None:
    text = RELEASE.read_text()
    assert old in text
    broken = tmp_path / "release.yml"
    broken.write_text(text.replace(old, new, 1))
    done = actionlint(broken)
    assert done.returncode == 1, done.stdout + done.stderr
    assert says in done.stdout, done.stdout


# --- the release workflow ---------------------------------------------------------------------------------------

def test_release_runs_on_version_tags_and_by_hand_only() -> None:
    on = triggers(release())
    assert set(on) == {"push", "workflow_dispatch"}
    assert on["push"] == {"tags": ["v*.*.*"]}  # no branches: a push to main never publishes


def test_every_action_is_pinned_by_commit_with_its_version() -> None:
    lines = [line for line in RELEASE.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert lines
    for line in lines:
        ref, _, comment = line.split("uses:", 1)[1].partition("#")
        assert SHA_PIN.match(ref.strip()), line
        assert re.fullmatch(r"v\d+\.\d+\.\d+", comment.strip()), line


def test_permissions_are_least_privilege() -> None:
    workflow = release()
    assert workflow["permissions"] == {}  # nothing unless a job asks
    assert "write-all" not in RELEASE.read_text() and "read-all" not in RELEASE.read_text()
    jobs = workflow["jobs"]
    assert jobs["image"]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    # The job that writes to the repository (the GitHub release) holds no OIDC token and cannot push images.
    assert jobs["manifests"]["permissions"] == {"contents": "write"}
    assert set(jobs) == {"image", "manifests"}


def test_the_versions_are_checked_before_anything_is_built() -> None:
    job = release()["jobs"]["image"]
    check = next(s for s in steps(job) if "hack/check-release.sh" in s.get("run", ""))
    assert index_of(job, check) < index_of(job, step_using(job, "docker/build-push-action"))
    assert check["env"]["REF_NAME"] == "${{ github.ref_name }}"  # the pushed tag is what is compared


def test_the_image_is_built_for_amd64_and_arm64_with_attestations() -> None:
    job = release()["jobs"]["image"]
    build = step_using(job, "docker/build-push-action")
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert index_of(job, step_using(job, "docker/setup-qemu-action")) < index_of(job, build)
    assert index_of(job, step_using(job, "docker/setup-buildx-action")) < index_of(job, build)
    assert build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert build["with"]["file"] == "Dockerfile"


def test_only_a_pushed_tag_publishes() -> None:
    workflow = release()
    assert workflow["env"]["PUBLISH"] == "${{ github.event_name == 'push' && github.ref_type == 'tag' }}"
    job = workflow["jobs"]["image"]
    assert step_using(job, "docker/build-push-action")["with"]["push"] == "${{ env.PUBLISH == 'true' }}"
    for action in ("docker/login-action", "sigstore/cosign-installer"):
        assert step_using(job, action)["if"] == "env.PUBLISH == 'true'"
    assert workflow["jobs"]["manifests"]["if"] == "github.event_name == 'push' && github.ref_type == 'tag'"


def test_the_pushed_image_is_signed_keyless_by_digest() -> None:
    job = release()["jobs"]["image"]
    [sign] = [s for s in steps(job) if "cosign sign" in s.get("run", "")]
    assert sign["if"] == "env.PUBLISH == 'true'"
    assert sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert step_using(job, "docker/build-push-action")["id"] == "build"
    assert index_of(job, step_using(job, "sigstore/cosign-installer")) < index_of(job, sign)
    commands = [line.strip() for line in sign["run"].splitlines() if line.strip().startswith("cosign sign")]
    # By digest, never by tag (a tag can be moved to other content); keyless: no --key.
    assert commands == ['cosign sign --yes "${IMAGE_REF}@${DIGEST}"']
    assert "--key" not in sign["run"]
    # The same step proves the signature: the certificate names this workflow and GitHub's OIDC issuer.
    assert "--certificate-oidc-issuer https://token.actions.githubusercontent.com" in sign["run"]
    digest = next(s for s in steps(job) if s.get("name") == "Digest")
    assert "${DIGEST}" in digest["run"] and "GITHUB_STEP_SUMMARY" in digest["run"]


def test_the_workflow_pushes_the_repository_the_manifests_name() -> None:
    pushed = release()["env"]["IMAGE"]
    assert pushed == "ghcr.io/${{ github.repository_owner }}/tgi-operator"
    repository, _, _ = base_image().rpartition(":")
    assert repository == pushed.replace("${{ github.repository_owner }}", CANONICAL_OWNER)
    # metadata-action tags it with the bare version, as the manifests do (0.1.0, not v0.1.0).
    meta = step_using(release()["jobs"]["image"], "docker/metadata-action")
    assert meta["with"]["tags"] == "type=raw,value=${{ steps.version.outputs.version }}"


def test_the_release_job_gets_the_digest_the_image_job_signed() -> None:
    jobs = release()["jobs"]
    assert jobs["image"]["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    assert jobs["image"]["outputs"]["image"] == "${{ steps.version.outputs.image }}"
    assert jobs["manifests"]["needs"] == "image"
    for step in steps(jobs["manifests"]):
        if "DIGEST" in step.get("env", {}):
            assert step["env"]["DIGEST"] == "${{ needs.image.outputs.digest }}", step["name"]
            assert step["env"]["IMAGE_REF"] == "${{ needs.image.outputs.image }}", step["name"]


def test_the_release_assets_name_the_signed_digest(tmp_path: Path) -> None:
    """The manifests job's render step, run here over a copy of the manifests, names the image by digest."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required by the tests (it renders kustomizations)")
    for folder in ("manifests/base", "manifests/crd", "crds"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    [render] = [s for s in steps(release()["jobs"]["manifests"]) if s.get("name", "").startswith("Render")]
    image, digest = "ghcr.io/someone/tgi-operator", "sha256:" + "ab" * 32
    env = {**os.environ, "IMAGE_REF": image, "DIGEST": digest}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", render["run"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all((tmp_path / "dist" / "tgi-operator.yaml").read_text()))
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image}@{digest}"
    crd = [d["kind"] for d in yaml.safe_load_all((tmp_path / "dist" / "tgi-operator-crd.yaml").read_text())]
    assert "CustomResourceDefinition" in crd
    env["DIGEST"] = ""  # what a misnamed output gives
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", render["run"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no digest" in done.stdout, done.stdout + done.stderr


# --- the image reference follows the release --------------------------------------------------------------------

def test_the_manifests_name_the_released_version() -> None:
    assert base_image() == f"ghcr.io/{CANONICAL_OWNER}/tgi-operator:{version()}"
    [rewrite] = yaml.safe_load(OVERLAY.read_text())["images"]
    assert rewrite["name"] == base_image().rpartition(":")[0]  # otherwise the overlay rewrites nothing
    assert rewrite["newTag"] == version()


def test_the_chart_names_the_released_version() -> None:
    if not CHART.exists():
        pytest.skip("no charts/tgi-operator yet")
    chart = yaml.safe_load(CHART.read_text())
    assert str(chart["appVersion"]) == version()
    values = yaml.safe_load((CHART.parent / "values.yaml").read_text()) or {}
    image = values.get("image") or {}
    if "repository" in image:
        assert image["repository"] == base_image().rpartition(":")[0]
    assert str(image.get("tag") or version()) == version()  # empty means appVersion


def test_the_release_gate_passes_on_the_tree_and_the_right_tag() -> None:
    done = subprocess.run(["bash", str(CHECK), f"v{version()}"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, version()), done.stderr


def test_the_release_gate_refuses_another_tag() -> None:
    done = subprocess.run(["bash", str(CHECK), "v99.0.0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"tag v99.0.0 is not v{version()}" in done.stderr


@pytest.mark.parametrize("where", ["deployment", "overlay", "chart"])
def test_the_release_gate_refuses_a_tree_whose_versions_disagree(tmp_path: Path, where: str) -> None:
    """A copy of the files the gate reads, one of them left at another version: the gate fails and says which."""
    for rel in ("pyproject.toml", "hack/check-release.sh", "manifests/base/deployment.yaml",
                "manifests/overlays/example/kustomization.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    chart = tmp_path / "charts/tgi-operator/Chart.yaml"
    chart.parent.mkdir(parents=True)
    chart.write_text(CHART.read_text() if CHART.exists() else f"apiVersion: v2\nname: tgi-operator\n"
                     f"version: {version()}\nappVersion: \"{version()}\"\n")
    gate = ["bash", str(tmp_path / "hack/check-release.sh"), f"v{version()}"]
    assert subprocess.run(gate, capture_output=True, text=True, timeout=60).returncode == 0

    stale = {"deployment": "manifests/base/deployment.yaml", "overlay": "manifests/overlays/example/kustomization.yaml",
             "chart": "charts/tgi-operator/Chart.yaml"}[where]
    path = tmp_path / stale
    text = path.read_text()
    pattern = {"deployment": rf"(image: \S+:){re.escape(version())}", "overlay": rf"(newTag: ){re.escape(version())}",
               "chart": rf"(appVersion: [\"']?){re.escape(version())}"}[where]
    path.write_text(re.sub(pattern, r"\g<1>0.0.9", text, count=1))
    assert path.read_text() != text
    done = subprocess.run(gate, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert stale in done.stderr and "0.0.9" in done.stderr, done.stderr
