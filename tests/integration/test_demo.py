"""The README's first command, end to end, as a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    # The demo brings its own control plane from the local binaries; against kind/GKE there may be none.
    pytest.mark.skipif(bool(os.environ.get("TGI_TEST_KUBECONFIG")), reason="the demo runs its own control plane"),
]
DEMO = [sys.executable, "-m", "tgi_operator.cli", "demo"]


def run_demo(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_demo_runs_end_to_end_and_tears_down(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = run_demo("--state-dir", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Ready  URL: http://127.0.0.1:" in out
    assert "completion: Emulated reply from hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4" in out
    # The model was checked on the emulator's Hub stand-in before anything was deployed, and its cost is estimated.
    assert "model preflight (before anything was deployed): Passed: hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4" \
        " at 679e824e119a fits an nvidia-l4 (24 GB)" in out
    assert "estimated cost: 1.42 USD per instance-hour, 0.00 while idle, 4.26 at most" in out
    assert "MAX-$/H" in out and " 4.26 " in out  # kubectl get shows the most it can cost
    assert "Deploying" in out  # the conditions were shown as they changed
    assert "torn down" in out and not state.exists()


def test_demo_keep_then_down_and_twice(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    first = run_demo("--keep", "--state-dir", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"tgi-operator demo --down --state-dir {state}" in first.stdout
    kubeconfig = state / "cluster" / "kubeconfig"
    listed = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "get", "tgis", "-A"], capture_output=True, text=True, timeout=30)
    assert "llama-3-1-8b-awq" in listed.stdout and "True" in listed.stdout

    second = run_demo("--state-dir", str(state))  # running it again replaces the kept one
    assert second.returncode == 0, second.stdout + second.stderr
    assert "still there: stopping it first" in second.stdout

    third = run_demo("--keep", "--state-dir", str(state))
    assert third.returncode == 0, third.stdout + third.stderr
    pids = [int(p) for p in __import__("json").loads((state / "demo.json").read_text()).values() if isinstance(p, int)]
    stopped = run_demo("--down", "--state-dir", str(state))
    assert stopped.returncode == 0 and "stopped the demo" in stopped.stdout
    assert not state.exists()
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(") ", 1)[1][0] == "Z"


def test_demo_fails_clearly_without_the_control_plane_binaries(tmp_path: Path) -> None:
    empty = tmp_path / "assets"
    empty.mkdir()
    result = run_demo("--state-dir", str(tmp_path / "demo"), env={"KUBEBUILDER_ASSETS": str(empty)}, timeout=60)
    assert result.returncode == 1
    assert "demo failed" in result.stdout and "KUBEBUILDER_ASSETS" in result.stdout
