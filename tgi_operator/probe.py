"""Does the model answer? An authenticated GET {url}/health, then /info, as an invoker would call it.

The ID token comes from idtoken.py (google-auth: on GKE with Workload Identity from the metadata server; locally
from the emulator's metadata-compatible endpoint), cached per audience; tokens are never logged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from tgi_operator.idtoken import IdTokenSource


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    detail: str  # why not healthy, for the condition message (status code or error class, never a token)
    info: dict | None = None  # TGI's /info when healthy


class ModelProbe:
    """One HTTP session for every probe (its connections are reused); the token goes with each request only."""

    def __init__(self, timeout: float = 10.0, tokens: IdTokenSource | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens = tokens or IdTokenSource()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self, url: str) -> ProbeResult:
        try:
            token = await self._tokens.token(url)
        except Exception as exc:  # noqa: BLE001 - any failure to get a token means "cannot tell yet"
            return ProbeResult(False, f"cannot obtain an ID token for {url}: {type(exc).__name__}")
        headers = {"Authorization": f"Bearer {token}"}
        session = self._open()
        try:
            async with session.get(f"{url}/health", headers=headers) as health:
                if health.status != 200:
                    if health.status in (401, 403):
                        self._tokens.invalidate(url)
                    return ProbeResult(False, f"GET /health answered {health.status}")
            async with session.get(f"{url}/info", headers=headers) as info:
                body = await info.json() if info.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return ProbeResult(False, f"GET /health failed: {type(exc).__name__}")
        return ProbeResult(True, "", body)
