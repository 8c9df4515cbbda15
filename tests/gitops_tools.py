"""The GitOps tools' own health logic, run over TGIService objects (unit and integration tests share this).

- `kstatus(objects)`: sigs.k8s.io/cli-utils' `status.Compute` (what Flux and kpt use), through hack/kstatus,
  built once by hack/build-kstatus.sh (or TGI_KSTATUS_BIN).
- `argo_health(obj)`: the shipped Argo CD health.lua, run as Argo CD runs it: Lua 5.1 (gopher-lua is 5.1), the
  object as the global `obj`, the script's returned table read as {status, message}.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

from lupa import lua51

ROOT = Path(__file__).resolve().parents[1]
ARGO_DIR = ROOT / "gitops" / "argocd" / "resource_customizations" / "tgi-operator.dev" / "TGIService"
HEALTH_LUA = ARGO_DIR / "health.lua"
ARGOCD_CM = ROOT / "gitops" / "argocd" / "argocd-cm.yaml"
HEALTH_KEY = "resource.customizations.health.tgi-operator.dev_TGIService"
ARGO_HEALTH_CODES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


@functools.cache
def kstatus_binary() -> str:
    """Builds hack/kstatus once (cached outside the repo) and returns its path; fails loudly, never skips."""
    done = subprocess.run(["bash", str(ROOT / "hack" / "build-kstatus.sh")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"hack/build-kstatus.sh failed:\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def kstatus(obj: dict[str, Any]) -> list[dict[str, str]]:
    """kstatus for one object, or for each item of a `kind: List`, as [{name, status, message}]."""
    done = subprocess.run([kstatus_binary()], input=json.dumps(obj), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kstatus failed: {done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines()]


def kstatus_of(obj: dict[str, Any]) -> str:
    (result,) = kstatus(obj)
    return result["status"]


def argo_health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """What Argo CD would show for `obj`: {"status": ..., "message": ...} (an empty message is omitted, as Argo's
    HealthStatus JSON omits it)."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script if script is not None else HEALTH_LUA.read_text())
    out = {key: result[key] for key in ("status", "message") if result[key] not in (None, "")}
    assert out.get("status") in ARGO_HEALTH_CODES, f"not an Argo CD health status: {out!r}"
    return out
