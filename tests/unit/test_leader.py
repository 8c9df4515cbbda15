"""client-go's leader-election rules, as pure functions (leader.py)."""

from __future__ import annotations

from tgi_operator.leader import LeaseRecord, may_take, micro_time, next_record

HELD = LeaseRecord("pod-a_1", 15, "t0", "t1", 3)


def test_a_lease_held_by_another_may_be_taken_only_after_its_duration_on_our_clock() -> None:
    assert not may_take(HELD, observed_at=100.0, now=114.9, identity="pod-b_2")
    assert may_take(HELD, observed_at=100.0, now=115.0, identity="pod-b_2")


def test_our_own_or_an_empty_lease_may_always_be_written() -> None:
    assert may_take(HELD, observed_at=100.0, now=100.0, identity="pod-a_1")
    released = LeaseRecord("", 1, "t2", "t2", 3)
    assert may_take(released, observed_at=100.0, now=100.0, identity="pod-b_2")


def test_a_renewal_keeps_the_acquire_time_and_a_takeover_counts_a_transition() -> None:
    renewed = next_record(HELD, "pod-a_1", 15, "t9")
    assert (renewed.acquire_time, renewed.renew_time, renewed.transitions) == ("t0", "t9", 3)
    taken = next_record(HELD, "pod-b_2", 15, "t9")
    assert (taken.holder, taken.acquire_time, taken.renew_time, taken.transitions) == ("pod-b_2", "t9", "t9", 4)
    assert next_record(None, "pod-b_2", 15, "t9").transitions == 0


def test_the_record_reads_and_writes_the_lease_spec_client_go_writes() -> None:
    spec = {"holderIdentity": "pod-a_1", "leaseDurationSeconds": 15, "acquireTime": "t0", "renewTime": "t1",
            "leaseTransitions": 3}
    assert LeaseRecord.from_spec(spec) == HELD and HELD.to_spec() == spec
    assert LeaseRecord.from_spec({}).holder == "" and LeaseRecord.from_spec("garbage").duration_seconds == 0


def test_micro_time_is_rfc3339_with_microseconds_in_utc() -> None:
    import datetime as dt

    moment = dt.datetime(2026, 12, 1, 18, 0, 5, 42, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert micro_time(moment) == "2026-12-01T17:00:05.000042Z"
