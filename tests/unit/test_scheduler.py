"""scheduler.py: one queue of next checks, one pass per object at a time, bounded concurrency, fresh statuses.

The work function here stands in for a reconcile pass (it is the scheduler's own seam, not a client's internals);
delays are a few milliseconds so that the order of things, never their timing, is what is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tgi_operator.conditions import Assessment
from tgi_operator.errors import TransientCloudError
from tgi_operator.models import TGIServiceStatus
from tgi_operator.reconcile import ObjectRef, Outcome
from tgi_operator.scheduler import Entry, Scheduler, plan_next
from tgi_operator.settings import Settings

SETTINGS = Settings(resync_seconds=300, poll_initial_seconds=2, poll_max_seconds=30)


def ref(name: str = "a", generation: int = 1, status: dict | None = None, **annotations: str) -> ObjectRef:
    return ObjectRef(namespace="ns", name=name, generation=generation, spec={}, status=status or {},
                     annotations=annotations)


async def settle(scheduler: Scheduler, until: Callable[[], bool], timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not until():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(wait(), timeout)
    await asyncio.sleep(0.02)  # and nothing more happens right after


class Recorder:
    """A pass that records what it saw; `gate` holds passes until set; `delays` says when to pass again."""

    def __init__(self, delays: list[float | None] | None = None) -> None:
        self.passes: list[tuple[str, int]] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self.overlapped = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.delays = delays or []

    async def __call__(self, entry: Entry) -> float | None:
        name, generation = entry.ref.name, entry.ref.generation  # what the pass starts from
        self.overlapped |= name in self.running
        self.running.add(name)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self.gate.wait()
            await asyncio.sleep(0.005)
            self.passes.append((name, generation))
        finally:
            self.running.discard(name)
        return self.delays.pop(0) if self.delays else None


def started(work: Callable[[Entry], Awaitable[float | None]], concurrency: int = 4) -> Scheduler:
    scheduler = Scheduler(work, SETTINGS, concurrency)
    scheduler.start()
    return scheduler


async def test_a_new_object_is_passed_at_once_then_at_its_next_check() -> None:
    work = Recorder(delays=[0.01, None])
    scheduler = started(work)
    scheduler.observe(ref(), "1", deleting=False)
    await settle(scheduler, lambda: len(work.passes) == 2)
    assert work.passes == [("a", 1), ("a", 1)]
    await scheduler.stop()


async def test_an_event_that_changes_nothing_a_pass_reads_passes_nothing() -> None:
    work = Recorder()
    scheduler = started(work)
    scheduler.observe(ref(), "1", deleting=False)
    await settle(scheduler, lambda: len(work.passes) == 1)
    scheduler.observe(ref(status={"url": "x"}, other="label"), "2", deleting=False)  # a status or metadata write
    await asyncio.sleep(0.05)
    assert work.passes == [("a", 1)]
    scheduler.observe(ref(**{"tgi-operator.dev/adopt": "uid-1"}), "3", deleting=False)  # read by the pass
    await settle(scheduler, lambda: len(work.passes) == 2)
    await scheduler.stop()


async def test_one_pass_per_object_at_a_time_and_changes_meanwhile_make_one_more() -> None:
    work = Recorder()
    work.gate.clear()
    scheduler = started(work)
    scheduler.observe(ref(generation=1), "1", deleting=False)
    await settle(scheduler, lambda: work.running == {"a"})
    scheduler.observe(ref(generation=2), "2", deleting=False)
    scheduler.observe(ref(generation=3), "3", deleting=False)
    work.gate.set()
    await settle(scheduler, lambda: len(work.passes) == 2)
    assert work.passes == [("a", 1), ("a", 3)]  # the second pass sees the latest spec
    assert not work.overlapped
    await scheduler.stop()


async def test_no_more_than_the_allowed_passes_run_at_once_and_every_object_gets_its_pass() -> None:
    work = Recorder()
    scheduler = started(work, concurrency=3)
    for i in range(12):
        scheduler.observe(ref(f"o{i}"), "1", deleting=False)
    await settle(scheduler, lambda: len(work.passes) == 12)
    assert work.most_at_once == 3
    assert sorted(name for name, _ in work.passes) == sorted(f"o{i}" for i in range(12))
    await scheduler.stop()


async def test_an_earlier_check_replaces_a_later_one() -> None:
    work = Recorder(delays=[300.0])
    scheduler = started(work)
    scheduler.observe(ref(), "1", deleting=False)
    await settle(scheduler, lambda: len(work.passes) == 1)
    scheduler.observe(ref(generation=2), "2", deleting=False)  # due now, not in 300 s
    await settle(scheduler, lambda: len(work.passes) == 2)
    assert scheduler.entries[("ns", "a")].due is None  # its last pass asked for no further check
    await scheduler.stop()


async def test_objects_being_deleted_or_gone_are_not_passed() -> None:
    work = Recorder(delays=[0.02])
    scheduler = started(work)
    scheduler.observe(ref("kept"), "1", deleting=False)
    scheduler.observe(ref("going"), "1", deleting=False)
    scheduler.observe(ref("deleted"), "1", deleting=True)
    scheduler.forget(("ns", "going"))
    await settle(scheduler, lambda: len(work.passes) >= 1)
    await asyncio.sleep(0.1)
    assert {name for name, _ in work.passes} == {"kept"}
    await scheduler.stop()


async def test_a_pass_that_fails_is_tried_again_later_and_the_others_go_on() -> None:
    calls: list[str] = []

    async def work(entry: Entry) -> float | None:
        calls.append(entry.ref.name)
        if entry.ref.name == "broken":
            raise RuntimeError("a bug")
        return None

    scheduler = started(work)
    scheduler.observe(ref("broken"), "1", deleting=False)
    scheduler.observe(ref("fine"), "1", deleting=False)
    await settle(scheduler, lambda: sorted(calls) == ["broken", "fine"])
    assert scheduler.entries[("ns", "broken")].due is not None  # retried, with backoff
    await scheduler.stop()


async def test_an_event_older_than_our_status_write_does_not_bring_back_its_status() -> None:
    scheduler = Scheduler(Recorder(), SETTINGS, 1)  # not started: only the snapshots matter here
    entry = scheduler.observe(ref(status={"phase": "old"}), "4", deleting=False)
    scheduler.wrote_status(entry, {"phase": "ours"}, "5")
    scheduler.observe(ref(status={"phase": "old"}, generation=1), "4", deleting=False)  # delivered late
    assert entry.ref.status == {"phase": "ours"}
    scheduler.observe(ref(status={"phase": "ours"}), "5", deleting=False)  # our write, as the watch shows it
    scheduler.observe(ref(status={"phase": "someone else's"}), "6", deleting=False)
    assert entry.ref.status == {"phase": "someone else's"}


# -- plan_next: when the next pass runs -------------------------------------------------------------------


def outcome(ready: bool = False, stalled: bool = False, reason: str = "Deploying", again: bool = False) -> Outcome:
    return Outcome(TGIServiceStatus(), Assessment(ready, not (ready or stalled), stalled, reason, ""), again=again)


@pytest.mark.parametrize(("result", "delay", "redeploy"), [
    (outcome(ready=True, reason="ServiceReady"), 300.0, False),
    (outcome(stalled=True, reason="NotOwned"), 300.0, False),
    (outcome(again=True), 0.0, True),
])
def test_settled_objects_wait_a_resync_and_a_recorded_target_passes_again_at_once(
    result: Outcome, delay: float, redeploy: bool
) -> None:
    plan = plan_next(result, 3, SETTINGS)
    assert (plan.delay, plan.redeploy_failed) == (delay, redeploy)


def test_a_deploying_object_backs_off_up_to_the_poll_ceiling() -> None:
    delays = []
    attempt = 0
    for _ in range(12):
        plan = plan_next(outcome(), attempt, SETTINGS)
        delays.append(plan.delay)
        attempt = plan.attempt
    assert delays[0] <= 2.0 and max(delays) <= 30.0 and delays[-1] >= 15.0  # jittered between half and all of it


def test_a_failed_revision_not_given_up_on_is_redeployed_with_backoff_up_to_a_resync() -> None:
    plan = plan_next(outcome(reason="RevisionFailed"), 20, SETTINGS)
    assert plan.redeploy_failed and 150.0 <= plan.delay <= 300.0
    assert not plan_next(outcome(stalled=True, reason="RevisionFailed"), 0, SETTINGS).redeploy_failed


def test_a_transient_error_waits_as_long_as_the_cloud_asked_or_backs_off() -> None:
    asked = Outcome(TGIServiceStatus(), None, transient=TransientCloudError("UNAVAILABLE", "busy", retry_after=7.0))
    assert plan_next(asked, 0, SETTINGS).delay == 7.0
    unasked = Outcome(TGIServiceStatus(), None, transient=TransientCloudError("UNAVAILABLE", "busy"))
    plan = plan_next(unasked, 5, SETTINGS)
    assert plan.attempt == 6 and 15.0 <= plan.delay <= 30.0


async def test_work_outside_passes_shares_the_same_slots() -> None:
    work = Recorder()
    work.gate.clear()
    scheduler = started(work, concurrency=2)
    scheduler.observe(ref("a"), "1", deleting=False)
    scheduler.observe(ref("b"), "1", deleting=False)
    await settle(scheduler, lambda: work.running == {"a", "b"})
    finalized = asyncio.Event()

    async def finalize() -> None:
        async with scheduler.slot():
            finalized.set()

    task = asyncio.create_task(finalize())
    await asyncio.sleep(0.02)
    assert not finalized.is_set()  # both slots are taken by passes
    work.gate.set()
    await asyncio.wait_for(task, 5)
    assert finalized.is_set()
    await scheduler.stop()
