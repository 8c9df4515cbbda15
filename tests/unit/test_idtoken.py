"""idtoken.py: ID tokens cached per audience; one fetch per audience at a time, different audiences side by side.

The fetch function is IdTokenSource's own parameter (google-auth's fetch in production); here it records calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

from tgi_operator.idtoken import IdTokenSource


def unsigned_jwt(audience: str, lifetime: float = 3600) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part({'aud': audience, 'exp': time.time() + lifetime})}.c2ln"


class Fetcher:
    """Blocks each fetch until released, and records how many ran at once."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, audience: str) -> str:
        with self._lock:
            self.calls.append(audience)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.release.wait(5)
        with self._lock:
            self.in_flight -= 1
        return unsigned_jwt(audience)


async def test_tokens_of_different_services_are_fetched_side_by_side_and_one_service_costs_one_fetch() -> None:
    fetcher = Fetcher()
    tokens = IdTokenSource(fetch=fetcher)
    audiences = [f"https://svc-{i}.a.run.app" for i in range(3)]
    calls = [asyncio.create_task(tokens.token(a)) for a in audiences for _ in range(4)]
    for _ in range(200):  # until every audience's fetch has started
        if fetcher.in_flight == 3:
            break
        await asyncio.sleep(0.01)
    fetcher.release.set()
    results = await asyncio.gather(*calls)
    assert fetcher.most_in_flight == 3  # not one behind the other
    assert sorted(fetcher.calls) == sorted(audiences)  # four callers per audience, one fetch each
    assert len(set(results)) == 3
    assert await tokens.token(audiences[0]) == results[0]  # cached


async def test_an_invalidated_token_is_fetched_again() -> None:
    fetcher = Fetcher()
    fetcher.release.set()
    tokens = IdTokenSource(fetch=fetcher)
    await tokens.token("https://svc.a.run.app")
    tokens.invalidate("https://svc.a.run.app")
    await tokens.token("https://svc.a.run.app")
    assert fetcher.calls == ["https://svc.a.run.app"] * 2


async def test_only_the_most_recently_used_tokens_are_kept() -> None:
    fetcher = Fetcher()
    fetcher.release.set()
    tokens = IdTokenSource(fetch=fetcher, keep=2)
    for name in ("a", "b", "a", "c"):  # "a" used again before "c" comes: "b" is the least recently used
        await tokens.token(f"https://{name}.a.run.app")
    fetcher.calls.clear()
    await tokens.token("https://a.a.run.app")
    await tokens.token("https://c.a.run.app")
    assert fetcher.calls == []
    await tokens.token("https://b.a.run.app")
    assert fetcher.calls == ["https://b.a.run.app"]


async def test_a_failed_fetch_fails_its_waiters_and_the_next_call_fetches_again() -> None:
    attempts = []

    def flaky(audience: str) -> str:
        attempts.append(audience)
        if len(attempts) == 1:
            raise OSError("metadata server unreachable")
        return unsigned_jwt(audience)

    tokens = IdTokenSource(fetch=flaky)
    results = await asyncio.gather(*(tokens.token("https://svc.a.run.app") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results) and len(attempts) == 1
    assert await tokens.token("https://svc.a.run.app")
    assert len(attempts) == 2
