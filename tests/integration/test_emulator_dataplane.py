"""The emulator's data plane over real loopback sockets, driven by real clients.

The DataPlane and an aiohttp app carrying the metadata routes run on their own event loop in a
background thread (as in the emulator process), so the tests use blocking clients as users would:
requests, google-auth, openai, huggingface_hub. IAM is the control plane's; here each service's
`may_invoke` reads a small member set that the tests edit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import huggingface_hub
import openai
import pytest
import requests
from aiohttp import web
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import id_token as google_id_token

from tgi_operator.emulator.dataplane import DataPlane, Endpoint
from tgi_operator.emulator.identity import CERTS_PATH_PEM, MetadataIdentity, TokenIssuer

pytestmark = pytest.mark.timeout(120)

PROJECT = "emu-project"
OPERATOR = f"tgi-operator@{PROJECT}.iam.gserviceaccount.com"
INVOKER = f"app@{PROJECT}.iam.gserviceaccount.com"
STRANGER = f"stranger@{PROJECT}.iam.gserviceaccount.com"
MODEL = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
LAUNCHER_ARGS = [
    "--model-id", MODEL, "--quantize", "awq", "--max-concurrent-requests", "64",
    "--max-input-tokens", "4096", "--max-total-tokens", "8192",
]  # fmt: skip


class Members:
    """A stand-in for the control plane's IAM answer: who holds run.invoker on one service."""

    def __init__(self, *members: str) -> None:
        self.members = set(members)

    def may_invoke(self, email: str) -> bool:
        if "allUsers" in self.members:
            return True
        return bool(email) and email in self.members


class Emulator:
    """The data plane plus a metadata server, on an event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="emulator-loop", daemon=True)
        self.thread.start()
        self.issuer = TokenIssuer()
        self.identity = MetadataIdentity(email=OPERATOR, project_id=PROJECT)
        self.dataplane = DataPlane(self.issuer)
        self.metadata_runner: web.AppRunner | None = None
        self.metadata_host = self.run(self._start_metadata())

    async def _start_metadata(self) -> str:
        from tgi_operator.emulator.identity import add_metadata_routes

        app = web.Application()
        add_metadata_routes(app, self.issuer, self.identity)
        self.metadata_runner = web.AppRunner(app, access_log=None)
        await self.metadata_runner.setup()
        await web.TCPSite(self.metadata_runner, "127.0.0.1", 0).start()
        return f"127.0.0.1:{self.metadata_runner.addresses[0][1]}"

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a plain DataPlane method on the loop's thread (its state belongs to that loop)."""

        async def invoke() -> Any:
            return function(*args)

        return self.run(invoke())

    def publish(self, name: str, members: Members, *, concurrency: int = 8, args: list[str] | None = None,
                env: dict[str, str] | None = None, port: int | None = None) -> str:  # fmt: skip
        endpoint = Endpoint(
            service_name=f"projects/{PROJECT}/locations/us-central1/services/{name}",
            launcher_args=list(LAUNCHER_ARGS if args is None else args),
            env=dict(env or {}),
            concurrency=concurrency,
            may_invoke=members.may_invoke,
        )
        return self.run(self.dataplane.publish(endpoint, port))

    def wait_in_flight(self, service: str, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.call(self.dataplane.in_flight, service) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} never had {count} requests in flight")
            time.sleep(0.02)

    def close(self) -> None:
        async def shutdown() -> None:
            await self.dataplane.close()
            if self.metadata_runner is not None:
                await self.metadata_runner.cleanup()

        self.run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def service_name(name: str) -> str:
    return f"projects/{PROJECT}/locations/us-central1/services/{name}"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emulator = Emulator()
    try:
        yield emulator
    finally:
        emulator.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fetch_id_token_in_fresh_process(metadata_host: str, audience: str) -> str:
    """google-auth reads GCE_METADATA_HOST when it is first imported, so ask from a fresh interpreter,
    exactly as the operator process would run with the variables set."""
    env = {key: value for key, value in os.environ.items() if key != "GOOGLE_APPLICATION_CREDENTIALS"}
    env.update({"GCE_METADATA_HOST": metadata_host, "GCE_METADATA_IP": metadata_host})
    env.pop("NO_GCE_CHECK", None)
    script = (
        "import sys, google.auth.transport.requests, google.oauth2.id_token as t;"
        "print(t.fetch_id_token(google.auth.transport.requests.Request(), sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, audience], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_private_service_answers_like_cloud_run(emulator: Emulator) -> None:
    uri = emulator.publish("private", Members(INVOKER))
    assert uri.startswith("http://127.0.0.1:")

    missing = requests.get(uri + "/info", timeout=10)
    assert missing.status_code == 403
    assert "Your client does not have permission to get URL <code>/info</code> from this server." in missing.text

    for bad_token in (
        "garbage",
        emulator.issuer.mint(INVOKER, "http://127.0.0.1:1"),  # another service's audience
        emulator.issuer.mint(INVOKER, uri, lifetime_s=-60),  # expired
        TokenIssuer().mint(INVOKER, uri),  # not signed by the emulator
    ):
        refused = requests.get(uri + "/info", headers=bearer(bad_token), timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert "Your client does not have permission to the requested URL" in refused.text

    stranger = requests.get(uri + "/info", headers=bearer(emulator.issuer.mint(STRANGER, uri)), timeout=10)
    assert stranger.status_code == 403

    for audience in (uri, uri + "/"):
        allowed = requests.get(uri + "/info", headers=bearer(emulator.issuer.mint(INVOKER, audience)), timeout=10)
        assert allowed.status_code == 200
        info = allowed.json()
        assert (info["model_id"], info["max_concurrent_requests"]) == (MODEL, 64)
        assert (info["max_input_tokens"], info["max_total_tokens"]) == (4096, 8192)

    serverless = {"X-Serverless-Authorization": f"Bearer {emulator.issuer.mint(INVOKER, uri)}"}
    health = requests.get(uri + "/health", headers={**serverless, **bearer("app-level")}, timeout=10)
    assert (health.status_code, health.text) == (200, "")


def test_iam_changes_apply_to_the_next_request(emulator: Emulator) -> None:
    members = Members()
    uri = emulator.publish("late-grant", members)
    token = emulator.issuer.mint(INVOKER, uri)
    assert requests.get(uri + "/health", headers=bearer(token), timeout=10).status_code == 403
    members.members.add(INVOKER)
    assert requests.get(uri + "/health", headers=bearer(token), timeout=10).status_code == 200


def test_public_service_needs_no_token(emulator: Emulator) -> None:
    uri = emulator.publish("public", Members("allUsers"))
    assert requests.get(uri + "/health", timeout=10).status_code == 200
    # Like Cloud Run, a public service passes the Authorization header through unchecked.
    assert requests.get(uri + "/health", headers=bearer("app-specific"), timeout=10).status_code == 200
    reply = requests.post(uri + "/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["generated_text"] == "Emulated reply from"


def test_operator_identity_through_google_auth(emulator: Emulator) -> None:
    members = Members(OPERATOR)
    uri = emulator.publish("probed", members)
    token = fetch_id_token_in_fresh_process(emulator.metadata_host, uri)
    assert emulator.issuer.verify(token, uri) == OPERATOR
    assert requests.get(uri + "/info", headers=bearer(token), timeout=10).status_code == 200

    # Clients can verify the tokens like Google's: certs from the emulator's certs endpoint.
    claims = google_id_token.verify_token(
        token, GoogleAuthRequest(), audience=uri, certs_url=f"http://{emulator.metadata_host}{CERTS_PATH_PEM}"
    )
    assert claims["email"] == OPERATOR and claims["iss"] == "https://accounts.google.com"


def test_metadata_server_surface(emulator: Emulator) -> None:
    base = f"http://{emulator.metadata_host}"
    flavor = {"Metadata-Flavor": "Google"}
    sa = base + "/computeMetadata/v1/instance/service-accounts/default"

    ping = requests.get(base, headers=flavor, timeout=10)
    assert ping.status_code == 200 and ping.headers["Metadata-Flavor"] == "Google"

    assert requests.get(sa + "/identity?audience=x", timeout=10).status_code == 403
    proxied = {**flavor, "X-Forwarded-For": "1.2.3.4"}
    assert requests.get(sa + "/identity?audience=x", headers=proxied, timeout=10).status_code == 403
    assert requests.get(sa + "/identity", headers=flavor, timeout=10).status_code == 400
    unknown_account = base + "/computeMetadata/v1/instance/service-accounts/nobody@x/email"
    assert requests.get(unknown_account, headers=flavor, timeout=10).status_code == 404

    info = requests.get(sa + "/", params={"recursive": "true"}, headers=flavor, timeout=10)
    assert info.json()["email"] == OPERATOR and "default" in info.json()["aliases"]
    assert requests.get(sa + "/email", headers=flavor, timeout=10).text == OPERATOR
    assert requests.get(base + "/computeMetadata/v1/project/project-id", headers=flavor, timeout=10).text == PROJECT
    access = requests.get(sa + "/token", headers=flavor, timeout=10).json()
    assert access["token_type"] == "Bearer" and access["expires_in"] > 0 and access["access_token"]

    # The identity the metadata server mints for can change at runtime.
    emulator.call(setattr, emulator.identity, "email", INVOKER)
    full = {"audience": "http://a", "format": "full"}
    token = requests.get(sa + "/identity", params=full, headers=flavor, timeout=10).text
    assert emulator.issuer.verify(token, "http://a") == INVOKER
    by_email = requests.get(f"{base}/computeMetadata/v1/instance/service-accounts/{INVOKER}/identity",
                            params={"audience": "http://a"}, headers=flavor, timeout=10)  # fmt: skip
    assert emulator.issuer.verify(by_email.text, "http://a") == INVOKER


def test_concurrency_beyond_the_service_limit_is_429(emulator: Emulator) -> None:
    uri = emulator.publish("busy", Members(INVOKER), concurrency=2)
    name = service_name("busy")
    headers = bearer(emulator.issuer.mint(INVOKER, uri))
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
    emulator.call(emulator.dataplane.hold, name)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        parked = [
            pool.submit(requests.post, uri + "/generate", json=body, headers=headers, timeout=30) for _ in range(2)
        ]
        emulator.wait_in_flight(name, 2)
        rejected = requests.post(uri + "/generate", json=body, headers=headers, timeout=10)
        assert rejected.status_code == 429
        assert "no available instance" in rejected.text
        assert requests.get(uri + "/health", headers=headers, timeout=10).status_code == 429
        emulator.call(emulator.dataplane.release, name)
        assert [future.result(timeout=30).status_code for future in parked] == [200, 200]
    assert requests.post(uri + "/generate", json=body, headers=headers, timeout=10).status_code == 200


def test_tgi_max_concurrent_requests_is_its_own_429(emulator: Emulator) -> None:
    args = ["--model-id", MODEL, "--max-concurrent-requests", "1"]
    uri = emulator.publish("tgi-limit", Members(INVOKER), concurrency=4, args=args)
    name = service_name("tgi-limit")
    headers = bearer(emulator.issuer.mint(INVOKER, uri))
    body = {"inputs": "Hello"}
    emulator.call(emulator.dataplane.hold, name)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        parked = pool.submit(requests.post, uri + "/generate", json=body, headers=headers, timeout=30)
        emulator.wait_in_flight(name, 1)
        overloaded = requests.post(uri + "/generate", json=body, headers=headers, timeout=10)
        assert overloaded.status_code == 429
        assert overloaded.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        emulator.call(emulator.dataplane.release, name)
        assert parked.result(timeout=30).status_code == 200


def test_latency_from_the_container_env_keeps_requests_in_flight(emulator: Emulator) -> None:
    uri = emulator.publish("slow", Members(INVOKER), concurrency=1, env={"TGI_EMULATOR_LATENCY_MS": "1500"})
    name = service_name("slow")
    headers = bearer(emulator.issuer.mint(INVOKER, uri))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(requests.post, uri + "/generate", json={"inputs": "Hi"}, headers=headers, timeout=30)
        emulator.wait_in_flight(name, 1)
        assert requests.post(uri + "/generate", json={"inputs": "Hi"}, headers=headers, timeout=10).status_code == 429
        assert slow.result(timeout=30).status_code == 200
    emulator.call(emulator.dataplane.set_latency, name, 0.0)
    assert requests.post(uri + "/generate", json={"inputs": "Hi"}, headers=headers, timeout=10).status_code == 200


def test_validation_errors_are_tgis(emulator: Emulator) -> None:
    args = ["--model-id", MODEL, "--max-input-tokens", "8", "--max-total-tokens", "16"]
    uri = emulator.publish("small", Members(INVOKER), args=args)
    headers = bearer(emulator.issuer.mint(INVOKER, uri))
    too_long = requests.post(uri + "/generate", json={"inputs": "word " * 9}, headers=headers, timeout=10)
    assert too_long.status_code == 422
    assert too_long.json() == {
        "error": "Input validation error: `inputs` must have less than 8 tokens. Given: 9",
        "error_type": "validation",
    }


def test_openai_chat_completion_through_the_url(emulator: Emulator) -> None:
    uri = emulator.publish("chat", Members(INVOKER))
    client = openai.OpenAI(base_url=uri + "/v1", api_key=emulator.issuer.mint(INVOKER, uri), max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model="tgi", messages=messages, max_tokens=64)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.startswith(f"Emulated reply from {MODEL}")
    assert reply.choices[0].finish_reason == "stop" and reply.model == MODEL
    again = client.chat.completions.create(model="tgi", messages=messages, max_tokens=64)
    assert again.choices[0].message.content == reply.choices[0].message.content

    streamed = client.chat.completions.create(model="tgi", messages=messages, max_tokens=64, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices]
    assert "".join(pieces) == reply.choices[0].message.content

    short = client.chat.completions.create(model="tgi", messages=messages, max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    assert [model.id for model in client.models.list()] == [MODEL]

    stranger = openai.OpenAI(base_url=uri + "/v1", api_key=emulator.issuer.mint(STRANGER, uri), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        stranger.chat.completions.create(model="tgi", messages=messages)


def test_huggingface_hub_client_through_the_url(emulator: Emulator) -> None:
    uri = emulator.publish("hf", Members(INVOKER))
    client = huggingface_hub.InferenceClient(model=uri, token=emulator.issuer.mint(INVOKER, uri), timeout=30)
    chat = client.chat_completion(messages=[{"role": "user", "content": "Hello"}], max_tokens=5)
    assert chat.choices[0].message.content.startswith("Emulated reply")
    assert chat.choices[0].finish_reason == "length"
    text = client.text_generation("Hello", max_new_tokens=4)
    assert text == "Emulated reply from " + MODEL
    tokens = list(client.text_generation("Hello", max_new_tokens=4, stream=True))
    assert "".join(tokens) == text
    streamed = client.chat_completion(messages=[{"role": "user", "content": "Hello"}], max_tokens=5, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == chat.choices[0].message.content


def test_republish_updates_in_place_and_withdraw_frees_the_port(emulator: Emulator) -> None:
    members = Members("allUsers")
    uri = emulator.publish("moving", members)
    assert requests.get(uri + "/info", timeout=10).json()["max_concurrent_requests"] == 64
    same = emulator.publish("moving", members, args=["--model-id", "other/model", "--max-concurrent-requests", "3"])
    assert same == uri
    info = requests.get(uri + "/info", timeout=10).json()
    assert (info["model_id"], info["max_concurrent_requests"]) == ("other/model", 3)

    emulator.run(emulator.dataplane.withdraw(service_name("moving")))
    with pytest.raises(requests.ConnectionError):
        requests.get(uri + "/health", timeout=5)

    port = int(uri.rsplit(":", 1)[1])
    assert emulator.publish("moving", members, port=port) == uri  # the control plane re-binds after a restart
    assert requests.get(uri + "/health", timeout=10).status_code == 200


def test_unknown_paths_are_behind_the_auth_check(emulator: Emulator) -> None:
    uri = emulator.publish("paths", Members(INVOKER))
    assert requests.get(uri + "/nope", timeout=10).status_code == 403
    token = emulator.issuer.mint(INVOKER, uri)
    assert requests.get(uri + "/nope", headers=bearer(token), timeout=10).status_code == 404
