"""One scheduler for every TGIService: a queue of next-check times, and at most `concurrency` passes at once.

It replaces a kopf timer per object, which woke every object every second to find nothing due: idle cost now
follows the work that is due, not the number of objects. Per object there is one pass at a time, and a pass
writes its status before it ends (handlers.py), so statuses land in the order they were computed and never go
backwards. An object that changes while its pass runs is passed again right after; a pass whose spec changed
under it drops its result (handlers.py).

What triggers a pass: the first sight of an object (operator start included), a change of its spec (generation) or
of the annotations the pass reads, and its next check (`plan_next`): soon with backoff while Cloud Run deploys or
the model loads, every `resync_seconds` once settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from tgi_operator.reconcile import ObjectRef, Outcome
from tgi_operator.settings import Settings

log = logging.getLogger(__name__)
Key = tuple[str, str]  # namespace, name
WRITE_SETTLE_SECONDS = 30.0  # the longest an event is assumed to lag behind our own status write (see `observe`)


def key_of(ref: ObjectRef) -> Key:
    return ref.namespace, ref.name


@dataclass
class Entry:
    """What the scheduler knows of one object: its latest snapshot, and when and how to pass it next."""

    ref: ObjectRef
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # a pass and the finalizer exclude each other
    due: float | None = None
    running: bool = False
    rerun: bool = False  # it changed while a pass ran: pass it again right after
    deleting: bool = False
    attempt: int = 0  # backoff step while not settled
    redeploy_failed: bool = True  # the next pass may deploy a failed revision again (after a change, or by plan)
    written_version: str | None = None  # resourceVersion of our last status write, until the watch shows it
    written_at: float = 0.0


@dataclass(frozen=True)
class Plan:
    delay: float
    attempt: int
    redeploy_failed: bool


def backoff(attempt: int, settings: Settings, ceiling: float) -> float:
    """Exponential with full jitter, so objects throttled together (a burst of 429s) do not retry together."""
    return random.uniform(0.5, 1.0) * min(settings.poll_initial_seconds * 2 ** min(attempt, 16), ceiling)


def plan_next(outcome: Outcome, attempt: int, settings: Settings) -> Plan:
    """When to pass an object again after this outcome, and whether that pass may redeploy a failed revision."""
    a = outcome.assessment
    if outcome.again:
        return Plan(0.0, attempt, True)
    if a is None:  # a transient cloud error: back off (or wait as long as the cloud asked)
        retry_after = outcome.transient.retry_after if outcome.transient else None
        return Plan(retry_after or backoff(attempt + 1, settings, settings.poll_max_seconds), attempt + 1, True)
    redeploy = a.reason == "RevisionFailed" and not a.stalled  # not given up on: the next pass deploys it again
    if a.ready or a.stalled:
        return Plan(settings.resync_seconds, 0, redeploy)
    # deploying, waiting for the model, or a failed revision to redeploy: back off, then check again
    ceiling = settings.resync_seconds if a.reason == "RevisionFailed" else settings.poll_max_seconds
    return Plan(backoff(attempt, settings, ceiling), attempt + 1, redeploy)


WATCHED_ANNOTATIONS = ("tgi-operator.dev/adopt",)  # annotations a pass reads: a change is a reason to pass again


def _watched(annotations: Mapping[str, str]) -> tuple[str | None, ...]:
    return tuple(annotations.get(name) for name in WATCHED_ANNOTATIONS)


class Scheduler:
    """Runs `work(entry)` for each object when it is due; `work` returns the delay until its next check (None: no
    further check). At most `concurrency` passes run at once, which bounds the operator's cloud and API requests."""

    def __init__(self, work: Callable[[Entry], Awaitable[float | None]], settings: Settings, concurrency: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.entries: dict[Key, Entry] = {}
        self._work = work
        self._settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: list[tuple[float, int, Key]] = []  # (due, tie-breaker, key); items no longer true are skipped
        self._order = itertools.count()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # -- what the watch says ---------------------------------------------------------------------------

    def observe(self, ref: ObjectRef, resource_version: str, *, deleting: bool) -> Entry:
        """The object as the watch (or the initial listing) shows it now."""
        key = key_of(ref)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = Entry(ref, deleting=deleting)
            if not deleting:
                self.schedule(entry, 0.0)
            return entry
        if entry.written_version is not None:
            if resource_version == entry.written_version or self._clock() - entry.written_at > WRITE_SETTLE_SECONDS:
                entry.written_version = None
            else:  # an event from before our last status write: its status is older than the one we wrote
                ref = replace(ref, status=entry.ref.status)
        changed = ref.generation != entry.ref.generation or _watched(ref.annotations) != _watched(entry.ref.annotations)
        entry.ref, entry.deleting = ref, deleting
        if changed and not deleting:
            entry.attempt, entry.redeploy_failed = 0, True
            self.schedule(entry, 0.0)
        return entry

    def wrote_status(self, entry: Entry, status: Mapping[str, object], resource_version: str) -> None:
        """Our status write landed: its result is the status the next pass starts from."""
        entry.ref = replace(entry.ref, status=status)
        entry.written_version, entry.written_at = resource_version, self._clock()

    def forget(self, key: Key) -> None:
        self.entries.pop(key, None)  # its queued item is skipped

    def entry(self, ref: ObjectRef) -> Entry:
        """The object's entry, made if the watch has not shown it yet (the finalizer needs its lock)."""
        return self.entries.setdefault(key_of(ref), Entry(ref))

    # -- the queue --------------------------------------------------------------------------------------

    def schedule(self, entry: Entry, delay: float) -> None:
        """Pass the object in `delay` seconds, unless it is already due sooner; a running pass plans its own next
        one (and runs again right after, when asked for now)."""
        if entry.running:
            entry.rerun = entry.rerun or delay == 0.0
            return
        due = self._clock() + delay
        if entry.due is not None and entry.due <= due:
            return
        entry.due = due
        heapq.heappush(self._queue, (due, next(self._order), key_of(entry.ref)))
        if self._queue[0][0] == due:
            self._wakeup.set()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the `concurrency` slots, for cloud work outside a pass (the finalizer): deleting a thousand
        objects at once makes no more Cloud Run requests in flight than passing them does."""
        async with self._slots:
            yield

    def due_now(self) -> int:
        """Checks that are due and not started (waiting for a slot): the work queue's depth."""
        now = self._clock()
        return sum(1 for entry in list(self.entries.values()) if entry.due is not None and entry.due <= now)

    def start(self) -> None:
        """Starts the loop once, in the caller's context (kopf's event posting lives in its handlers' context)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="tgi-operator scheduler")

    async def stop(self) -> None:
        tasks = [task for task in (self._loop_task, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            entry = await self._next_due()
            entry.due, entry.running = None, True  # from here until the pass ends, `schedule` only marks a rerun
            await self._slots.acquire()
            task = asyncio.create_task(self._pass(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _next_due(self) -> Entry:
        while True:
            self._wakeup.clear()
            entry, now = self._head(), self._clock()
            if entry is not None and entry.due is not None and entry.due <= now:
                heapq.heappop(self._queue)
                return entry
            timeout = entry.due - now if entry is not None and entry.due is not None else None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _head(self) -> Entry | None:
        """The entry at the head of the queue, after dropping items that no longer hold (the object was forgotten,
        rescheduled sooner, or is being deleted)."""
        while self._queue:
            due, _, key = self._queue[0]
            entry = self.entries.get(key)
            if entry is not None and entry.due == due and not entry.deleting:
                return entry
            heapq.heappop(self._queue)
            if entry is not None and entry.due == due:
                entry.due = None
        return None

    async def _pass(self, entry: Entry) -> None:
        delay: float | None
        try:
            delay = await self._work(entry)
        except Exception:  # noqa: BLE001 - a bug in one pass must not stop the others; the object is tried again
            log.exception("pass of %s/%s failed", entry.ref.namespace, entry.ref.name)
            entry.attempt += 1
            delay = backoff(entry.attempt, self._settings, self._settings.resync_seconds)
        finally:
            entry.running = False
            self._slots.release()
        if self.entries.get(key_of(entry.ref)) is not entry or entry.deleting:
            return
        if entry.rerun:
            entry.rerun, delay = False, 0.0
        if delay is not None:
            self.schedule(entry, delay)
