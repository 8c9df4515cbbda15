"""Every change of the benchmark's TGIServices, as a watch sees them: Ready transitions and writes, timestamped.

From this record come: when all N were first Ready, whether any object ever went back from Ready while nothing
changed (its generation is still the one it became Ready at), and how many status, metadata and spec writes each
object took in a time window. Fed by `KubeHttp.watch`, on the benchmark's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

STATUS, METADATA, SPEC = "status", "metadata", "spec"
# Metadata that changes on every write of any kind: not a metadata write in itself.
VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation")


@dataclass(frozen=True)
class Transition:
    at: float
    name: str
    ready: bool
    generation: int
    reason: str
    message: str


@dataclass(frozen=True)
class Write:
    at: float
    name: str
    kind: str  # STATUS, METADATA or SPEC


@dataclass
class _Seen:
    generation: int
    ready: bool
    ready_generation: int | None  # the generation it last became Ready at
    status_digest: str
    metadata_digest: str


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def is_ready(obj: dict[str, Any]) -> bool:
    """kstatus Current: Ready=True, computed from the object's current generation (when it says which)."""
    condition = ready_condition(obj)
    if condition.get("status") != "True":
        return False
    observed = condition.get("observedGeneration", (obj.get("status") or {}).get("observedGeneration"))
    return observed is None or observed == obj["metadata"].get("generation")


def _seen(obj: dict[str, Any], ready_generation: int | None) -> _Seen:
    metadata = {k: v for k, v in obj["metadata"].items() if k not in VOLATILE_METADATA}
    ready = is_ready(obj)
    generation = obj["metadata"].get("generation", 0)
    return _Seen(generation, ready, generation if ready else ready_generation,
                 _digest(obj.get("status")), _digest(metadata))


@dataclass
class Ledger:
    expected: int = 0  # how many objects make "all Ready"
    objects: dict[str, _Seen] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    regressions: list[Transition] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    relists: int = 0
    ready_now: int = 0  # objects Ready at this moment (kept, not counted, so an event costs O(1) at N=1,000)
    first_ready_at: float | None = None
    all_ready_first_at: float | None = None
    all_ready_last_at: float | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _waiters: dict[str, tuple[int, asyncio.Future[float]]] = field(default_factory=dict)

    # -- feeding ---------------------------------------------------------------------------------------------

    def on_relist(self, items: list[dict[str, Any]]) -> None:
        """The first list, or a new one after the watch lost its place: each item as a change seen now."""
        if self.synced.is_set():
            self.relists += 1
        for item in items:
            self.on_event("MODIFIED" if item["metadata"]["name"] in self.objects else "ADDED", item)
        self.synced.set()

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        before = self.objects.get(name)
        if kind == "DELETED":
            self.objects.pop(name, None)
            self.ready_now -= int(bool(before and before.ready))
            return
        after = _seen(obj, before.ready_generation if before else None)
        self.objects[name] = after
        self.ready_now += int(after.ready) - int(before.ready if before else False)
        if before is not None:
            self._count_write(now, name, before, after)
        if before is None or before.ready != after.ready:
            self._transition(now, name, obj, before, after)
        self._wake_waiter(now, name, after)

    def _count_write(self, now: float, name: str, before: _Seen, after: _Seen) -> None:
        if after.generation != before.generation:
            self.writes.append(Write(now, name, SPEC))
        elif after.status_digest != before.status_digest:
            self.writes.append(Write(now, name, STATUS))
        elif after.metadata_digest != before.metadata_digest:
            self.writes.append(Write(now, name, METADATA))
        # else: a write that changed nothing we compare (e.g. only managedFields): not counted

    def _transition(self, now: float, name: str, obj: dict[str, Any], before: _Seen | None, after: _Seen) -> None:
        condition = ready_condition(obj)
        transition = Transition(now, name, after.ready, after.generation, condition.get("reason", ""),
                                condition.get("message", ""))
        self.transitions.append(transition)
        # Back from Ready with the generation it became Ready at: nothing the user did explains it.
        if before is not None and before.ready and not after.ready and after.generation == before.ready_generation:
            self.regressions.append(transition)
        if after.ready and self.first_ready_at is None:
            self.first_ready_at = now
        if self.expected and self.ready_now == self.expected:
            self.all_ready_first_at = self.all_ready_first_at or now
            self.all_ready_last_at = now
            self.all_ready.set()

    def _wake_waiter(self, now: float, name: str, after: _Seen) -> None:
        waiter = self._waiters.get(name)
        if waiter and after.ready and after.generation >= waiter[0] and not waiter[1].done():
            waiter[1].set_result(now)
            del self._waiters[name]

    # -- reading ---------------------------------------------------------------------------------------------

    def generation(self, name: str) -> int:
        return self.objects[name].generation

    def ready_at_generation(self, name: str, generation: int) -> asyncio.Future[float]:
        """Resolves with the time `name` is first seen Ready at `generation` or later."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        seen = self.objects.get(name)
        if seen and seen.ready and seen.generation >= generation:
            future.set_result(time.monotonic())
        else:
            self._waiters[name] = (generation, future)
        return future

    def writes_between(self, start: float, end: float) -> list[Write]:
        return [w for w in self.writes if start <= w.at <= end]

    def regressions_between(self, start: float, end: float) -> list[Transition]:
        return [r for r in self.regressions if start <= r.at <= end]


def writes_per_object(writes: list[Write], objects: int) -> dict[str, dict[str, float]]:
    """Per kind of write: mean and max per object (objects never written count as 0)."""
    summary = {}
    for kind in (STATUS, METADATA, SPEC):
        per_name = Counter(w.name for w in writes if w.kind == kind)
        summary[kind] = {"mean": round(sum(per_name.values()) / objects, 2) if objects else 0.0,
                         "max": max(per_name.values(), default=0)}
    return summary
