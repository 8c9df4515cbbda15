"""Run the emulator from tests and tools: on a background thread, or as a `tgi-operator emulator` process.

A thread (own event loop) lets synchronous clients (`run_v2.ServicesClient`) and the test's own
event loop talk to it without blocking it. A process is what the operator's integration tests and
the demo use; it is ready when it prints its JSON ready line (see README.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import iam_admin_v1, run_v2
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

from tgi_operator.emulator.server import Emulator, EmulatorConfig

T = TypeVar("T")
START_TIMEOUT_S = 30.0


class EmulatorThread:
    """`with EmulatorThread(EmulatorConfig(...)) as emu:` serves on a private loop until the block ends."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tgi-emulator", daemon=True)
        self.emulator: Emulator | None = None

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT_S) -> T:
        """Run a coroutine on the emulator's loop (e.g. to reach `emulator.dataplane`)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> Emulator:
        self._thread.start()

        async def start() -> Emulator:
            emulator = Emulator(self.config)
            await emulator.start()
            return emulator

        self.emulator = self.run(start())
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        if self.emulator is not None:
            self.run(self.emulator.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class EmulatorProcess:
    """A running `tgi-operator emulator` process and what its ready line said."""

    process: subprocess.Popen[str]
    ready: dict[str, Any]

    @property
    def grpc_endpoint(self) -> str:
        return str(self.ready["grpc"])

    @property
    def http_url(self) -> str:
        return str(self.ready["http"])

    @property
    def env(self) -> dict[str, str]:
        return dict(self.ready["env"])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)


def start_emulator_process(
    args: Sequence[str] = (), timeout: float = START_TIMEOUT_S, log_file: Path | None = None
) -> EmulatorProcess:
    """Start `tgi-operator emulator --grpc-port 0 --http-port 0 ARGS` and wait for its ready line."""
    command = [sys.executable, "-m", "tgi_operator.cli", "emulator", "--grpc-port", "0", "--http-port", "0", *args]
    stderr = open(log_file, "a") if log_file else subprocess.DEVNULL  # noqa: SIM115 (lives as long as the process)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break  # the process ended before it was ready
        if line.startswith("{") and json.loads(line).get("ready"):
            return EmulatorProcess(process, json.loads(line))
    process.kill()
    process.wait()
    raise RuntimeError(f"the emulator did not become ready within {timeout} s (exit code {process.returncode})")


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Read stdout on a thread, so waiting for the ready line is bounded and the pipe never fills."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


@dataclass
class SyncClients:
    run: run_v2.ServicesClient
    iam: iam_admin_v1.IAMClient


@contextmanager
def sync_clients(endpoint: str) -> Iterator[SyncClients]:
    """The real synchronous Cloud Run and IAM clients on one insecure channel to an emulator (or any endpoint)."""
    channel = grpc.insecure_channel(endpoint)
    try:
        yield SyncClients(
            run=run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel, credentials=AnonymousCredentials())),
            iam=iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel, credentials=AnonymousCredentials())),
        )
    finally:
        channel.close()
