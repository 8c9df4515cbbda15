"""gitops/flux: parsed, with the fields Flux requires (kustomize.toolkit.fluxcd.io/v1 Kustomization: interval,
prune, sourceRef; source.toolkit.fluxcd.io/v1 GitRepository: interval, url) and what this example promises:
CRD first and never pruned, operator next, TGIServices waited on (kstatus) long enough for a GPU cold start."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FLUX = ROOT / "gitops" / "flux"
DOCS = [d for f in sorted(FLUX.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
BY_KIND = {(d["kind"], d["metadata"]["name"]): d for d in DOCS}


def kustomization(name: str) -> dict:
    return BY_KIND[("Kustomization", name)]["spec"]


def seconds(duration: str) -> int:
    """A Go duration as Flux takes it (e.g. 1h30m, 2m, 45s), in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    h, m, s = (int(p or 0) for p in parts.groups())
    return h * 3600 + m * 60 + s


def test_every_object_is_a_well_formed_flux_object() -> None:
    assert {k for k, _ in BY_KIND} == {"GitRepository", "Kustomization"}
    assert len(BY_KIND) == len(DOCS)  # names unique per kind
    for doc in DOCS:
        assert doc["metadata"]["namespace"] == "flux-system"
        spec = doc["spec"]
        seconds(spec["interval"])
        if doc["kind"] == "GitRepository":
            assert doc["apiVersion"] == "source.toolkit.fluxcd.io/v1"
            assert spec["url"].startswith("https://") and spec["ref"]
            continue
        assert doc["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
        assert isinstance(spec["prune"], bool) and spec["path"].startswith("./")
        assert spec["sourceRef"]["kind"] == "GitRepository" and ("GitRepository", spec["sourceRef"]["name"]) in BY_KIND
        for dep in spec.get("dependsOn", []):
            assert ("Kustomization", dep["name"]) in BY_KIND
        if spec.get("wait") is not True:  # then healthChecks name what to wait for
            assert spec.get("healthChecks")
        assert set(spec) <= {"interval", "retryInterval", "sourceRef", "path", "prune", "wait", "timeout", "dependsOn",
                             "targetNamespace", "healthChecks", "healthCheckExprs", "postBuild", "patches"}


def test_the_operator_repository_paths_exist() -> None:
    for doc in DOCS:
        if doc["kind"] == "Kustomization" and doc["spec"]["sourceRef"]["name"] == "tgi-operator":
            assert (ROOT / doc["spec"]["path"]).is_dir(), doc["spec"]["path"]


def test_crd_first_never_pruned_then_operator_then_tgiservices_waited_on() -> None:
    crd, operator, models = kustomization("tgi-operator-crd"), kustomization("tgi-operator"), kustomization("team-a-tgiservices")
    assert crd["prune"] is False and "dependsOn" not in crd
    assert [d["name"] for d in operator["dependsOn"]] == ["tgi-operator-crd"]
    assert {d["name"] for d in models["dependsOn"]} == {"tgi-operator-crd", "tgi-operator"}
    assert models["wait"] is True  # kstatus: Current when Ready, Failed at once when Stalled
    assert "healthCheckExprs" not in models  # TGIService follows kstatus: Flux needs no CEL for it
    assert seconds(models["timeout"]) >= 20 * 60  # image pull + weights download + TGI warm-up on a cold GPU
    assert seconds(models["interval"]) <= seconds(models["timeout"])
