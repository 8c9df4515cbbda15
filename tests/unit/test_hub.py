"""hub.py without a Hub: a Hub that cannot be reached is said at once for a while, not waited for by every pass."""

from __future__ import annotations

import socket
import time

import pytest

from tgi_operator.hub import HubUnreachable, ModelHub, base_url


def nowhere() -> str:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{unused.getsockname()[1]}"


async def test_an_unreachable_hub_is_remembered_for_a_while() -> None:
    hub, endpoint = ModelHub(quiet_seconds=60), nowhere()
    with pytest.raises(HubUnreachable, match="ConnectError") as first:
        await hub.facts("org/model", None, endpoint=endpoint, timeout=2)
    started = time.monotonic()
    with pytest.raises(HubUnreachable) as second:
        await hub.facts("org/other", "main", endpoint=endpoint, timeout=2)
    assert str(second.value) == str(first.value) and time.monotonic() - started < 0.1  # no request: said at once


def test_the_endpoint_is_the_settings_else_huggingface_hubs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    assert base_url("http://127.0.0.1:8091/") == "http://127.0.0.1:8091"
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example")  # HF_ENDPOINT, as huggingface_hub read it
    assert base_url(None) == "https://hub.example"
