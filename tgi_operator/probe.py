"""Does the model answer? An authenticated GET {url}/health, then /info, as an invoker would call it.

The ID token comes from google-auth: on GKE with Workload Identity (or any GCE-like host) from the metadata
server; locally from the emulator's metadata-compatible endpoint (GCE_METADATA_HOST / GCE_METADATA_IP).
Tokens are cached per audience until shortly before they expire; they are never logged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import google.auth.transport.requests
from google.auth import jwt
from google.oauth2 import id_token

TOKEN_MARGIN_S = 300


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    detail: str  # why not healthy, for the condition message (status code or error class, never a token)
    info: dict | None = None  # TGI's /info when healthy


class ModelProbe:
    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens: dict[str, tuple[str, float]] = {}

    async def _token(self, audience: str) -> str:
        cached = self._tokens.get(audience)
        if cached and cached[1] - TOKEN_MARGIN_S > time.time():
            return cached[0]
        token = await asyncio.to_thread(id_token.fetch_id_token, google.auth.transport.requests.Request(), audience)
        expiry = jwt.decode(token, verify=False).get("exp", time.time() + 600)
        self._tokens[audience] = (token, float(expiry))
        return token

    async def check(self, url: str) -> ProbeResult:
        try:
            token = await self._token(url)
        except Exception as exc:  # noqa: BLE001 - any failure to get a token means "cannot tell yet"
            return ProbeResult(False, f"cannot obtain an ID token for {url}: {type(exc).__name__}")
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with aiohttp.ClientSession(timeout=self._timeout, headers=headers) as session:
                async with session.get(f"{url}/health") as health:
                    if health.status != 200:
                        if health.status in (401, 403):
                            self._tokens.pop(url, None)
                        return ProbeResult(False, f"GET /health answered {health.status}")
                async with session.get(f"{url}/info") as info:
                    body = await info.json() if info.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return ProbeResult(False, f"GET /health failed: {type(exc).__name__}")
        return ProbeResult(True, "", body)
