"""Benchmark: the emulator's CPU per call as the number of services it holds grows (counts and ratios, no wall clock).

For each N: starts `tgi-operator emulator` as its own process, creates N GPU services (each with a service account,
one instance that must run, and an invoker binding) through the real `google.cloud.run_v2` / `iam_admin_v1`
clients, waits until all are Ready, then reads the process's CPU time (utime + stime from /proc/<pid>/stat) around

- reads: a fixed number of GetService, of GetIamPolicy and of GetServiceAccount calls (each reported, and their mean);
- writes: a fixed number of update rounds (GetService, UpdateService with a label change: a reconcile, GPU
  accounting, an operation; then one GetOperation once it has settled);
- idle: a few seconds with nothing to do.

Prints JSON: CPU ms per call (per second for idle) at each N, the calls the emulator counted while measuring (the
same at every N), and the ratio between the largest and smallest N.
The emulator keeps up when the ratios stay near 1 (target: reads within ~1.5x between N=100 and N=1000).
Run: `.venv/bin/python benchmarks/emulator_per_call.py --services 100,1000` (add `--state-file` to persist).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2

from tgi_operator.emulator.testing import EmulatorProcess, SyncClients, start_emulator_process, sync_clients

PROJECT = "bench-project"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
IDENTITY = f"tgi-operator@{PROJECT}.iam.gserviceaccount.com"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY = run_v2.Condition.State.CONDITION_SUCCEEDED
RECONCILE_SECONDS = 0.2


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5), after pid and comm


def account_email(i: int) -> str:
    return f"bench-{i:05d}@{PROJECT}.iam.gserviceaccount.com"


def service_name(i: int) -> str:
    return f"{PARENT}/services/bench-{i:05d}"


def gpu_service(i: int) -> run_v2.Service:
    """A TGI-like service on one L4 that must keep one instance running (so every revision start counts GPUs)."""
    return run_v2.Service(
        labels={"app.kubernetes.io/managed-by": "tgi-operator"},
        template=run_v2.RevisionTemplate(
            service_account=account_email(i),
            scaling=run_v2.RevisionScaling(min_instance_count=1, max_instance_count=3),
            max_instance_request_concurrency=64,
            node_selector=run_v2.NodeSelector(accelerator="nvidia-l4"),
            gpu_zonal_redundancy_disabled=True,
            containers=[
                run_v2.Container(
                    image="us-docker.pkg.dev/deeplearning-platform-release/gcr.io/huggingface-text-generation-inference",
                    args=["--model-id", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "--max-concurrent-requests", "64"],
                    ports=[run_v2.ContainerPort(container_port=8080)],
                    resources=run_v2.ResourceRequirements(limits={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}, cpu_idle=False),
                )
            ],
        ),
    )


def populate(c: SyncClients, n: int) -> None:
    """N service accounts, then N services running as them, each with an invoker binding once created."""
    for i in range(n):
        c.iam.create_service_account(
            request=iam_admin_v1.CreateServiceAccountRequest(name=f"projects/{PROJECT}", account_id=f"bench-{i:05d}")
        )
    for i in range(n):
        c.run.create_service(parent=PARENT, service_id=f"bench-{i:05d}", service=gpu_service(i))
    for i in range(n):
        policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=[f"serviceAccount:{account_email(i)}"])])
        c.run.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=service_name(i), policy=policy))


def wait_until(settled: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not settled():
        if time.monotonic() > deadline:
            raise TimeoutError("the emulator's services did not settle in time")
        time.sleep(0.2)


def all_ready(c: SyncClients, n: int) -> bool:
    services = list(c.run.list_services(request=run_v2.ListServicesRequest(parent=PARENT, page_size=1000)))
    return len(services) == n and all(not s.reconciling and s.terminal_condition.state == READY for s in services)


def cpu_per_call(pid: int, calls: int, work: Callable[[], None]) -> float:
    """Emulator CPU ms per call over `work`, which makes `calls` calls."""
    before = cpu_seconds(pid)
    work()
    return (cpu_seconds(pid) - before) * 1000 / calls


def reads(c: SyncClients, n: int, calls: int) -> dict[str, Callable[[], None]]:
    """Per read method, `calls` calls spread over the N services (and their accounts)."""

    def each(call: Callable[[int], object]) -> Callable[[], None]:
        def work() -> None:
            for k in range(calls):
                call(k % n)

        return work

    return {
        "get_service": each(lambda i: c.run.get_service(name=service_name(i))),
        "get_iam_policy": each(
            lambda i: c.run.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=service_name(i)))
        ),
        "get_service_account": each(lambda i: c.iam.get_service_account(name=f"projects/-/serviceAccounts/{account_email(i)}")),
    }


def updates(c: SyncClients, n: int, count: int, settle_seconds: float) -> Callable[[], None]:
    """`count` label changes (each a new generation and a reconcile) on distinct services, then one GetOperation
    each once they had time to settle (polling would make the number of calls depend on timing)."""

    def work() -> None:
        names = []
        for k in range(count):
            service = c.run.get_service(name=service_name(k % n))
            service.labels["bench-round"] = str(k)
            names.append(c.run.update_service(service=service).operation.name)
        time.sleep(settle_seconds)
        for name in names:
            while not c.run.get_operation(request=operations_pb2.GetOperationRequest(name=name)).done:
                time.sleep(settle_seconds)  # rare: only when the machine is very busy

    return work


def measure(n: int, rounds: int, writes: int, idle_seconds: float, state_file: Path | None) -> dict[str, object]:
    args = ["--reconcile-seconds", str(RECONCILE_SECONDS), "--iam-propagation-seconds", "0", "--gpu-quota", str(n * 3 + 10),
            "--identity", IDENTITY]  # fmt: skip
    if state_file is not None:
        args += ["--state-file", str(state_file)]
    emulator: EmulatorProcess = start_emulator_process(args)
    pid = emulator.process.pid
    try:
        with sync_clients(emulator.grpc_endpoint) as c:
            started = time.monotonic()
            populate(c, n)
            wait_until(lambda: all_ready(c, n), timeout=120 + n)
            setup_seconds = time.monotonic() - started
            time.sleep(1.0)  # let the last reconciles and saves pass
            requests.delete(f"{emulator.http_url}/emulator/v1/calls", timeout=10)
            idle_ms = cpu_per_call(pid, 1, lambda: time.sleep(idle_seconds)) / idle_seconds
            read_ms = {method: cpu_per_call(pid, rounds, work) for method, work in reads(c, n, rounds).items()}
            write_count = min(writes, n)  # distinct services: a second write to one would supersede the first
            write_ms = cpu_per_call(pid, write_count, updates(c, n, write_count, settle_seconds=RECONCILE_SECONDS * 5))
            counted = requests.get(f"{emulator.http_url}/emulator/v1/calls", timeout=10).json()["calls"]
        return {
            "services": n,
            "read_cpu_ms_per_call": round(sum(read_ms.values()) / len(read_ms), 3),
            **{f"{method}_cpu_ms_per_call": round(ms, 3) for method, ms in read_ms.items()},
            "update_rounds": write_count,
            "update_cpu_ms_per_round": round(write_ms, 3),
            "idle_cpu_ms_per_second": round(idle_ms, 3),
            "calls_measured": {m.rsplit("/", 1)[-1]: sum(codes.values()) for m, codes in sorted(counted.items())},
            "setup_seconds": round(setup_seconds, 1),
        }
    finally:
        emulator.stop()


def ratio(largest: float, smallest: float) -> float | None:
    return round(largest / smallest, 2) if smallest > 0 else None


def main(sizes: list[int], rounds: int, writes: int, idle_seconds: float, persist: bool) -> dict[str, object]:
    results = []
    with tempfile.TemporaryDirectory(prefix="tgi-emulator-bench-") as work:
        for n in sizes:
            state_file = Path(work) / f"state-{n}.json" if persist else None
            results.append(measure(n, rounds, writes, idle_seconds, state_file))
    small, large = min(results, key=lambda r: r["services"]), max(results, key=lambda r: r["services"])
    keys = [k for k in results[0] if k.endswith(("_per_call", "_per_round", "_per_second"))]
    return {
        "calls_per_read_method": rounds,
        "update_rounds": writes,
        "idle_seconds": idle_seconds,
        "state_file": persist,
        "results": results,
        "ratio_largest_to_smallest": {k: ratio(large[k], small[k]) for k in keys},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", default="100,1000", help="comma-separated N values")
    parser.add_argument("--calls", type=int, default=2000, help="calls of each read method (GetService, GetIamPolicy, GetServiceAccount)")
    parser.add_argument("--updates", type=int, default=100, help="update rounds, at most one per service (each reconciles it)")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--state-file", action="store_true", help="run the emulator with a state file")
    a = parser.parse_args()
    sizes = sorted(int(s) for s in a.services.split(","))
    print(json.dumps(main(sizes, a.calls, a.updates, a.idle_seconds, a.state_file), indent=2))
