"""Benchmark: what N TGIServices cost at steady state, in calls (counts and ratios, not wall-clock goals).

Starts the real control plane, the emulator and the operator (as `make demo` does), applies N copies of the seed,
waits until all are Ready, then watches K resync intervals and reports, per object and resync: Cloud Run reads,
writes (must be 0) and status patches (must be 0). Also the time to get all N Ready, for comparison across
changes on the same machine. Run: `make bench` (or `python benchmarks/steady_state.py --objects 20 --resyncs 3`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import requests

from tgi_operator.devenv import stack
from tgi_operator.devenv.cluster import DevCluster
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.emulator.testing import start_emulator_process

PROJECT = "bench-project"
WRITES = ("CreateService", "UpdateService", "DeleteService", "SetIamPolicy", "CreateServiceAccount", "DeleteServiceAccount")
SEED = (stack.REPO / "manifests" / "samples" / "llama-3-1-8b-awq.yaml").read_text()


def calls(http: str) -> dict[str, int]:
    counts = requests.get(f"{http}/emulator/v1/calls", timeout=10).json()["calls"]
    return {method.rsplit("/", 1)[-1]: sum(codes.values()) for method, codes in counts.items()}


def main(objects: int, resyncs: int, resync_seconds: float) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="tgi-bench-"))
    cluster = DevCluster(work / "cluster")
    cluster.up()
    kube = KubeCluster(cluster.kubeconfig, runs_namespace_controller=False)
    emulator = operator = None
    try:
        stack.install(kube)
        emulator = start_emulator_process(["--reconcile-seconds", "0.5", "--gpu-quota", str(objects * 3),
                                           "--identity", f"tgi-operator@{PROJECT}.iam.gserviceaccount.com"],
                                          log_file=work / "emulator.log")
        env = {**emulator.env, "TGI_OPERATOR_DEFAULT_PROJECT": PROJECT, "TGI_OPERATOR_RESYNC_SECONDS": str(resync_seconds),
               "TGI_OPERATOR_POLL_INITIAL_SECONDS": "0.5", "TGI_OPERATOR_POLL_MAX_SECONDS": "2"}
        operator = stack.start_operator(stack.operator_kubeconfig(kube, work / "op.kubeconfig"), env, work / "operator.log")
        kube.kubectl("create", "namespace", "bench")
        started = time.monotonic()
        manifests = "\n---\n".join(SEED.replace("name: llama-3-1-8b-awq", f"name: llama-{i:03d}") for i in range(objects))
        kube.kubectl("apply", "-n", "bench", "-f", "-", input=manifests)
        kube.kubectl("wait", "-n", "bench", "--for=condition=Ready", "tgis", "--all", f"--timeout={60 + objects * 5}s")
        ready_seconds = time.monotonic() - started

        time.sleep(resync_seconds)  # let the last Ready passes settle
        versions = json.loads(kube.kubectl("get", "tgis", "-n", "bench", "-o", "json").stdout)
        before = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in versions["items"]}
        requests.delete(f"{emulator.http_url}/emulator/v1/calls", timeout=10)
        time.sleep(resync_seconds * resyncs)
        counted = calls(emulator.http_url)
        after = json.loads(kube.kubectl("get", "tgis", "-n", "bench", "-o", "json").stdout)
        patched = sum(1 for o in after["items"] if before[o["metadata"]["name"]] != o["metadata"]["resourceVersion"])
        per = objects * resyncs
        return {
            "objects": objects,
            "resyncs": resyncs,
            "seconds_until_all_ready": round(ready_seconds, 1),
            "get_service_per_object_per_resync": round(counted.get("GetService", 0) / per, 2),
            "get_iam_policy_per_object_per_resync": round(counted.get("GetIamPolicy", 0) / per, 2),
            "get_service_account_per_object_per_resync": round(counted.get("GetServiceAccount", 0) / per, 2),
            "cloud_writes": sum(counted.get(m, 0) for m in WRITES),
            "objects_patched": patched,
        }
    finally:
        if operator:
            operator.stop()
        if emulator:
            emulator.stop()
        cluster.down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--resyncs", type=int, default=3)
    parser.add_argument("--resync-seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(main(args.objects, args.resyncs, args.resync_seconds), indent=2))
