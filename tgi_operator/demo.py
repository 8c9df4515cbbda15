"""`tgi-operator demo`: the whole product on one machine, as a newcomer should first see it.

A real kube-apiserver + etcd, the Cloud Run emulator and the operator (under its own ServiceAccount and the
RBAC from manifests/) start as background processes; the seed TGIService is applied; its conditions are shown
as they change until Ready; then the URL is called with the `openai` client, as an invoker would. Everything is
torn down at the end, unless --keep (then `tgi-operator demo --down` stops it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from tgi_operator.devenv import stack
from tgi_operator.devenv.binaries import BinariesUnavailable, find_binaries
from tgi_operator.devenv.cluster import ClusterStartError, DevCluster
from tgi_operator.devenv.testing import KubeCluster, KubectlError

SEED = stack.REPO / "manifests" / "samples" / "llama-3-1-8b-awq.yaml"
NAMESPACE = "team-a"
PROJECT = "demo-project"
OPERATOR_IDENTITY = f"tgi-operator@{PROJECT}.iam.gserviceaccount.com"
console = Console(highlight=False)


class DemoError(RuntimeError):
    """A step failed; the message says which and what to do."""


@dataclass
class DemoState:
    """What a kept demo leaves running, so that `--down` can stop it."""

    emulator_pid: int
    operator_pid: int
    emulator_http: str
    kubeconfig: str


# -- processes -----------------------------------------------------------------------------------------------


def _start_emulator(workdir: Path, timeout: float = 30.0) -> tuple[subprocess.Popen, dict[str, Any]]:
    """`tgi-operator emulator` in its own session; its JSON ready line is read from its stdout file."""
    out = workdir / "emulator.out"
    command = [sys.executable, "-m", "tgi_operator.cli", "emulator", "--grpc-port", "0", "--http-port", "0",
               "--reconcile-seconds", "1.5", "--identity", OPERATOR_IDENTITY]
    with open(out, "wb") as stdout, open(workdir / "emulator.log", "ab") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("ready"):
                return process, json.loads(line)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    tail = (workdir / "emulator.log").read_text(errors="replace")[-2000:]
    raise DemoError(f"the Cloud Run emulator did not start (see {workdir / 'emulator.log'}):\n{tail}")


def _stop(pid: int, timeout: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # not our child: poll its existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def down(state_dir: Path) -> bool:
    """Stop a kept demo (operator, emulator, control plane) and remove its state. False: nothing was running."""
    state_file = state_dir / "demo.json"
    found = state_file.exists() or (state_dir / "cluster").exists()
    if state_file.exists():
        state = DemoState(**json.loads(state_file.read_text()))
        _stop(state.operator_pid)
        _stop(state.emulator_pid)
    DevCluster(state_dir / "cluster").down()
    shutil.rmtree(state_dir, ignore_errors=True)
    return found


# -- what the user sees ------------------------------------------------------------------------------------


def _conditions_table(obj: dict[str, Any]) -> Table:
    table = Table(title=f"TGIService {NAMESPACE}/{obj['metadata']['name']} (generation {obj['metadata'].get('generation')})")
    for column in ("condition", "status", "reason", "message"):
        table.add_column(column)
    for c in obj.get("status", {}).get("conditions", []):
        style = "green" if (c["type"] == "Ready") == (c["status"] == "True") else "yellow"
        table.add_row(c["type"], f"[{style}]{c['status']}[/{style}]", c.get("reason", ""), c.get("message", ""))
    return table


def _watch_until_ready(kube: KubeCluster, name: str, timeout: float) -> dict[str, Any]:
    """Print each new set of conditions until Ready=True; Stalled ends the demo with the operator's message."""
    last: Any = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = json.loads(kube.kubectl("get", "tgis", name, "-n", NAMESPACE, "-o", "json").stdout)
        conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
        seen = [(c["type"], c["status"], c.get("reason")) for c in conditions.values()]
        if seen and seen != last:
            console.print(_conditions_table(obj))
            last = seen
        if conditions.get("Ready", {}).get("status") == "True":
            return obj
        if conditions.get("Stalled", {}).get("status") == "True":
            raise DemoError(f"the TGIService is Stalled: {conditions['Stalled'].get('message')}")
        time.sleep(0.5)
    raise DemoError(f"the TGIService was not Ready within {timeout:.0f}s")


def _call_as_invoker(emulator_http: str, url: str, invoker: str) -> str:
    """A chat completion through the service URL, with an ID token of the invoker service account (what that
    identity's metadata server would give it; here the emulator mints it)."""
    import openai

    response = requests.post(f"{emulator_http}/emulator/v1/tokens", json={"email": invoker, "audience": url}, timeout=10)
    response.raise_for_status()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=response.json()["token"])
    completion = client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "What is deep learning?"}], max_tokens=48,
    )
    return completion.choices[0].message.content or ""


# -- the demo ---------------------------------------------------------------------------------------------


def run(state_dir: Path, keep: bool, timeout: float = 180.0) -> None:
    if not shutil.which("kubectl"):
        raise DemoError("kubectl is not on PATH: install it (any recent version) and run the demo again")
    if (state_dir / "demo.json").exists() or (state_dir / "cluster").exists():
        console.print(f"[yellow]a previous demo in {state_dir} is still there: stopping it first[/yellow]")
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    processes: list[int] = []
    cluster = DevCluster(state_dir / "cluster")
    try:
        with console.status("finding or building kube-apiserver and etcd (the first build takes a few minutes)"):
            binaries = find_binaries()
        with console.status("starting the control plane (kube-apiserver + etcd)"):
            cluster = DevCluster(state_dir / "cluster", binaries)
            cluster.up()
        kube = KubeCluster(cluster.kubeconfig, runs_namespace_controller=False)
        console.print(f"[green]✓[/green] control plane: {cluster.state().server}")
        stack.install(kube)
        console.print("[green]✓[/green] installed the TGIService CRD and the operator's namespace, ServiceAccount and RBAC")
        emulator, ready = _start_emulator(state_dir)
        processes.append(emulator.pid)
        console.print(f"[green]✓[/green] Cloud Run emulator: gRPC {ready['grpc']}, HTTP {ready['http']}")
        env = {**ready["env"], "TGI_OPERATOR_DEFAULT_PROJECT": PROJECT, "TGI_OPERATOR_RESYNC_SECONDS": "60",
               "TGI_OPERATOR_POLL_INITIAL_SECONDS": "0.5", "TGI_OPERATOR_POLL_MAX_SECONDS": "3"}
        kubeconfig = stack.operator_kubeconfig(kube, state_dir / "operator.kubeconfig")
        operator = stack.start_operator(kubeconfig, env, state_dir / "operator.log", detach=True)
        processes.append(operator.process.pid)
        console.print(f"[green]✓[/green] operator running as system:serviceaccount:{stack.OPERATOR_NAMESPACE}:{stack.OPERATOR_SERVICE_ACCOUNT}")
        (state_dir / "demo.json").write_text(json.dumps(asdict(DemoState(
            emulator.pid, operator.process.pid, ready["http"], str(cluster.kubeconfig)))))

        kube.kubectl("create", "namespace", NAMESPACE)
        console.print(f"\n$ kubectl apply -n {NAMESPACE} -f {SEED.relative_to(stack.REPO)}")
        console.print(SEED.read_text().strip(), style="dim")
        kube.kubectl("apply", "-n", NAMESPACE, "-f", str(SEED))
        obj = _watch_until_ready(kube, "llama-3-1-8b-awq", timeout)
        status = obj["status"]
        console.print(f"\n$ kubectl get tgis -n {NAMESPACE}")
        console.print(kube.kubectl("get", "tgis", "-n", NAMESPACE).stdout.rstrip())
        console.print(f"\n[bold green]Ready[/bold green]  URL: [bold]{status['url']}[/bold]")
        console.print(f"model: {status.get('model')}")
        preflight, cost = status.get("preflight") or {}, status.get("cost") or {}
        console.print(f"model preflight (before anything was deployed): {preflight.get('result')}: "
                      f"{preflight.get('message')}", markup=False)
        console.print(f"estimated cost: {cost.get('instanceHourly')} {cost.get('currency')} per instance-hour, "
                      f"{cost.get('minimumHourly')} while idle, {cost.get('maximumHourly')} at most ({cost.get('basis')})",
                      markup=False)
        console.print(f"invoker service account: {status['invokerServiceAccount']}")
        console.print("\ncalling POST /v1/chat/completions with the openai client, as the invoker service account:")
        answer = _call_as_invoker(ready["http"], status["url"], status["invokerServiceAccount"])
        console.print(f"[bold]completion:[/bold] {answer}")
    except (BinariesUnavailable, ClusterStartError, DemoError, KubectlError, RuntimeError, requests.RequestException) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        console.print(f"logs: {state_dir}/operator.log, {state_dir}/emulator.log, {state_dir}/cluster/*.log")
        _teardown(state_dir, processes, cluster, keep_logs=True)
        raise SystemExit(1) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: tearing down[/yellow]")
        _teardown(state_dir, processes, cluster)
        raise SystemExit(130) from None
    if keep:
        console.print(
            f"\nThe demo keeps running. Try:\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  kubectl get tgis -A\n"
            f"  kubectl patch tgis llama-3-1-8b-awq -n {NAMESPACE} --type=merge -p '{{\"spec\":{{\"suspend\":true}}}}'\n"
            f"Stop it with: tgi-operator demo --down --state-dir {state_dir}"
        )
        return
    _teardown(state_dir, processes, cluster)
    console.print("\ntorn down: control plane, emulator and operator stopped")


def _teardown(state_dir: Path, pids: list[int], cluster: DevCluster, keep_logs: bool = False) -> None:
    for pid in reversed(pids):
        _stop(pid)
    cluster.down()
    if not keep_logs:
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        (state_dir / "demo.json").unlink(missing_ok=True)
