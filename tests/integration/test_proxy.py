"""`tgi-operator proxy`: a private TGIService, called from localhost through the proxy with the caller's ID token.

The whole stack (kube-apiserver, emulator, operator); the proxy runs as its own process with an admin kubeconfig
and the emulator's metadata server as its Google identity (the operator identity, which holds roles/run.admin
and so may invoke). Without the proxy, the same request is refused.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import openai
import pytest
import requests
from operator_fixtures import *  # noqa: F403
from google.cloud import run_v2
from operator_fixtures import PROJECT, SAMPLES, Stack, condition, wait_for

from tgi_operator.naming import service_id

pytestmark = pytest.mark.integration
SEED = SAMPLES / "llama-3-1-8b-awq.yaml"
SEED_NAME = "llama-3-1-8b-awq"
MODEL = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
CHAT = {"model": "tgi", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 12}
START_TIMEOUT_S = 30.0


def ready(stack: Stack, namespace: str, name: str = SEED_NAME) -> dict:
    def check() -> dict | None:
        obj = stack.tgis(namespace, name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    return wait_for(check, timeout=40, what=f"{namespace}/{name} Ready")


@dataclass
class ProxyProcess:
    process: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT
    upstream: str
    output: list[str]  # everything it printed (stdout and stderr)


def proxy_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TGI_OPERATOR_", "GOOGLE_APPLICATION_CREDENTIALS"))}
    metadata = {k: v for k, v in stack.emulator.env.items() if k.startswith("GCE_METADATA_")}
    return {**env, **metadata, "KUBECONFIG": str(stack.kube.kubeconfig), "PYTHONUNBUFFERED": "1"}


def run_proxy(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A proxy invocation expected to end by itself (an error)."""
    return subprocess.run([sys.executable, "-m", "tgi_operator.cli", "proxy", *args], capture_output=True, text=True,
                          env={**proxy_env(stack), **(env or {})}, timeout=60)


@contextmanager
def started_proxy(stack: Stack, name: str, namespace: str) -> Iterator[ProxyProcess]:
    """`tgi-operator proxy NAME -n NS --port 0 -v`, once it printed its ready line; stopped (SIGTERM) afterwards."""
    command = [sys.executable, "-m", "tgi_operator.cli", "proxy", name, "-n", namespace, "--port", "0", "--verbose"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=proxy_env(stack))
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the proxy ended before it was ready: {''.join(output)}"
            if line.startswith("Proxying "):
                local, _, upstream = line.removeprefix("Proxying ").strip().partition(" -> ")
                break
            assert time.monotonic() < deadline, f"no ready line within {START_TIMEOUT_S} s: {''.join(output)}"
        yield ProxyProcess(process, local, upstream, output)
    finally:
        process.terminate()
        try:
            assert process.wait(timeout=15) == 0, "the proxy did not stop cleanly on SIGTERM"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def sse_events(response: requests.Response) -> list[str]:
    """The data of each event (SSE: "data:" and an optional space; TGI writes none, except before [DONE])."""
    lines = response.iter_lines(decode_unicode=True)
    return [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]


def test_the_proxy_calls_the_private_service_with_a_token_and_without_it_the_service_refuses(
    operator_stack: Stack, namespace: str
) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    url = ready(stack, namespace)["status"]["url"]

    # Straight to the service: no token, or a made-up one, and Cloud Run (the emulator) refuses.
    assert requests.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 403
    bogus = requests.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer x.y.z"}, timeout=10)
    assert bogus.status_code == 401

    with started_proxy(stack, SEED_NAME, namespace) as proxy:
        assert proxy.upstream == url
        # The client's own Authorization (here a made-up API key) is replaced by the proxy's ID token.
        chat = requests.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-anything"},
                             timeout=10)
        assert chat.status_code == 200, chat.text
        assert chat.json()["object"] == "chat.completion" and chat.json()["choices"][0]["message"]["content"]

        info = requests.get(f"{proxy.url}/info", timeout=10)
        assert info.status_code == 200 and info.json()["model_id"] == MODEL
        assert info.json()["max_concurrent_requests"] == 64

        # Server-sent events, passed on as chunks (no Content-Length: nothing is buffered to measure it).
        with requests.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["Content-Type"].startswith("text/event-stream")
            assert streamed.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in streamed.headers
            events = sse_events(streamed)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert len(chunks) > 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
        streamed_text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert streamed_text == chat.json()["choices"][0]["message"]["content"]  # the stand-in is deterministic

        # The service's own answers pass through unchanged: status, body, query string.
        refused = requests.post(f"{proxy.url}/v1/chat/completions", data=b"not json",
                                headers={"Content-Type": "application/json"}, timeout=10)
        assert refused.status_code == 422 and refused.json()["error_type"] == "validation"
        assert requests.get(f"{proxy.url}/health?probe=1", timeout=10).status_code == 200

        # The openai SDK, pointed at the proxy, with any API key.
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0, timeout=10)
        reply = client.chat.completions.create(model="tgi", messages=CHAT["messages"], max_tokens=12)
        assert reply.choices[0].message.content == chat.json()["choices"][0]["message"]["content"]
        pieces = [c.choices[0].delta.content or "" for c in
                  client.chat.completions.create(model="tgi", messages=CHAT["messages"], max_tokens=12, stream=True)
                  if c.choices]
        assert "".join(pieces) == reply.choices[0].message.content

        port = proxy.url.rsplit(":", 1)[1]
        second = run_proxy(stack, SEED_NAME, "-n", namespace, "--port", port)  # the port is taken: a clear error
        assert second.returncode == 1 and f"error: cannot listen on 127.0.0.1:{port}" in second.stderr

    log = "".join(proxy.output)
    assert "POST /v1/chat/completions -> 200" in log  # --verbose logs each request ...
    assert "eyJ" not in log  # ... but never a token (JWTs start with "eyJ")
    assert "not a loopback address" not in log  # 127.0.0.1 (the default) is nothing to warn about

    # No Google identity at all (no key file, no metadata server): it says so at once instead of serving 502s.
    no_identity = {"GCE_METADATA_HOST": "127.0.0.1:1", "GCE_METADATA_IP": "127.0.0.1:1"}
    nobody = run_proxy(stack, SEED_NAME, "-n", namespace, "--port", "0", env=no_identity)
    assert nobody.returncode == 1 and "Proxying" not in nobody.stdout
    assert f"error: cannot obtain an ID token for {url}: " in nobody.stderr

    # Listening beyond this machine is allowed, but said loudly before anything else happens (here it stops at the
    # missing identity, so it never listens on every interface).
    exposed = run_proxy(stack, SEED_NAME, "-n", namespace, "--port", "0", "--host", "0.0.0.0", env=no_identity)
    assert exposed.returncode == 1
    assert ("WARNING: --host '0.0.0.0' is not a loopback address: anyone who can reach it calls the service with "
            "your Google identity") in exposed.stderr


def served_requests(proxy: ProxyProcess) -> int:
    """TGI's own count of generation requests it received (the stand-in's /metrics, read through the proxy)."""
    metrics = requests.get(f"{proxy.url}/metrics", timeout=10)
    assert metrics.status_code == 200, metrics.text
    return next(int(line.split()[1]) for line in metrics.text.splitlines() if line.startswith("tgi_request_count "))


def test_the_proxy_refuses_requests_whose_host_is_not_the_proxy(operator_stack: Stack, namespace: str) -> None:
    """DNS rebinding: a web page whose name now resolves to 127.0.0.1 reaches the proxy with its own name in Host;
    it must not get to call the service as the user."""
    stack = operator_stack
    stack.apply(namespace, SEED)
    ready(stack, namespace)

    with started_proxy(stack, SEED_NAME, namespace) as proxy:
        port = proxy.url.rsplit(":", 1)[1]
        before = served_requests(proxy)
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{int(port) + 1}"):
            refused = requests.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"Host": host}, timeout=10)
            assert refused.status_code == 403, (host, refused.text)
            assert refused.text.startswith("tgi-operator proxy: refused: the Host header does not name this proxy")
        assert served_requests(proxy) == before  # nothing reached the service

        # The names of this machine, with the proxy's port, are the proxy: those requests go through.
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            chat = requests.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"Host": host}, timeout=10)
            assert chat.status_code == 200, (host, chat.text)
        assert served_requests(proxy) == before + 3

    log = "".join(proxy.output)
    assert "POST /v1/chat/completions -> 403: Host 'attacker.example:" in log


def test_no_proxy_for_an_object_that_is_missing_or_has_no_url_yet(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    missing = run_proxy(stack, "no-such-service", "-n", namespace, "--port", "0")
    assert missing.returncode == 1
    assert f"error: TGIService {namespace}/no-such-service not found" in missing.stderr

    # A service of the same id that is not ours: the object stalls as NotOwned and never gets a URL.
    parent = f"projects/{PROJECT}/locations/us-central1"
    foreign = run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="us-docker.pkg.dev/cloudrun/container/hello")]))
    stack.run.create_service(parent=parent, service_id=service_id(namespace, "taken"), service=foreign).result(timeout=30)
    stack.apply(namespace, "apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: taken\n"
                           "spec:\n  region: us-central1\n  model:\n    id: org/model\n")
    wait_for(lambda: condition(stack.tgis(namespace, "taken"), "Stalled").get("reason") == "NotOwned",
             timeout=40, what="taken Stalled NotOwned")
    stalled = run_proxy(stack, "taken", "-n", namespace, "--port", "0")
    assert stalled.returncode == 1
    assert f"error: TGIService {namespace}/taken is not Ready yet: Cloud Run service" in stalled.stderr
