"""The operator's own requests to the Kubernetes API: the TGIService status, as JSON merge patches, and the
leader-election Lease (leader.py).

kopf watches the objects and keeps the finalizer; the status is written here, by the pass that computed it and
before that pass ends (scheduler.py), so a status never lands after a newer one — kopf would apply a handler's
status patch after the handler returned, through its own retrying patcher. Connections are bounded (kopf's are
not). The credentials are the ones kopf logs in with (handlers.py hands them over); kopf itself is not used here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from tgi_operator import API_GROUP, API_VERSION, PLURAL

if TYPE_CHECKING:
    from kopf import ConnectionInfo

log = logging.getLogger(__name__)
WATCH_SECONDS = 300  # the timeoutSeconds of our watches


class StatusWriteError(Exception):
    """The status was not written (the API server refused or was unreachable); the pass is tried again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the JSON body, or the first 300 characters of a non-JSON one
    retry_after: float | None  # the Retry-After header (priority and fairness, 429)

    def reason(self) -> str:
        """What a refusal says: the Status object's message (the API server's words, no secrets)."""
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else str(self.body)


class KubeSession:
    """One bounded aiohttp session to the API server with kopf's credentials. `relogin`: fresh credentials after a
    401 (a rotated service-account token); kopf's own watch may keep its connection, and so its old credentials,
    for a long time."""

    def __init__(self, credentials: ConnectionInfo, *, relogin: Callable[[], ConnectionInfo | None],
                 connections: int = 8, timeout: float = 30.0) -> None:
        self._credentials = credentials
        self._relogin = relogin
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def renew(self, credentials: ConnectionInfo) -> None:
        """New credentials (kopf logged in again, e.g. after a token rotation): the next request uses them."""
        if credentials != self._credentials:
            self._credentials, old, self._session = credentials, self._session, None
            if old is not None:
                asyncio.get_running_loop().create_task(old.close())

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self._credentials
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": "tgi-operator"},
                timeout=self._timeout, proxy=info.proxy_url, trust_env=info.trust_env,
            )
        return self._session

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                      timeout: float | None = None, relogged: bool = False) -> Reply:
        """The API server's reply. Raises aiohttp.ClientError or asyncio.TimeoutError when it cannot be reached."""
        url = f"{self._credentials.server.rstrip('/')}{path}"
        options: dict[str, Any] = {"headers": {"Content-Type": content_type}} if body is not None else {}
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self._open().request(method, url, json=body, **options) as response:
            if response.status == 401 and not relogged and (fresh := await asyncio.to_thread(self._relogin)):
                self.renew(fresh)
                return await self.request(method, path, body, content_type=content_type, timeout=timeout,
                                          relogged=True)
            if response.content_type == "application/json":
                payload = await response.json()
            else:
                payload = (await response.text())[:300]
            return Reply(response.status, payload, _retry_after(response))

    async def stream(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch (`path` with watch=1), one JSON object per line, until the server ends it.
        Raises ValueError when the server refuses the watch."""
        url = f"{self._credentials.server.rstrip('/')}{path}"
        # No total deadline: a watch lasts its timeoutSeconds (at most WATCH_SECONDS), with bookmarks or events between.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_SECONDS + 60)
        async with self._open().get(url, timeout=timeout) as response:
            if response.status != 200:
                raise ValueError(f"watch refused: HTTP {response.status}")
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class StatusWriter:
    """Writes the status subresource of TGIServices over a KubeSession."""

    def __init__(self, session: KubeSession) -> None:
        self.session = session

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """Merge-patches .status; returns the status as stored and the object's new resourceVersion, or None when
        the object is gone."""
        path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        try:
            reply = await self.session.request("PATCH", path, {"status": patch},
                                               content_type="application/merge-patch+json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise StatusWriteError(f"status of {namespace}/{name} not written: {type(exc).__name__}") from exc
        if reply.status == 404:
            return None
        if reply.status >= 400:
            raise StatusWriteError(f"status of {namespace}/{name} not written: HTTP {reply.status}: {reply.reason()}",
                                   reply.retry_after)
        return reply.body.get("status") or {}, reply.body["metadata"]["resourceVersion"]


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
