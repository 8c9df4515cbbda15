"""The shipped Argo CD health check, run as Argo CD runs it (Lua 5.1, the object as global `obj`), over every case
in its health_test.yaml, exactly as argo-cd's own TestLuaHealthScript does for resource_customizations/; kstatus
(cli-utils) over the same testdata; and the argocd-cm.yaml snippet kept identical to health.lua.

`python tests/unit/test_gitops_argocd.py` rewrites gitops/argocd/argocd-cm.yaml from health.lua."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gitops_tools import ARGO_DIR, ARGOCD_CM, HEALTH_KEY, HEALTH_LUA, argo_health, kstatus_of  # noqa: E402

CASES = yaml.safe_load((ARGO_DIR / "health_test.yaml").read_text())["tests"]
CM_HEADER = """\
# Argo CD health check for TGIService: merge this key into your argocd-cm (a kustomize patch, or the Helm chart's
# configs.cm). Generated from resource_customizations/tgi-operator.dev/TGIService/health.lua (a unit test keeps the
# two identical: `python tests/unit/test_gitops_argocd.py` rewrites this file).
"""


def render_argocd_cm() -> str:
    body = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd",
                     "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
        "data": {HEALTH_KEY: HEALTH_LUA.read_text()},
    }

    class Literal(yaml.SafeDumper):
        pass

    Literal.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))
    return CM_HEADER + yaml.dump(body, Dumper=Literal, sort_keys=False, width=1000)


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_lua_gives_what_health_test_yaml_says(case: dict) -> None:
    obj = yaml.safe_load((ARGO_DIR / case["inputPath"]).read_text())
    assert argo_health(obj) == case["healthStatus"]


def test_every_testdata_file_is_a_case_and_every_phase_is_covered() -> None:
    assert {c["inputPath"] for c in CASES} == {f"testdata/{p.name}" for p in (ARGO_DIR / "testdata").glob("*.yaml")}
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Suspended", "Progressing", "Degraded"}


# What kstatus (sigs.k8s.io/cli-utils status.Compute) says of the same objects. no_status.yaml is Current: a known
# kstatus behaviour for an object no controller has written status to yet (see test_gitops_health.py's xfail).
KSTATUS = {
    "healthy": "Current", "suspended": "Current", "no_status": "Current", "deploying": "InProgress",
    "waiting_for_model": "InProgress", "generation_not_observed": "InProgress", "revision_failed_retrying": "InProgress",
    "revision_failed_given_up": "Failed", "gpu_quota_exceeded": "Failed", "public_not_allowed": "Failed",
    "deleting": "Terminating",
}
ARGO_FOR_KSTATUS = {"Current": {"Healthy", "Suspended", "Progressing"}, "InProgress": {"Progressing"},
                    "Failed": {"Degraded"}, "Terminating": {"Progressing"}}


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_kstatus_agrees_with_the_argo_cd_script(case: dict) -> None:
    obj = yaml.safe_load((ARGO_DIR / case["inputPath"]).read_text())
    status = kstatus_of(obj)
    assert status == KSTATUS[Path(case["inputPath"]).stem]
    assert case["healthStatus"]["status"] in ARGO_FOR_KSTATUS[status]


def test_argocd_cm_is_health_lua() -> None:
    assert ARGOCD_CM.read_text() == render_argocd_cm(), "run: python tests/unit/test_gitops_argocd.py"
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["data"] == {HEALTH_KEY: HEALTH_LUA.read_text()}  # and it parses back to the very script
    # The key Argo CD reads: resource.customizations.health.<group>_<kind>.
    assert HEALTH_KEY == f"resource.customizations.health.{ARGO_DIR.parent.name}_{ARGO_DIR.name}"


def test_a_broken_script_is_caught() -> None:
    """The runner really executes the script: a script that ignores Stalled disagrees with health_test.yaml."""
    broken = HEALTH_LUA.read_text().replace('hs.status = "Degraded"', 'hs.status = "Healthy"')
    case = next(c for c in CASES if c["healthStatus"]["status"] == "Degraded")
    obj = yaml.safe_load((ARGO_DIR / case["inputPath"]).read_text())
    assert argo_health(obj, broken) != case["healthStatus"]


if __name__ == "__main__":
    ARGOCD_CM.write_text(render_argocd_cm())
    print(f"wrote {ARGOCD_CM}")
