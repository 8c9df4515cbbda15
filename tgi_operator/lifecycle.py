"""The operator process around kopf: health endpoints, leader election, shards, signals.

- `/healthz` (liveness): the process answers. `/readyz`: kopf runs and has started (the leader, or the only
  replica), or a standby that can read the Lease (it could take over).
- With --leader-elect, kopf (watches, passes, finalizers) runs only while this process holds the Lease
  (leader.py). A leader that loses it exits at once (controller-runtime does the same): a restarted pod is a
  standby. A stop by signal lets kopf finish, then hands the Lease back, so a rolling update switches leaders
  in about a second and never has two reconcilers.
- With TGI_OPERATOR_NAMESPACE_SELECTOR, kopf watches the shard's namespaces by name (shard.py) and runs again
  when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import kopf
from aiohttp import web

from tgi_operator import logredact, metrics
from tgi_operator.handlers import CONFIG, RUNTIME, login
from tgi_operator.kubeapi import KubeSession
from tgi_operator.leader import LeaseElector, LeaseTiming
from tgi_operator.memory import release_free_memory_periodically
from tgi_operator.shard import NamespaceShard

log = logging.getLogger("tgi_operator")
LOST_LEASE_EXIT_CODE = 1


@dataclass
class RunOptions:
    namespaces: list[str]
    all_namespaces: bool
    leader_elect: bool = False
    health_port: int | None = None
    health_host: str = "0.0.0.0"
    metrics_port: int | None = None


def instance_identity() -> str:
    """The pod (POD_NAME from the downward API, else the host name) and a random part, as client-go's examples do:
    a restarted container is a new candidate, never mistaken for the holder it was. Passed to kopf too, which
    otherwise asks getpass for a user name, and that fails under an arbitrary UID."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:10]}"


class Health:
    def __init__(self) -> None:
        self.ready: Callable[[], bool] = lambda: False

    async def serve(self, host: str, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    async def _readyz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok") if self.ready() else web.Response(status=503, text="not ready")


def run_operator(options: RunOptions, *, verbose: bool = False, json_logs: bool = False) -> None:
    """Run until SIGINT/SIGTERM (or, as a leader, until the Lease is lost: exit code 1)."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    logredact.install()  # after configure: it filters the handler configure just made
    if options.metrics_port:
        metrics.serve(options.metrics_port, options.health_host)
    asyncio.run(operate(options))


async def operate(options: RunOptions) -> None:
    stopping = asyncio.Event()
    _on_signals(stopping.set)
    health = Health()
    runner = await health.serve(options.health_host, options.health_port) if options.health_port else None
    identity = RUNTIME.identity = instance_identity()
    session = None
    if options.leader_elect or CONFIG.namespace_selector:
        credentials = await asyncio.to_thread(login, kopf.OperatorSettings(), log)
        if credentials is None:
            raise SystemExit("cannot log in to the Kubernetes API (no kubeconfig, no service account)")
        session = KubeSession(credentials, relogin=lambda: login(kopf.OperatorSettings(), log), connections=2)
    elector = _elector(session, identity) if options.leader_elect and session else None
    trimming = asyncio.create_task(release_free_memory_periodically())
    try:
        if elector is not None:
            health.ready = elector.can_read
            if not await _first(elector.acquire(), stopping.wait()):
                return  # stopped while standing by
        await _run_kopf(options, identity, session, elector, health, stopping)
    finally:
        trimming.cancel()
        if elector is not None:
            await elector.release()
        if session is not None:
            await session.close()
        if runner is not None:
            await runner.cleanup()


def _elector(session: KubeSession, identity: str) -> LeaseElector:
    namespace = CONFIG.lease_namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        raise SystemExit("--leader-elect needs the Lease's namespace: set POD_NAMESPACE (the downward API's "
                         "metadata.namespace) or TGI_OPERATOR_LEASE_NAMESPACE")
    timing = LeaseTiming(CONFIG.lease_duration_seconds, CONFIG.renew_deadline_seconds, CONFIG.retry_period_seconds)
    return LeaseElector(session, namespace, CONFIG.lease_name, identity, timing)


async def _run_kopf(options: RunOptions, identity: str, session: KubeSession | None, elector: LeaseElector | None,
                    health: Health, stopping: asyncio.Event) -> None:
    """kopf until a signal; again whenever the shard's namespaces change; exits at once if the Lease is lost."""
    shard = NamespaceShard(session, CONFIG.namespace_selector) if CONFIG.namespace_selector and session else None
    holding = asyncio.create_task(elector.hold()) if elector else None
    members = await shard.members() if shard else None
    try:
        while not stopping.is_set():
            if members is not None and not members:
                log.info("no namespace matches the shard's selector %r yet", CONFIG.namespace_selector)
                health.ready = lambda: True
                members = await _until(shard.changed(members), stopping, holding)  # type: ignore[union-attr]
                continue
            ready, stop_kopf = asyncio.Event(), asyncio.Event()
            health.ready = ready.is_set
            operator = asyncio.create_task(kopf.operator(
                standalone=True, identity=identity, stop_flag=stop_kopf, ready_flag=ready,
                clusterwide=options.all_namespaces and members is None,
                namespaces=sorted(members) if members is not None else options.namespaces))
            changed = asyncio.create_task(shard.changed(members)) if shard and members is not None else None
            waits = {t for t in (operator, changed, holding) if t is not None}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if holding in done:
                _exit_lost_lease(holding.result())
            if operator in done:  # kopf stopped itself: a signal (kopf catches them while it runs)
                stopping.set()
                operator.result()
            else:  # the shard's namespaces changed: kopf again, with the new ones
                members = changed.result()  # type: ignore[union-attr]
                log.info("the shard's namespaces changed to %s: restarting the watches", sorted(members))
                stop_kopf.set()
                await operator
            if changed is not None:
                changed.cancel()
            _on_signals(stopping.set)  # kopf's handlers pointed at the run that ended
    finally:
        if holding is not None:
            holding.cancel()


async def _until(work: asyncio.Future | asyncio.Task | object, stopping: asyncio.Event,
                 holding: asyncio.Task | None) -> frozenset[str] | None:
    """The shard's next namespaces, or None when stopping; exits if the Lease is lost meanwhile."""
    task = asyncio.ensure_future(work)  # type: ignore[arg-type]
    stop = asyncio.create_task(stopping.wait())
    waits = {t for t in (task, stop, holding) if t is not None}
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if holding is not None and holding in done:
        _exit_lost_lease(holding.result())
    stop.cancel()
    if task in done:
        return task.result()
    task.cancel()
    return None


def _exit_lost_lease(why: str) -> None:
    """Not a graceful stop: passes in flight must not go on writing once another replica may lead."""
    log.critical("lost the leader-election Lease (%s): stopping at once", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(LOST_LEASE_EXIT_CODE)


async def _first(wanted: object, stop: object) -> bool:
    """Whether `wanted` finished before `stop`; the other is cancelled."""
    a, b = asyncio.ensure_future(wanted), asyncio.ensure_future(stop)  # type: ignore[arg-type]
    done, pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if a in done:
        a.result()
        return True
    return False


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)
