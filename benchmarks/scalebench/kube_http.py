"""A small asyncio Kubernetes client (aiohttp) for the benchmark: creates, status patches, a watch, /metrics.

Why not the `kubernetes` package: it is synchronous, and the floor should be what the API server takes from a
lean client with bounded concurrency, not what a thread pool can push through a heavy client. A lighter client
makes a stricter floor. The kubeconfig is still read by the `kubernetes` package (it writes the inline client
certificate to files an SSL context can load).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kubernetes.client
import kubernetes.config

GROUP, VERSION, PLURAL = "tgi-operator.dev", "v1alpha1", "tgiservices"
MERGE_PATCH = "application/merge-patch+json"
MAX_ATTEMPTS = 20  # per request, when the API server refuses it (429) or the connection drops
T = TypeVar("T")


class KubeError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status


@dataclass
class ClientCounts:
    """What this client saw: requests sent, and how many the API server refused with 429 (then retried)."""

    sent: int = 0
    refused_429: int = 0


def objects_path(namespace: str, name: str = "", subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return "/".join(part for part in (path, name, subresource) if part)


class KubeHttp:
    """One aiohttp session bound to a kubeconfig's server and credentials; at most `concurrency` requests at once."""

    def __init__(self, session: aiohttp.ClientSession, server: str, headers: dict[str, str]) -> None:
        self._session = session
        self._server = server.rstrip("/")
        self._headers = headers
        self.counts = ClientCounts()

    @classmethod
    @asynccontextmanager
    async def open(cls, kubeconfig: Path, concurrency: int) -> AsyncIterator[KubeHttp]:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        headers = {"Authorization": config.api_key["authorization"]} if config.api_key.get("authorization") else {}
        # A few connections beyond `concurrency`: the watch and the /metrics scrape must never queue behind writes.
        connector = aiohttp.TCPConnector(ssl=context, limit=concurrency + 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield cls(session, config.host, headers)

    # -- requests ------------------------------------------------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """JSON in and out; a 429 waits Retry-After and tries again (counted), any other error raises KubeError."""
        data = None if body is None else json.dumps(body)
        headers = {**self._headers, "Content-Type": content_type, "Accept": "application/json"}
        for attempt in range(MAX_ATTEMPTS):
            self.counts.sent += 1
            try:
                async with self._session.request(method, self._server + path, data=data, headers=headers,
                                                 timeout=aiohttp.ClientTimeout(total=120)) as response:
                    text = await response.text()
                    if response.status == 429:
                        self.counts.refused_429 += 1
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if response.status >= 400:
                        raise KubeError(response.status, method, path, text)
                    return json.loads(text) if text.startswith(("{", "[")) else text
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5)
        raise KubeError(429, method, path, f"still refused after {MAX_ATTEMPTS} attempts")

    async def create_namespace(self, name: str) -> None:
        try:
            await self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                               "metadata": {"name": name}})
        except KubeError as exc:
            if exc.status != 409:  # already there
                raise

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", objects_path(namespace), body)

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", objects_path(namespace, name), patch, MERGE_PATCH)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", objects_path(namespace, name, "status"), {"status": status}, MERGE_PATCH)

    async def list_objects(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        listed = await self.request("GET", objects_path(namespace))
        return listed["items"], listed["metadata"]["resourceVersion"]

    async def delete_all(self, namespace: str) -> None:
        await self.request("DELETE", objects_path(namespace))

    async def server_version(self) -> str:
        return (await self.request("GET", "/version"))["gitVersion"]

    async def metrics(self) -> str:
        return await self.request("GET", "/metrics", content_type="text/plain")

    # -- watch -----------------------------------------------------------------------------------------------

    async def watch(self, namespace: str, on_event: Callable[[str, dict[str, Any]], None],
                    on_relist: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call `on_event(type, object)` for every change in `namespace`, until cancelled.

        Lists first (`on_relist`), then watches from that resourceVersion; a watch the server ends is resumed from
        the last version seen, and one whose version expired (410) starts over with a list, so no change is lost
        without `on_relist` being told."""
        items, version = await self.list_objects(namespace)
        on_relist(items)
        while True:
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": "60"}
            url = self._server + objects_path(namespace)
            timeout = aiohttp.ClientTimeout(total=None, sock_read=90)
            try:
                async with self._session.get(url, params=params, headers=self._headers, timeout=timeout) as response:
                    if response.status >= 400:
                        raise KubeError(response.status, "WATCH", url, await response.text())
                    async for line in response.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise KubeError(event["object"].get("code", 0), "WATCH", url, str(event["object"]))
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], event["object"])
            except KubeError as exc:
                if exc.status != 410:
                    raise
                items, version = await self.list_objects(namespace)
                on_relist(items)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                await asyncio.sleep(0.5)  # resumed from `version`


async def for_each(items: Iterable[T], action: Callable[[T], Awaitable[Any]], concurrency: int) -> None:
    """`action(item)` for every item, at most `concurrency` at a time; the first failure cancels the rest."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(item: T) -> None:
        async with gate:
            await action(item)

    async with asyncio.TaskGroup() as group:
        for item in items:
            group.create_task(gated(item))
