"""Leader election on a coordination.k8s.io/v1 Lease: client-go's algorithm (k8s.io/client-go/tools/leaderelection),
in asyncio over the operator's own API session (kubeapi.py).

- A candidate reads the Lease; it may take it when nobody holds it, or when the holder has not changed the record
  for the record's `leaseDurationSeconds`, measured on the candidate's own monotonic clock from when it saw the
  record change (never from the timestamps in it: clocks of two nodes may disagree). Writes carry the
  resourceVersion they read, so of two candidates only one wins.
- The leader renews every `retry_period`. It gives up when no renewal has succeeded for `renew_deadline`, counted
  from when the last successful renewal was *sent* (the API server stored it no earlier), and at once when the
  Lease names another holder. renew_deadline < lease_duration: a leader cut off from the API server stops before
  any standby may take over.
- On a clean stop the leader hands the Lease back (no holder, one second), so a standby takes over at once.

Only the record's fields client-go writes are used, so a Go controller's tooling reads this Lease as its own.
Why not the `kubernetes` client's leaderelection module: it runs in threads on the synchronous client and uses
wall-clock time; the operator is asyncio and its image does not carry that client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from tgi_operator import metrics
from tgi_operator.kubeapi import KubeSession

log = logging.getLogger(__name__)
JITTER = 1.2  # client-go's JitterFactor for a candidate's retries


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults (controller-runtime's too): 15 s, 10 s, 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0  # retry period < renew deadline < lease duration (settings.py checks)


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration_seconds: int
    acquire_time: str
    renew_time: str
    transitions: int

    @classmethod
    def from_spec(cls, spec: Any) -> LeaseRecord:
        spec = spec if isinstance(spec, dict) else {}
        return cls(holder=str(spec.get("holderIdentity") or ""), duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=str(spec.get("acquireTime") or ""), renew_time=str(spec.get("renewTime") or ""),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def to_spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.holder or None, "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time, "leaseTransitions": self.transitions}


def may_take(observed: LeaseRecord, observed_at: float, now: float, identity: str) -> bool:
    """Whether `identity` may write the Lease: its own, nobody's, or its holder silent for the record's duration
    since we saw it change (client-go's isLeaseValid, on our own clock)."""
    return not observed.holder or observed.holder == identity or now >= observed_at + observed.duration_seconds


def next_record(old: LeaseRecord | None, identity: str, duration_seconds: int, now: str) -> LeaseRecord:
    """The record a successful acquire or renew writes: a renewal keeps the acquire time; a takeover counts one
    more transition (client-go's tryAcquireOrRenew)."""
    if old is not None and old.holder == identity:
        return replace(old, duration_seconds=duration_seconds, renew_time=now)
    transitions = old.transitions + 1 if old is not None else 0
    return LeaseRecord(identity, duration_seconds, now, now, transitions)


def micro_time(moment: dt.datetime | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    moment = moment or dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(self, session: KubeSession, namespace: str, name: str, identity: str,
                 timing: LeaseTiming = LeaseTiming(), clock: Callable[[], float] = time.monotonic) -> None:
        self.session, self.namespace, self.name, self.identity = session, namespace, name, identity
        self.timing, self.clock = timing, clock
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0
        self.resource_version: str | None = None
        self.renewed_at = -float("inf")  # when the last successful write was sent
        self.read_at = -float("inf")  # when the Lease was last read (a standby that cannot read it is not ready)
        self._set_leading(False)

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def can_read(self) -> bool:
        """Readiness of a standby: it read the Lease within a lease duration, so it could take over."""
        return self.clock() - self.read_at < self.timing.lease_duration

    def held_by_another(self) -> bool:
        return self.observed is not None and bool(self.observed.holder) and self.observed.holder != self.identity

    async def try_acquire_or_renew(self) -> bool:
        sent = self.clock()
        try:
            reply = await self.session.request("GET", f"{self.path}/{self.name}", timeout=self.timing.renew_deadline)
            if reply.status == 404:
                record = next_record(None, self.identity, round(self.timing.lease_duration), micro_time())
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec()}
                reply = await self.session.request("POST", self.path, body, timeout=self.timing.renew_deadline)
                return self._wrote(reply, record, sent)
            if reply.status != 200:
                log.warning("cannot read Lease %s/%s: HTTP %d: %s", self.namespace, self.name, reply.status,
                            reply.reason())
                return False
            self.read_at = self.clock()
            current = LeaseRecord.from_spec(reply.body.get("spec"))
            self.resource_version = reply.body["metadata"]["resourceVersion"]
            if current != self.observed:
                if self.observed is not None and current.holder != self.observed.holder:
                    log.info("Lease %s/%s is now held by %s", self.namespace, self.name, current.holder or "nobody")
                self.observed, self.observed_at = current, self.clock()
            if not may_take(current, self.observed_at, self.clock(), self.identity):
                return False
            record = next_record(current, self.identity, round(self.timing.lease_duration), micro_time())
            body = {**reply.body, "spec": record.to_spec()}  # metadata.resourceVersion: only one writer wins
            reply = await self.session.request("PUT", f"{self.path}/{self.name}", body,
                                               timeout=self.timing.renew_deadline)
            return self._wrote(reply, record, sent)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("cannot reach the API server for Lease %s/%s: %s", self.namespace, self.name,
                        type(exc).__name__)
            return False

    def _wrote(self, reply: Any, record: LeaseRecord, sent: float) -> bool:
        if reply.status not in (200, 201):  # 409: another candidate wrote first
            log.info("Lease %s/%s not written: HTTP %d: %s", self.namespace, self.name, reply.status, reply.reason())
            return False
        self.observed, self.observed_at, self.renewed_at = record, self.clock(), sent
        self.read_at = self.clock()
        self.resource_version = reply.body["metadata"]["resourceVersion"]
        return True

    async def acquire(self) -> None:
        """Returns once this candidate holds the Lease."""
        log.info("waiting for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not await self.try_acquire_or_renew():
            await asyncio.sleep(self.timing.retry_period * random.uniform(1.0, JITTER))
        self._set_leading(True)
        log.info("holding Lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def hold(self) -> str:
        """Renews until leadership is lost; returns why."""
        while True:
            await asyncio.sleep(self.timing.retry_period)
            deadline = self.renewed_at + self.timing.renew_deadline
            while not await self._renew_before(deadline):
                if self.held_by_another():
                    return self._lost(f"the Lease names {self.observed.holder if self.observed else '?'} now")
                if self.clock() >= deadline:
                    return self._lost(f"no renewal succeeded within {self.timing.renew_deadline:g}s")
                await asyncio.sleep(min(self.timing.retry_period, max(0.0, deadline - self.clock())))

    async def _renew_before(self, deadline: float) -> bool:
        remaining = deadline - self.clock()
        if remaining <= 0:
            return False
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), remaining)
        except asyncio.TimeoutError:
            return False

    def _lost(self, why: str) -> str:
        self._set_leading(False)
        return why

    async def release(self) -> None:
        """Hands the Lease back (client-go's ReleaseOnCancel): no holder and a one-second duration, written only over
        the version we last wrote, so a Lease someone else has taken since is left alone."""
        if not self.leading or self.observed is None or self.resource_version is None:
            return
        self._set_leading(False)
        now = micro_time()
        record = LeaseRecord("", 1, now, now, self.observed.transitions)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": self.resource_version},
                "spec": record.to_spec()}
        try:
            reply = await self.session.request("PUT", f"{self.path}/{self.name}", body,
                                               timeout=self.timing.renew_deadline)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("Lease %s/%s not handed back (%s): a standby takes over when it expires", self.namespace,
                        self.name, type(exc).__name__)
            return
        if reply.status == 200:
            log.info("handed back Lease %s/%s", self.namespace, self.name)
        else:
            log.warning("Lease %s/%s not handed back: HTTP %d: %s", self.namespace, self.name, reply.status,
                        reply.reason())

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        metrics.LEADER.labels(self.name).set(1 if leading else 0)
