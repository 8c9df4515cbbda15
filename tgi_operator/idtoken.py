"""Google ID tokens for calling private Cloud Run services, cached per audience until shortly before expiry.

google-auth finds the identity: GOOGLE_APPLICATION_CREDENTIALS (a service-account or impersonated
service-account JSON file), else the metadata server (GKE Workload Identity, GCE, Cloud Run; locally the
emulator's metadata-compatible endpoint via GCE_METADATA_HOST / GCE_METADATA_IP). Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import google.auth.transport.requests
import requests
from google.auth import jwt
from google.oauth2 import id_token

# Renew this long before `exp`, so a token never expires while a long (streamed) request is in flight.
TOKEN_MARGIN_S = 300
FALLBACK_LIFETIME_S = 600  # a token without `exp` (never from Google) is still reused briefly
KEPT_TOKENS = 64


class GoogleIdTokens:
    """Blocking: a fresh ID token for an audience from the environment's Google identity. The identity is found
    once (google-auth's `fetch_id_token` pings the metadata server and reads the account on every call: three
    requests per token) and each token is then one request over one reused HTTP session."""

    def __init__(self) -> None:
        self._request = google.auth.transport.requests.Request(requests.Session())
        self._identity: Any = None
        self._lock = threading.Lock()

    def __call__(self, audience: str) -> str:
        with self._lock:
            if self._identity is None:
                self._identity = id_token.fetch_id_token_credentials(audience, request=self._request)
            identity = self._identity
        credentials = identity.with_target_audience(audience)
        credentials.refresh(self._request)
        return str(credentials.token)


class IdTokenSource:
    """Async access to cached ID tokens; one fetch at a time per audience, so a burst of requests to one service
    makes one token call, while the tokens of different services are fetched side by side. At most `keep` tokens
    are kept, the least recently used going first: the operator probes each service once per revision, so a token
    per service ever probed (about 1 KiB each) would only grow with the number of services."""

    def __init__(self, fetch: Callable[[str], str] | None = None, margin_s: float = TOKEN_MARGIN_S,
                 keep: int = KEPT_TOKENS) -> None:
        self._fetch = fetch or GoogleIdTokens()
        self._margin_s = margin_s
        self._keep = keep
        self._tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()  # audience -> (token, exp as a Unix time)
        self._fetching: dict[str, asyncio.Future[str]] = {}  # audience -> the fetch in flight

    def _cached(self, audience: str) -> str | None:
        cached = self._tokens.get(audience)
        if cached and cached[1] - self._margin_s > time.time():
            self._tokens.move_to_end(audience)
            return cached[0]
        return None

    async def token(self, audience: str) -> str:
        if (token := self._cached(audience)) is not None:
            return token
        fetching = self._fetching.get(audience)
        if fetching is None:  # the first caller fetches; the others wait for the same result
            fetching = self._fetching[audience] = asyncio.ensure_future(self._fetch_and_keep(audience))
            fetching.add_done_callback(functools.partial(self._fetched, audience))
        return await asyncio.shield(fetching)  # a waiter that gives up does not cancel the others' fetch

    def _fetched(self, audience: str, fetch: asyncio.Future[str]) -> None:
        self._fetching.pop(audience, None)
        if not fetch.cancelled():
            fetch.exception()  # its waiters got it; when they all gave up first, it is not logged as never retrieved

    async def _fetch_and_keep(self, audience: str) -> str:
        token = await asyncio.to_thread(self._fetch, audience)
        expiry = jwt.decode(token, verify=False).get("exp", time.time() + FALLBACK_LIFETIME_S)
        self._tokens[audience] = (token, float(expiry))
        self._tokens.move_to_end(audience)
        while len(self._tokens) > self._keep:
            self._tokens.popitem(last=False)
        return token

    def invalidate(self, audience: str) -> None:
        """Forget the token, e.g. after the service refused it (401/403), so the next call fetches anew."""
        self._tokens.pop(audience, None)
