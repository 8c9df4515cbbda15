"""The issue's targets, checked against a run's figures, and the table (terminal and Markdown) of all runs.

A run is the JSON dict `scale.py` builds for one N; a figure that was not measured (a phase timed out or failed)
is None and shows as "—", its target neither passes nor fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

Run = dict[str, Any]


def _get(run: Run, *path: str) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


# -- targets -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    key: str
    limit: str
    passes: Callable[[Run], bool | None]


def _all_not_none(*values: Any) -> bool:
    return all(v is not None for v in values)


def _ratio_ok(run: Run) -> bool | None:
    if _get(run, "ramp", "timed_out"):
        return False
    ratio = _get(run, "ramp", "ratio_to_floor")
    return None if ratio is None else ratio <= 3.0


def _never_back(run: Run) -> bool | None:
    return _get(run, "ready_regressions", "count") == 0 if _get(run, "ready_regressions") else None


def _reads_ok(run: Run) -> bool | None:
    per = _get(run, "steady", "cloud_reads_per_object_per_resync")
    kube = _get(run, "steady", "kube_reads_per_object_per_resync")
    if per is None or kube is None:
        return None
    return all(value <= 1.0 for value in per.values()) and kube <= 1.0


def _writes_ok(run: Run) -> bool | None:
    steady = _get(run, "steady")
    if not steady:
        return None
    return steady["cloud_writes"] == 0 and steady["kube_writes"] == 0 and steady["objects_patched"] == 0


def _below(path: tuple[str, ...], limit: float) -> Callable[[Run], bool | None]:
    def check(run: Run) -> bool | None:
        value = _get(run, *path)
        return None if value is None else value < limit
    return check


def _at_most(path: tuple[str, ...], limit: float) -> Callable[[Run], bool | None]:
    def check(run: Run) -> bool | None:
        value = _get(run, *path)
        return None if value is None else value <= limit
    return check


TARGETS = (
    Target("ready_within_3x_floor", "≤ 3x (goal 2x)", _ratio_ok),
    Target("never_back_from_ready", "0", _never_back),
    Target("idle_cpu_per_1000", "< 2 %", _below(("steady", "cpu_percent_per_1000_at_default_resync"), 2.0)),
    Target("rss_idle", "< 150 MiB", _below(("steady", "rss_idle_mib"), 150.0)),
    Target("no_refused_at_steady_state", "0", _at_most(("steady", "refused_429"), 0)),
    Target("no_writes_at_steady_state", "0", _writes_ok),
    Target("one_read_of_each_kind", "≤ 1 each", _reads_ok),
    Target("spec_change_within_3s_of_settle", "≤ 3 s", _at_most(("spec_change", "seconds_after_cloud_settled"), 3.0)),
)


def evaluate_targets(run: Run) -> dict[str, bool | None]:
    return {target.key: target.passes(run) for target in TARGETS}


# -- the table ---------------------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _joined(*values: Any, digits: int = 2) -> str:
    return " / ".join(_num(v, digits) for v in values)


def _ramp_seconds(run: Run) -> str:
    ramp = _get(run, "ramp")
    if not ramp:
        return "—"
    if ramp["timed_out"]:
        return f"timed out ({ramp['ready_at_end']}/{run['objects']} Ready after {ramp['seconds']:.0f} s)"
    return f"{ramp['seconds']:.1f} s (first {_num(ramp['first_ready_seconds'], 1, ' s')})"


def _floor_seconds(run: Run) -> str:
    floor = _get(run, "floor")
    if not floor:
        return "—"
    return "timed out" if floor["timed_out"] else _num(floor["seconds"], 1, " s")


def _reads(run: Run) -> str:
    per = _get(run, "steady", "cloud_reads_per_object_per_resync")
    return "—" if per is None else _joined(*per.values())


def _steady_writes(run: Run) -> str:
    steady = _get(run, "steady")
    return "—" if not steady else _joined(steady["cloud_writes"], steady["kube_writes"], steady["objects_patched"])


def _cloud_calls_in_ramp(run: Run) -> str:
    per = _get(run, "ramp", "cloud_calls_per_object")
    if per is None:
        return "—"
    return f"{sum(per.values()):.1f} ({sum(_get(run, 'ramp', 'cloud_calls_failed').values())})"


def _cpu_in_floor(run: Run) -> str:
    cpu = _get(run, "floor", "cpu_seconds")
    if not cpu:
        return "—"
    return _joined(*(cpu.get(p) for p in ("kube-apiserver", "etcd", "benchmark")), digits=1)


def _cpu_during_ramp(run: Run) -> str:
    cpu = _get(run, "ramp", "cpu_seconds")
    if not cpu:
        return "—"
    return _joined(*(cpu.get(p) for p in ("operator", "emulator", "kube-apiserver", "etcd")), digits=1)


def _memory_split(run: Run) -> str:
    """What the process costs before any object (imports, clients), and what each object adds once idle."""
    empty, idle, n = _get(run, "empty_operator", "rss_mib"), _get(run, "steady", "rss_idle_mib"), run.get("objects")
    if empty is None or idle is None or not n:
        return "n/a"
    return f"{empty:.0f} MiB / {max(0.0, idle - empty) * 1024 / n:.0f} KiB"


def _spec_change(run: Run) -> str:
    change = _get(run, "spec_change")
    if not change:
        return "—"
    if change["timed_out"]:
        return "timed out"
    return f"{change['seconds']:.2f} s ({change['seconds_after_cloud_settled']:.2f} s)"


@dataclass(frozen=True)
class Row:
    label: str
    cell: Callable[[Run], str]
    target: str | None = None  # a key of TARGETS


ROWS = (
    Row("floor: N creates + 2N status patches (faster of 2 runs)", _floor_seconds),
    Row("CPU s in floor: apiserver / etcd / client", _cpu_in_floor),
    Row("operator: all N Ready (first one Ready)", _ramp_seconds),
    Row("operator / floor", lambda r: _num(_get(r, "ramp", "ratio_to_floor"), 2, "x"), "ready_within_3x_floor"),
    Row("went back from Ready, nothing changed", lambda r: _num(_get(r, "ready_regressions", "count")),
        "never_back_from_ready"),
    Row("status / metadata writes per object (ramp)",
        lambda r: _joined(_get(r, "ramp", "writes_per_object", "status", "mean"),
                          _get(r, "ramp", "writes_per_object", "metadata", "mean"))),
    Row("operator's kube API requests per object (ramp)",
        lambda r: _num(_get(r, "ramp", "operator_kube_requests_per_object"), 1)),
    Row("operator's Cloud Run calls per object (ramp; not OK)", _cloud_calls_in_ramp),
    Row("refused (429): floor / ramp / steady",
        lambda r: _joined(_get(r, "floor", "refused_429"), _get(r, "ramp", "refused_429"),
                          _get(r, "steady", "refused_429")), "no_refused_at_steady_state"),
    Row("conflicts (409): ramp / steady",
        lambda r: _joined(_get(r, "ramp", "conflicts_409"), _get(r, "steady", "conflicts_409"))),
    Row("per object per resync: GetService / GetIamPolicy / GetServiceAccount", _reads, "one_read_of_each_kind"),
    Row("per object per resync: kube API reads",
        lambda r: _num(_get(r, "steady", "kube_reads_per_object_per_resync"), 2)),
    Row("writes at steady state: cloud / kube / objects patched", _steady_writes, "no_writes_at_steady_state"),
    Row("idle CPU, % of a core (measured at the bench resync)",
        lambda r: _num(_get(r, "steady", "cpu_percent"), 2, " %")),
    Row("idle CPU per 1,000 objects at a 300 s resync (estimate)",
        lambda r: _num(_get(r, "steady", "cpu_percent_per_1000_at_default_resync"), 2, " %"), "idle_cpu_per_1000"),
    Row("RSS idle / peak (MiB)",
        lambda r: _joined(_get(r, "steady", "rss_idle_mib"), _get(r, "operator_rss_peak_mib"), digits=0), "rss_idle"),
    Row("RSS of the operator with no object / per object at idle (KiB)", _memory_split),
    Row("RSS idle, the process's own (anonymous): no object / N objects (MiB)",
        lambda r: _joined(_get(r, "empty_operator", "rss_anon_mib"), _get(r, "steady", "rss_idle_anon_mib"), digits=0)),
    Row("spec change → Ready (after the cloud settled)", _spec_change, "spec_change_within_3s_of_settle"),
    Row("CPU s in ramp: operator / emulator / apiserver / etcd", _cpu_during_ramp),
)
TARGET_LIMITS = {target.key: target.limit for target in TARGETS}


def _mark(run: Run, key: str | None, passed: str, failed: str) -> str:
    if key is None or _get(run, "targets", key) is None:
        return ""
    return f" {passed}" if run["targets"][key] else f" {failed}"


def _header(run: Run) -> str:
    return f"N={run['objects']}" + (" (error)" if run.get("error") else "")


def _settings_line(runs: list[Run]) -> str:
    resyncs = ", ".join(f"N={r['objects']}: {r['resync_seconds']:g} s x {r['resyncs']}" for r in runs)
    first = runs[0]
    return (f"resync (bench): {resyncs}; cloud settles in {first['reconcile_seconds']:g} s (new service accounts "
            f"invisible for {first['iam_propagation_seconds']:g} s); writers at once: {first['concurrency']}; "
            f"the operator's packages: {first.get('operator_packages', 'dev venv')}")


def machine_line(machine: dict[str, Any]) -> str:
    return (f"{machine.get('cpu_model')}, {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB, "
            f"Linux {machine.get('kernel')}, Python {machine.get('python')}, "
            f"kube-apiserver {machine.get('kube_apiserver', '?')}, etcd {machine.get('etcd', '?')}, "
            f"load average at start {machine.get('load_average_at_start')}")


def print_table(results: dict[str, Any], console: Console | None = None) -> None:
    runs = results["runs"]
    table = Table(title="TGIService scale benchmark", caption=machine_line(results["machine"]))
    table.add_column("figure")
    table.add_column("target")
    for run in runs:
        table.add_column(_header(run), justify="right")
    for row in ROWS:
        target = TARGET_LIMITS.get(row.target or "", "")
        table.add_row(row.label, target, *(row.cell(run) + _mark(run, row.target, "[green]✓[/]", "[red]✗[/]")
                                           for run in runs))
    # Wide enough for one line per figure when the output is not a terminal (make bench | tee, CI logs).
    console = console or Console(width=None if Console().is_terminal else 160)
    console.print(table)
    console.print(_settings_line(runs))
    for run in runs:
        if run.get("error"):
            console.print(f"[red]N={run['objects']}: {run['error']}[/]")


def markdown_table(results: dict[str, Any]) -> str:
    runs = results["runs"]
    lines = ["| figure | target | " + " | ".join(_header(run) for run in runs) + " |",
             "|---|---|" + "---:|" * len(runs)]
    for row in ROWS:
        target = TARGET_LIMITS.get(row.target or "", "")
        cells = (row.cell(run) + _mark(run, row.target, "pass", "**FAIL**") for run in runs)
        lines.append(f"| {row.label} | {target} | " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {machine_line(results['machine'])}.", "", f"Settings: {_settings_line(runs)}."]
    return "\n".join(lines) + "\n"
