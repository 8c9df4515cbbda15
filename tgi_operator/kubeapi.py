"""The operator's own writes to the Kubernetes API: the TGIService status, as JSON merge patches.

kopf watches the objects and keeps the finalizer; the status is written here, by the pass that computed it and
before that pass ends (scheduler.py), so a status never lands after a newer one — kopf would apply a handler's
status patch after the handler returned, through its own retrying patcher. Connections are bounded (kopf's are
not). The credentials are the ones kopf logs in with (handlers.py hands them over); kopf itself is not used here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from tgi_operator import API_GROUP, API_VERSION, PLURAL

if TYPE_CHECKING:
    from kopf import ConnectionInfo

log = logging.getLogger(__name__)


class StatusWriteError(Exception):
    """The status was not written (the API server refused or was unreachable); the pass is tried again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StatusWriter:
    """`relogin`: fresh credentials after a 401 (a rotated service-account token); kopf's own watch may keep its
    connection, and so its old credentials, for a long time."""

    def __init__(self, credentials: ConnectionInfo, *, relogin: Callable[[], ConnectionInfo | None],
                 connections: int = 8, timeout: float = 30.0) -> None:
        self._credentials = credentials
        self._relogin = relogin
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def renew(self, credentials: ConnectionInfo) -> None:
        """New credentials (kopf logged in again, e.g. after a token rotation): the next write uses them."""
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

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any],
                           *, relogged: bool = False) -> tuple[dict[str, Any], str] | None:
        """Merge-patches .status; returns the status as stored and the object's new resourceVersion, or None when
        the object is gone."""
        url = (f"{self._credentials.server.rstrip('/')}/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/"
               f"{PLURAL}/{name}/status")
        try:
            async with self._open().patch(url, json={"status": patch},
                                          headers={"Content-Type": "application/merge-patch+json"}) as response:
                if response.status == 404:
                    return None
                if response.status == 401 and not relogged and (fresh := await asyncio.to_thread(self._relogin)):
                    self.renew(fresh)
                    return await self.patch_status(namespace, name, patch, relogged=True)
                if response.status >= 400:
                    reason = (await response.text())[:300]  # a Status object: the API server's reason, no secrets
                    raise StatusWriteError(f"status of {namespace}/{name} not written: HTTP {response.status}: "
                                           f"{reason}", _retry_after(response))
                stored = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise StatusWriteError(f"status of {namespace}/{name} not written: {type(exc).__name__}") from exc
        return stored.get("status") or {}, stored["metadata"]["resourceVersion"]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
