"""Benchmark: N TGIServices on one control plane, the operator against a floor (see benchmarks/README.md).

For each N, on a fresh kube-apiserver + etcd, Cloud Run emulator and operator process:

1. floor: a plain client creates N copies of the seed and patches each one's status twice (Reconciling, Ready);
   then deletes them, before the operator starts, so it never sees them;
2. ramp: the same client creates N copies for the operator; a watch records every Ready transition and write
   until all N are Ready (and on, to the end of the run);
3. steady state: K resync intervals of nothing to do; Cloud Run calls, kube API requests, writes, CPU and RSS;
4. one spec change: the time until that object is Ready at its new generation.

The operator is a black box: started with `stack.start_operator`, measured through the API server (watch,
/metrics), the emulator's admin API and /proc. Run: `make bench`, or
`python benchmarks/scale.py --objects 20,50` for a quick one.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from scalebench.kube_http import KubeHttp, for_each
from scalebench.ledger import Ledger, writes_per_object
from scalebench.probes import (
    CLOUD_READS,
    CLOUD_WRITES,
    by_verb_and_resource,
    cpu_by_process,
    cpu_seconds,
    cpu_spent,
    emulator_call_codes,
    emulator_calls,
    failed_calls,
    kube_reads,
    kube_writes,
    machine_facts,
    memory_mib,
    request_counts,
    request_delta,
    reset_emulator_calls,
    with_code,
)
from scalebench.report import evaluate_targets, markdown_table, print_table

from tgi_operator.devenv import stack
from tgi_operator.devenv.cluster import DevCluster
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.emulator.testing import EmulatorProcess, start_emulator_process

RESULTS = Path(__file__).resolve().parent / "results"
SEED = yaml.safe_load((stack.REPO / "manifests" / "samples" / "llama-3-1-8b-awq.yaml").read_text())
SEED_MAX_INSTANCES = SEED["spec"].get("scaling", {}).get("maxInstances", 3)  # 3: the API's default
PROJECT = "bench-project"
FLOOR_NAMESPACE, NAMESPACE = "bench-floor", "bench"
DEFAULT_RESYNC_SECONDS = 300.0  # what manifests/base runs the operator with: the idle-CPU estimate is made for it
TRACKED_RESOURCES = ("tgiservices", "events")  # the operator's kube API traffic worth counting per object


@dataclass(frozen=True)
class Options:
    objects: list[int]
    resyncs: int
    resync_seconds: float | None  # None: scaled with N (see resync_for)
    reconcile_seconds: float
    iam_propagation_seconds: float
    concurrency: int
    seconds_per_object: float
    empty_idle_seconds: float
    output: Path
    keep_logs: bool

    def resync_for(self, objects: int) -> float:
        """At least 5 s; at most 20 objects re-read per second, so the steady state stays idle on a small machine
        (5 s at 1,000 objects would be 600 Cloud Run reads a second, a load test rather than an idle)."""
        return self.resync_seconds or max(5.0, objects / 20)


def operator_python() -> tuple[str, str]:
    """The interpreter the operator runs with, and what its packages are: the image's (requirements/image.lock, built
    by hack/build-runtime-venv.sh, which `make bench` passes as TGI_RUNTIME_PYTHON), else this venv's. The dev venv
    carries packages the image has not (kopf imports `kubernetes` when it is there: about 6 MiB of RSS)."""
    runtime = os.environ.get("TGI_RUNTIME_PYTHON")
    if runtime:
        return runtime, "image (requirements/image.lock)"
    return sys.executable, "dev venv (TGI_RUNTIME_PYTHON unset)"


def seed_copies(count: int) -> list[dict[str, Any]]:
    copies = []
    for index in range(count):
        body = copy.deepcopy(SEED)
        body["metadata"]["name"] = f"llama-{index:04d}"
        copies.append(body)
    return copies


def floor_status(generation: int, name: str, ready: bool) -> dict[str, Any]:
    """What a controller would write: first Reconciling, then Ready with a service's URL and revision."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def condition(kind: str, value: bool, reason: str) -> dict[str, Any]:
        return {"type": kind, "status": "True" if value else "False", "reason": reason, "message": reason,
                "lastTransitionTime": now, "observedGeneration": generation}

    status: dict[str, Any] = {"observedGeneration": generation, "conditions": [
        condition("Ready", ready, "Ready" if ready else "Deploying"),
        condition("Reconciling", not ready, "Ready" if ready else "Deploying"),
        condition("Stalled", False, "Ready" if ready else "Deploying"),
    ]}
    if ready:
        status |= {"url": f"https://{name}-abc123-uc.a.run.app", "latestReadyRevision": f"{name}-00001-xyz",
                   "serviceName": f"projects/{PROJECT}/locations/us-central1/services/{name}"}
    return status


async def within(awaitable: Awaitable[Any], seconds: float, watch: asyncio.Task[None] | None = None) -> bool:
    """Await with a deadline: True when done in time, False when it timed out. A watch that died raises here,
    instead of a wait on its events running into the deadline."""
    task = asyncio.ensure_future(awaitable)
    waiting = {task} | ({watch} if watch else set())
    done, _ = await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    if watch in done:
        task.cancel()
        watch.result()  # raises what ended the watch
        raise RuntimeError("the watch ended")
    if task in done:
        task.result()
        return True
    task.cancel()
    return False


class ScaleRun:
    """Everything for one N: its processes (always stopped by `stop`) and its figures (`result`)."""

    def __init__(self, objects: int, options: Options) -> None:
        self.n = objects
        self.options = options
        self.resync = options.resync_for(objects)
        self.work = Path(tempfile.mkdtemp(prefix=f"tgi-scale-{objects}-"))
        self.cluster = DevCluster(self.work / "cluster")
        self.kube = KubeCluster(self.cluster.kubeconfig, runs_namespace_controller=False)
        self.emulator: EmulatorProcess | None = None
        self.operator: stack.OperatorProcess | None = None
        self.result: dict[str, Any] = {
            "objects": objects, "resync_seconds": self.resync, "resyncs": options.resyncs,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "reconcile_seconds": options.reconcile_seconds, "iam_propagation_seconds": options.iam_propagation_seconds,
            "concurrency": options.concurrency, "error": None,
        }

    # -- processes -------------------------------------------------------------------------------------------

    def start_control_plane_and_cloud(self) -> None:
        self.cluster.up()
        stack.install(self.kube)
        self.emulator = start_emulator_process([
            "--reconcile-seconds", str(self.options.reconcile_seconds),
            "--iam-propagation-seconds", str(self.options.iam_propagation_seconds),
            "--gpu-quota", str(self.n * SEED_MAX_INSTANCES),  # every object's ceiling fits: quota is not measured
            "--identity", f"tgi-operator@{PROJECT}.iam.gserviceaccount.com",
        ], log_file=self.work / "emulator.log")

    def start_operator(self) -> None:
        assert self.emulator is not None
        env = {**self.emulator.env, "TGI_OPERATOR_DEFAULT_PROJECT": PROJECT,
               "TGI_OPERATOR_RESYNC_SECONDS": str(self.resync),
               "TGI_OPERATOR_POLL_INITIAL_SECONDS": "0.5", "TGI_OPERATOR_POLL_MAX_SECONDS": "2"}
        kubeconfig = stack.operator_kubeconfig(self.kube, self.work / "operator.kubeconfig")
        python, packages = operator_python()
        if python != sys.executable:  # this checkout's code on the image's packages
            env["PYTHONPATH"] = str(stack.REPO)
        self.result["operator_packages"] = packages
        # At the production log level: --verbose would log a line per gRPC call, which is not what idle costs.
        self.operator = stack.start_operator(kubeconfig, env, self.work / "operator.log", verbose=False,
                                             program=(python, "-m", "tgi_operator.cli"))

    def pids(self) -> dict[str, int]:
        pids = {"benchmark": os.getpid()}
        if self.operator:
            pids["operator"] = self.operator.process.pid
        if self.emulator:
            pids["emulator"] = self.emulator.process.pid
        state = self.cluster.state()
        if state:
            pids |= {"kube-apiserver": state.apiserver_pid, "etcd": state.etcd_pid}
        return pids

    def stop(self) -> None:
        try:
            for process in (self.operator, self.emulator):
                try:
                    if process:
                        process.stop()
                except Exception as exc:  # noqa: BLE001 - stopping the rest matters more
                    print(f"  stopping pid {process.process.pid}: {exc}")
            self._keep_logs()
        finally:
            self.cluster.down()
            shutil.rmtree(self.work, ignore_errors=True)

    def _keep_logs(self) -> None:
        if not self.options.keep_logs:
            return
        target = RESULTS / "logs" / f"N{self.n}"
        target.mkdir(parents=True, exist_ok=True)
        for log in (self.work / "operator.log", self.work / "emulator.log", self.cluster.state_dir / "kube-apiserver.log"):
            if log.exists():
                shutil.copy(log, target / log.name)

    # -- phases ----------------------------------------------------------------------------------------------

    async def measure(self) -> None:
        async with KubeHttp.open(self.cluster.kubeconfig, self.options.concurrency) as api:
            self.result["kube_apiserver"] = await api.server_version()
            await self.floor(api)
            await asyncio.to_thread(self.start_operator)
            await self.empty_idle()
            ledger = Ledger(expected=self.n)
            await api.create_namespace(NAMESPACE)
            watch = asyncio.create_task(api.watch(NAMESPACE, ledger.on_event, ledger.on_relist))
            try:
                if not await within(ledger.synced.wait(), 60, watch):
                    raise RuntimeError("the watch did not list the namespace within 60 s")
                start = time.monotonic()
                if await self.ramp(api, ledger, watch, start):
                    await self.steady_state(api, ledger)
                    await self.spec_change(api, ledger, watch)
                self.result["ready_regressions"] = regressions(ledger, start)
                self.result["watch_relists"] = ledger.relists
            finally:
                watch.cancel()
            self.result["operator_rss_peak_mib"] = memory_mib(self.pids()["operator"])["peak"]

    async def floor(self, api: KubeHttp) -> None:
        """N creates and 2N status patches by a plain client: what the API server needs to make N objects Ready.
        Run twice, and the faster run is the floor: a single run varied from 8 to 12.6 s at N=1,000 on this machine,
        and the faster floor is the stricter one for the operator's ratio."""
        await api.create_namespace(FLOOR_NAMESPACE)
        runs = [await self.floor_once(api) for _ in range(2)]
        self.result["floor"] = {**min(runs, key=lambda run: (run["timed_out"], run["seconds"])),
                                "runs_seconds": [run["seconds"] for run in runs]}

    async def floor_once(self, api: KubeHttp) -> dict[str, Any]:
        before, cpu_before = request_counts(await api.metrics()), cpu_by_process(self.pids())

        async def make_ready(body: dict[str, Any]) -> None:
            created = await api.create(FLOOR_NAMESPACE, body)
            name, generation = created["metadata"]["name"], created["metadata"]["generation"]
            await api.patch_status(FLOOR_NAMESPACE, name, floor_status(generation, name, ready=False))
            await api.patch_status(FLOOR_NAMESPACE, name, floor_status(generation, name, ready=True))

        start = time.monotonic()
        done = await within(for_each(seed_copies(self.n), make_ready, self.options.concurrency), 60 + 0.5 * self.n)
        seconds = time.monotonic() - start
        cpu = cpu_spent(cpu_before, cpu_by_process(self.pids()))
        delta = request_delta(before, request_counts(await api.metrics()))
        print(f"  floor: {seconds:.1f} s{'' if done else ' (timed out)'}")
        await self.remove_floor_objects(api)
        return {"seconds": round(seconds, 2), "timed_out": not done, "requests": 3 * self.n,
                "refused_429": with_code(delta, "429"), "conflicts_409": with_code(delta, "409"),
                "cpu_seconds": {name: cpu[name] for name in ("benchmark", "kube-apiserver", "etcd") if name in cpu}}

    async def remove_floor_objects(self, api: KubeHttp) -> None:
        """They carry no finalizer (no operator ran): one delete-collection removes them, before the operator
        starts, so it never sees them."""
        await api.delete_all(FLOOR_NAMESPACE)

        async def gone() -> None:
            while (await api.list_objects(FLOOR_NAMESPACE))[0]:
                await asyncio.sleep(0.5)

        if not await within(gone(), 60 + 0.1 * self.n):
            raise RuntimeError("the floor's objects were not deleted in time")

    async def empty_idle(self) -> None:
        """The operator's CPU with no object at all: the part of idle CPU that does not grow with N."""
        pid = self.pids()["operator"]
        before = cpu_seconds(pid)
        await asyncio.sleep(self.options.empty_idle_seconds)
        percent = (cpu_seconds(pid) - before) / self.options.empty_idle_seconds * 100
        memory = memory_mib(pid)
        self.result["empty_operator"] = {"cpu_percent": round(percent, 2), "rss_mib": memory["rss"],
                                         "rss_anon_mib": memory["anon"]}

    async def ramp(self, api: KubeHttp, ledger: Ledger, watch: asyncio.Task[None], start: float) -> bool:
        """Create N copies for the operator; True when all were Ready in time."""
        assert self.emulator is not None
        metrics_before, cpu_before = request_counts(await api.metrics()), cpu_by_process(self.pids())
        await asyncio.to_thread(reset_emulator_calls, self.emulator.http_url)
        timeout = 120 + self.options.seconds_per_object * self.n
        creating = asyncio.create_task(
            for_each(seed_copies(self.n), lambda body: api.create(NAMESPACE, body), self.options.concurrency))
        ready = await within(ledger.all_ready.wait(), timeout, watch)
        if not await within(creating, max(1.0, timeout - (time.monotonic() - start))):
            raise RuntimeError("creating the objects did not finish in time")
        end = ledger.all_ready_first_at if ready else time.monotonic()
        cloud = await asyncio.to_thread(emulator_call_codes, self.emulator.http_url)
        delta = request_delta(metrics_before, request_counts(await api.metrics()))
        kube = by_verb_and_resource(delta, TRACKED_RESOURCES)
        # The benchmark's own N creates are not the operator's.
        kube["POST tgiservices"] = kube.get("POST tgiservices", 0) - self.n
        floor = self.result["floor"]
        self.result["ramp"] = {
            "seconds": round(end - start, 2), "timed_out": not ready, "ready_at_end": ledger.ready_now,
            # The first Ready shows the fixed latency of one object (the cloud's settle delays included); the rest
            # of the ramp is throughput.
            "first_ready_seconds": None if ledger.first_ready_at is None else round(ledger.first_ready_at - start, 2),
            "ratio_to_floor": None if floor["timed_out"] or not ready else round((end - start) / floor["seconds"], 2),
            "writes_per_object": writes_per_object(ledger.writes_between(start, end), self.n),
            "refused_429": with_code(delta, "429"), "conflicts_409": with_code(delta, "409"),
            "operator_kube_requests_per_object": round(sum(kube.values()) / self.n, 2),
            "operator_kube_requests": kube,
            "cloud_calls_per_object": {method: round(sum(codes.values()) / self.n, 2)
                                       for method, codes in sorted(cloud.items())},
            "cloud_calls_failed": failed_calls(cloud),
            "cpu_seconds": cpu_spent(cpu_before, cpu_by_process(self.pids())),
        }
        print(f"  ramp: {self.result['ramp']['seconds']:.1f} s, {ledger.ready_now}/{self.n} Ready")
        return ready

    async def steady_state(self, api: KubeHttp, ledger: Ledger) -> None:
        """K resync intervals with nothing to do: every call and write in them is what idling costs."""
        assert self.emulator is not None
        await asyncio.sleep(self.resync)  # the passes right after Ready, and the first resync, settle
        pid = self.pids()["operator"]
        metrics_before = request_counts(await api.metrics())
        # The call counts, the CPU time and the window are taken back to back, so they cover the same seconds.
        await asyncio.to_thread(reset_emulator_calls, self.emulator.http_url)
        cpu_before, start = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(self.resync * self.options.resyncs)
        cpu_after, end = cpu_seconds(pid), time.monotonic()
        calls = await asyncio.to_thread(emulator_calls, self.emulator.http_url)
        memory = memory_mib(pid)
        delta = request_delta(metrics_before, request_counts(await api.metrics()))
        kube = by_verb_and_resource(delta, TRACKED_RESOURCES)
        passes = self.n * (end - start) / self.resync  # object-resyncs the window holds
        cpu_percent = (cpu_after - cpu_before) / (end - start) * 100
        self.result["steady"] = {
            "window_seconds": round(end - start, 1),
            "cloud_reads_per_object_per_resync": {m: round(calls.get(m, 0) / passes, 2) for m in CLOUD_READS},
            "cloud_calls": dict(sorted(calls.items())),
            "cloud_writes": sum(calls.get(m, 0) for m in CLOUD_WRITES),
            "kube_requests": kube,
            "kube_reads_per_object_per_resync": round(kube_reads(kube) / passes, 2),
            "kube_writes": kube_writes(kube),
            "objects_patched": len({w.name for w in ledger.writes_between(start, end)}),
            "refused_429": with_code(delta, "429"), "conflicts_409": with_code(delta, "409"),
            "cpu_percent": round(cpu_percent, 2),
            "cpu_percent_per_1000": round(cpu_percent * 1000 / self.n, 2),
            "cpu_percent_per_1000_at_default_resync": idle_cpu_estimate(
                cpu_percent, self.result["empty_operator"]["cpu_percent"], self.n, self.resync),
            "rss_idle_mib": memory["rss"], "rss_idle_anon_mib": memory["anon"],
        }
        print(f"  steady state: {self.result['steady']['cloud_reads_per_object_per_resync']}, "
              f"CPU {cpu_percent:.1f} %, RSS {memory['rss']} MiB")

    async def spec_change(self, api: KubeHttp, ledger: Ledger, watch: asyncio.Task[None]) -> None:
        """One object's concurrency changes: the time until it is Ready at its new generation."""
        name = seed_copies(1)[0]["metadata"]["name"]
        concurrency = SEED["spec"].get("scaling", {}).get("concurrency", 64)
        metrics_before = request_counts(await api.metrics())
        start = time.monotonic()
        patched = await api.patch(NAMESPACE, name, {"spec": {"scaling": {"concurrency": concurrency // 2}}})
        ready_at = ledger.ready_at_generation(name, patched["metadata"]["generation"])
        done = await within(ready_at, 60 + 0.05 * self.n, watch)
        delta = request_delta(metrics_before, request_counts(await api.metrics()))
        seconds = ready_at.result() - start if done else None
        self.result["spec_change"] = {
            "timed_out": not done,
            "seconds": None if seconds is None else round(seconds, 2),
            "seconds_after_cloud_settled": None if seconds is None else round(seconds - self.options.reconcile_seconds, 2),
            "refused_429": with_code(delta, "429"), "conflicts_409": with_code(delta, "409"),
        }
        print(f"  spec change: {'timed out' if seconds is None else f'{seconds:.2f} s'}")


def idle_cpu_estimate(measured: float, empty: float, objects: int, resync: float) -> float:
    """Idle CPU of an operator holding 1,000 such objects and resyncing every DEFAULT_RESYNC_SECONDS, in % of a
    core: what it spends with no object (`empty`) plus the per-object part of the measured figure, scaled from the
    benchmark's short resync to the default one and from N to 1,000 objects. The measured figure itself, at the
    short resync, is an upper bound for a longer one."""
    per_objects = max(0.0, measured - empty)
    return round(empty + per_objects * resync / DEFAULT_RESYNC_SECONDS * 1000 / objects, 2)


def regressions(ledger: Ledger, since: float) -> dict[str, Any]:
    """Ready=True → not True at an unchanged generation, anywhere in the run; a few examples for the log reader."""
    found = ledger.regressions_between(since, time.monotonic())
    examples = [{"name": r.name, "seconds_after_start": round(r.at - since, 1), "generation": r.generation,
                 "reason": r.reason, "message": r.message[:300]} for r in found[:10]]
    return {"count": len(found), "objects": len({r.name for r in found}), "examples": examples}


def run_at(objects: int, options: Options) -> dict[str, Any]:
    """One N, on its own control plane, emulator and operator; never raises (an error is part of the result)."""
    print(f"N={objects}: resync {options.resync_for(objects):g} s x {options.resyncs}")
    run = ScaleRun(objects, options)
    try:
        run.start_control_plane_and_cloud()
        asyncio.run(run.measure())
    except Exception as exc:  # noqa: BLE001 - reported in the table, the next N still runs
        traceback.print_exc()
        run.result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    finally:
        run.stop()
    run.result["targets"] = evaluate_targets(run.result)
    return run.result


def main(options: Options) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = machine_facts() | {"etcd": _etcd_version()}
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine, "runs": []}
    for objects in options.objects:
        run = run_at(objects, options)
        machine.setdefault("kube_apiserver", run.get("kube_apiserver"))
        results["runs"].append(run)
        options.output.write_text(json.dumps(results, indent=2))  # after each N: a later failure keeps the rest
    render(results, options.output)
    return results


def render(results: dict[str, Any], output: Path) -> None:
    """The table on the terminal, and in Markdown next to the JSON (for benchmarks/README.md)."""
    print_table(results)
    output.with_suffix(".md").write_text(markdown_table(results))
    print(f"JSON: {output}; Markdown table: {output.with_suffix('.md')}")


def _etcd_version() -> str:
    """From the folder `hack/build-testenv.sh` built it in (…/v1.36.3-etcd-v3.6.8)."""
    folder = Path(os.environ.get("KUBEBUILDER_ASSETS", "")).name
    return folder.rsplit("etcd-", 1)[-1] if "etcd-" in folder else "?"


def parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", default="100,300,1000", help="comma-separated N values, each run afresh")
    parser.add_argument("--resyncs", type=int, default=3, help="resync intervals in the steady-state window")
    parser.add_argument("--resync-seconds", type=float, default=None,
                        help="the operator's resync interval (default: max(5, N/20) seconds)")
    parser.add_argument("--reconcile-seconds", type=float, default=0.5, help="the emulator's settle delay")
    parser.add_argument("--iam-propagation-seconds", type=float, default=2.0,
                        help="how long a new service account stays invisible in the emulator")
    parser.add_argument("--concurrency", type=int, default=20, help="requests at once of the floor and the creates")
    parser.add_argument("--seconds-per-object", type=float, default=1.0,
                        help="the ramp's deadline: 120 s plus this per object")
    parser.add_argument("--empty-idle-seconds", type=float, default=10.0,
                        help="how long the operator's CPU is measured with no object")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="run nothing: print the table of a saved result (and write its .md next to it)")
    parser.add_argument("--keep-logs", action=argparse.BooleanOptionalAction, default=True,
                        help="copy the operator, emulator and API server logs to benchmarks/results/logs/N<n>/")
    args = parser.parse_args()
    if args.render:
        render(json.loads(args.render.read_text()), args.render)
        raise SystemExit(0)
    return Options(objects=[int(n) for n in args.objects.split(",") if n.strip()], resyncs=args.resyncs,
                   resync_seconds=args.resync_seconds, reconcile_seconds=args.reconcile_seconds,
                   iam_propagation_seconds=args.iam_propagation_seconds, concurrency=args.concurrency,
                   seconds_per_object=args.seconds_per_object, empty_idle_seconds=args.empty_idle_seconds,
                   output=args.output, keep_logs=args.keep_logs)


if __name__ == "__main__":
    main(parse_args())
