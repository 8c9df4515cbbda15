"""Figures read from outside the operator: /proc of a process, the API server's /metrics, the emulator's call
counts, and the machine the benchmark ran on."""

from __future__ import annotations

import os
import platform
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CLOUD_READS = ("GetService", "GetIamPolicy", "GetServiceAccount")
CLOUD_WRITES = ("CreateService", "UpdateService", "DeleteService", "SetIamPolicy", "CreateServiceAccount",
                "DeleteServiceAccount")
KUBE_WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")

# -- /proc -------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (its own threads; children are not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted after the ")"
    return (utime + stime) / CLOCK_TICKS


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (the peak RSS over the process's life), in MiB; and RssAnon, the part of RSS that is the
    process's own memory (the rest is shared libraries' pages: how many are mapped depends on the page cache)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)  # proc(5) gives KiB
    return {"rss": values["VmRSS"], "peak": values["VmHWM"], "anon": values["RssAnon"]}


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process that still runs."""
    seconds = {}
    for name, pid in pids.items():
        try:
            seconds[name] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return seconds


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in before if name in after}


# -- the API server's /metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestKey:
    verb: str
    resource: str
    subresource: str
    code: str


def request_counts(metrics_text: str) -> Counter[RequestKey]:
    """apiserver_request_total by verb, resource, subresource and response code (summed over other labels)."""
    counts: Counter[RequestKey] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            key = RequestKey(labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""),
                             labels.get("code", ""))
            counts[key] += int(sample.value)
    return counts


def request_delta(before: Counter[RequestKey], after: Counter[RequestKey]) -> Counter[RequestKey]:
    delta = Counter(after)
    delta.subtract(before)
    return Counter({key: value for key, value in delta.items() if value > 0})


def with_code(delta: Counter[RequestKey], code: str) -> int:
    return sum(value for key, value in delta.items() if key.code == code)


def by_verb_and_resource(delta: Counter[RequestKey], resources: tuple[str, ...]) -> dict[str, int]:
    """Requests to the given resources, as {"PATCH tgiservices/status": 12, ...}; watches left out (a watch is
    one request for as long as it stays open)."""
    summary: Counter[str] = Counter()
    for key, value in delta.items():
        if key.resource in resources and key.verb != "WATCH":
            summary[f"{key.verb} {key.resource}{'/' + key.subresource if key.subresource else ''}"] += value
    return dict(sorted(summary.items()))


def kube_writes(summary: dict[str, int]) -> int:
    return sum(value for name, value in summary.items() if name.split()[0] in KUBE_WRITE_VERBS)


def kube_reads(summary: dict[str, int]) -> int:
    return sum(value for name, value in summary.items() if name.split()[0] in ("GET", "LIST"))


# -- the emulator's admin API ------------------------------------------------------------------------------------


def emulator_call_codes(http_url: str) -> dict[str, dict[str, int]]:
    """gRPC calls since the last reset: {bare method name: {status code: count}}."""
    counts = requests.get(f"{http_url}/emulator/v1/calls", timeout=30).json()["calls"]
    return {method.rsplit("/", 1)[-1]: codes for method, codes in counts.items()}


def emulator_calls(http_url: str) -> Counter[str]:
    """gRPC calls since the last reset, by bare method name (all status codes together)."""
    return Counter({method: sum(codes.values()) for method, codes in emulator_call_codes(http_url).items()})


def failed_calls(codes: dict[str, dict[str, int]]) -> dict[str, int]:
    """The calls that did not answer OK, as {"GetServiceAccount NOT_FOUND": 3, ...}."""
    return {f"{method} {code}": count for method, by_code in sorted(codes.items())
            for code, count in sorted(by_code.items()) if code != "OK"}


def reset_emulator_calls(http_url: str) -> None:
    requests.delete(f"{http_url}/emulator/v1/calls", timeout=30).raise_for_status()


# -- the machine -------------------------------------------------------------------------------------------------


def machine_facts() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(int(meminfo["MemTotal"].split()[0]) / 1024 / 1024, 1),  # MemTotal is in KiB
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
