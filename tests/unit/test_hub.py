"""hub.py against a Hub that fails: said at once for a while, not asked by every pass, and a mirror's credentials in
no message. The "Hub" is a local HTTP server that gives one canned answer to every request and counts them."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tgi_operator.hub import HubUnreachable, ModelHub, ModelNotDescribed, base_url


class CannedHub(http.server.ThreadingHTTPServer):
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers, self.requests = status, headers, 0
        super().__init__(("127.0.0.1", 0), _Answer)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Answer(http.server.BaseHTTPRequestHandler):
    server: CannedHub

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests += 1
        body = b'{"error": "canned"}'
        self.send_response(self.server.status)
        for key, value in {**self.server.headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hub_answering(request: pytest.FixtureRequest) -> Iterator[CannedHub]:
    status, headers = request.param
    server = CannedHub(status, headers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("hub_answering", [(503, {})], indirect=True)
async def test_a_failing_hub_is_remembered_for_a_while(hub_answering: CannedHub) -> None:
    hub = ModelHub(quiet_seconds=60)
    with pytest.raises(HubUnreachable, match="503") as first:
        await hub.facts("org/model", None, endpoint=hub_answering.endpoint, timeout=2)
    asked = hub_answering.requests
    assert asked >= 1
    with pytest.raises(HubUnreachable) as second:
        await hub.facts("org/other", "main", endpoint=hub_answering.endpoint, timeout=2)
    assert str(second.value) == str(first.value) and hub_answering.requests == asked  # said at once, not asked


@pytest.mark.parametrize("hub_answering", [(503, {}), (401, {"X-Error-Code": "GatedRepo"})], indirect=True,
                         ids=["unavailable", "gated"])
async def test_a_mirrors_credentials_are_in_no_message(hub_answering: CannedHub) -> None:
    endpoint = hub_answering.endpoint.replace("http://", "http://bob:p@ss-s3cret@")  # an @ in the password too
    with pytest.raises(HubUnreachable) as refused:
        await ModelHub().facts("org/model", None, endpoint=endpoint, timeout=2)
    assert hub_answering.requests >= 1, "the request reached the mirror"
    assert "s3cret" not in str(refused.value) and "bob" not in str(refused.value), refused.value
    assert f"127.0.0.1:{hub_answering.server_address[1]}" in str(refused.value)  # the mirror is named


@pytest.mark.parametrize("hub_answering", [(401, {"X-Error-Code": "GatedRepo"})], indirect=True)
async def test_a_model_the_hub_will_not_describe_does_not_silence_the_hub(hub_answering: CannedHub) -> None:
    hub = ModelHub(quiet_seconds=60)
    for model in ("org/gated", "org/other"):
        with pytest.raises(ModelNotDescribed):
            await hub.facts(model, None, endpoint=hub_answering.endpoint, timeout=2)
    assert hub_answering.requests >= 2  # the second model was asked: the Hub is not taken for down


def test_the_endpoint_is_the_settings_else_hf_endpoint() -> None:
    assert base_url("http://127.0.0.1:8091/") == "http://127.0.0.1:8091"
    probe = "from tgi_operator.hub import base_url; print(base_url(None))"
    env = {**os.environ, "HF_ENDPOINT": "https://hub.example/"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "https://hub.example"
