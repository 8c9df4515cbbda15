"""The Lease loop itself (leader.py) against the real API server: a leader cut off from the API server stops
before a standby may take over, and a standby waits the holder's whole lease duration, counted on its own clock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import kopf
import pytest

from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.kubeapi import KubeSession
from tgi_operator.leader import LeaseElector, LeaseTiming

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
TIMING = LeaseTiming(lease_duration=3.0, renew_deadline=2.0, retry_period=0.25)


def credentials(cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return info


def session(cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> KubeSession:
    return KubeSession(credentials(cluster, monkeypatch), relogin=lambda: None)


async def test_a_partitioned_leader_stops_before_a_standby_takes_over(
    cluster: KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    leader_session, standby_session = session(cluster, monkeypatch), session(cluster, monkeypatch)
    leader = LeaseElector(leader_session, namespace, name, "leader_1", TIMING)
    standby = LeaseElector(standby_session, namespace, name, "standby_2", TIMING)
    try:
        await asyncio.wait_for(leader.acquire(), 5)
        assert leader.leading and not await standby.try_acquire_or_renew() and standby.can_read()
        holding = asyncio.create_task(leader.hold())
        await asyncio.sleep(1.0)  # renewing: the standby keeps seeing a changing record
        assert not holding.done() and not await standby.try_acquire_or_renew()

        # The partition: the leader's API server address now leads nowhere (a port nothing listens on).
        cut = time.monotonic()
        leader_session.renew(dataclasses.replace(credentials(cluster, monkeypatch), server="https://127.0.0.1:9"))
        standby_task = asyncio.create_task(standby.acquire())
        why = await asyncio.wait_for(holding, 10)
        stopped = time.monotonic()
        assert "no renewal succeeded within 2s" in why and not leader.leading
        assert not standby_task.done(), "the standby took over while the old leader could still believe it led"
        await asyncio.wait_for(standby_task, 10)
        took_over = time.monotonic()
        # The leader gave up within its renew deadline of its last renewal; the standby waited a full lease
        # duration after the last change it saw.
        assert stopped - cut <= TIMING.renew_deadline + TIMING.retry_period + 0.5
        assert took_over - cut >= TIMING.lease_duration - TIMING.retry_period - 0.5
        assert standby.leading and standby.observed is not None and standby.observed.transitions == 1
    finally:
        await leader_session.close()
        await standby_session.close()


async def test_release_hands_the_lease_to_a_standby_at_once_but_never_one_taken_since(
    cluster: KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    a_session, b_session = session(cluster, monkeypatch), session(cluster, monkeypatch)
    slow = LeaseTiming(lease_duration=30.0, renew_deadline=20.0, retry_period=0.25)
    a = LeaseElector(a_session, namespace, name, "a_1", slow)
    b = LeaseElector(b_session, namespace, name, "b_2", slow)
    try:
        await a.acquire()
        assert not await b.try_acquire_or_renew()
        await a.release()
        started = time.monotonic()
        await asyncio.wait_for(b.acquire(), 5)  # not the 30 s lease duration
        assert time.monotonic() - started < 2
        # `a` releasing again (a stale second release) must not clear b's Lease: it writes over its own version only.
        a.leading = True
        await a.release()
        assert await b.try_acquire_or_renew() and b.observed is not None and b.observed.holder == "b_2"
    finally:
        await a_session.close()
        await b_session.close()
