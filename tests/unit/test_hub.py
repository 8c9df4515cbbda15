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


def test_a_mirrors_credentials_never_reach_a_message() -> None:
    from tgi_operator.hub import _first_line, shown

    assert shown("https://bob:s3cret@mirror.example.com:8443/hf") == "https://mirror.example.com:8443/hf"
    assert shown("https://huggingface.co") == "https://huggingface.co"
    said = _first_line(RuntimeError("404 Client Error.\nfor url: https://bob:s3cret@mirror.example.com/api/models/x"))
    assert "s3cret" not in said and "bob" not in said and "mirror.example.com/api/models/x" in said


async def test_an_unreachable_mirror_is_named_without_its_credentials() -> None:
    endpoint = nowhere().replace("http://", "http://bob:s3cret@")
    with pytest.raises(HubUnreachable) as refused:
        await ModelHub().facts("org/model", None, endpoint=endpoint, timeout=2)
    assert "s3cret" not in str(refused.value)
