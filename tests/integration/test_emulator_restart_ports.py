"""`tgi-operator emulator --state-file`: a restart when a service's saved data-plane port was taken meanwhile.

The state file keeps each service's port so its URL survives restarts; if another process holds that port by then,
the emulator must still start, serve the service on a new port and record the new URL, as a redeploy would.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from emulator_fixtures import OPERATOR, PARENT, AdminApi, seed_service, sync_clients

from tgi_operator.emulator.testing import EmulatorProcess, start_emulator_process

pytestmark = pytest.mark.integration


def port_of(uri: str) -> int:
    port = urlsplit(uri).port
    assert port is not None, uri
    return port


def health(uri: str, emulator: EmulatorProcess, audience: str | None = None) -> int:
    """GET /health as the operator, with an ID token for `audience` (default: the URL called)."""
    token = AdminApi(emulator.http_url).token(OPERATOR, audience or uri)
    return requests.get(uri + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def test_a_saved_port_taken_meanwhile_moves_the_service_to_a_new_url(tmp_path: Path) -> None:
    state_file = tmp_path / "emulator.json"
    args = ["--reconcile-seconds", "0.2", "--identity", OPERATOR, "--state-file", str(state_file)]

    def start() -> EmulatorProcess:
        return start_emulator_process(args, log_file=tmp_path / "emulator.log")

    first = start()
    try:
        with sync_clients(first.grpc_endpoint) as clients:
            created = clients.run.create_service(parent=PARENT, service=seed_service(), service_id="moved").result(timeout=30)
    finally:
        assert first.stop() == 0
    old_port = port_of(created.uri)
    assert json.loads(state_file.read_text())["ports"][created.name] == old_port

    # Another process listens on the service's port while the emulator is down.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()

        second = start()  # starts at all: the taken port is not fatal
        try:
            with sync_clients(second.grpc_endpoint) as clients:
                moved = clients.run.get_service(name=created.name)
            new_port = port_of(moved.uri)
            assert new_port != old_port and list(moved.urls) == [moved.uri]
            assert moved.latest_ready_revision == created.latest_ready_revision  # the same revision, just moved
            assert health(moved.uri, second) == 200
            # The URL is the token's audience: one minted for the old URL is refused at the new one.
            assert health(moved.uri, second, audience=created.uri) == 401

            saved = json.loads(state_file.read_text())
            assert saved["ports"][created.name] == new_port
            assert saved["services"][created.name]["uri"] == moved.uri
            assert saved["services"][created.name]["urls"] == [moved.uri]
            assert saved["serving"][created.name]["uri"] == moved.uri
        finally:
            assert second.stop() == 0
        assert "cannot be used again" in (tmp_path / "emulator.log").read_text()  # the move is logged

    # The new port is the one kept from now on: the next restart serves the service there again.
    third = start()
    try:
        with sync_clients(third.grpc_endpoint) as clients:
            assert clients.run.get_service(name=created.name).uri == moved.uri
        assert health(moved.uri, third) == 200
    finally:
        assert third.stop() == 0
