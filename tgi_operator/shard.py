"""A shard: the namespaces whose labels match TGI_OPERATOR_NAMESPACE_SELECTOR, for operators that split the work.

kopf is given the shard's namespaces by name, so it never sees (never adds or removes a finalizer on, never passes)
another shard's objects. kopf matches namespaces by name only, and a filter on handlers would be worse than none:
kopf removes its finalizer from objects its handlers do not match, which would strip another shard's finalizer.
When a namespace joins or leaves the shard, the process runs kopf again with the new names (lifecycle.py).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import aiohttp

from tgi_operator.kubeapi import WATCH_SECONDS, KubeSession

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0


class NamespaceShard:
    def __init__(self, session: KubeSession, selector: str) -> None:
        self.session, self.selector = session, selector
        self._version = ""

    @property
    def _query(self) -> str:
        return f"/api/v1/namespaces?labelSelector={quote(self.selector)}"

    async def members(self) -> frozenset[str]:
        """The namespaces the selector matches now (retried until the API server answers)."""
        while True:
            try:
                reply = await self.session.request("GET", self._query)
                if reply.status == 200:
                    self._version = reply.body["metadata"]["resourceVersion"]
                    return frozenset(item["metadata"]["name"] for item in reply.body.get("items", []))
                log.warning("cannot list the shard's namespaces (%s): HTTP %d: %s", self.selector, reply.status,
                            reply.reason())
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("cannot list the shard's namespaces (%s): %s", self.selector, type(exc).__name__)
            await asyncio.sleep(RETRY_SECONDS)

    async def changed(self, members: frozenset[str]) -> frozenset[str]:
        """Returns the new set of namespaces once it differs from `members`. A watch with the label selector says
        when a namespace starts matching (ADDED) or stops (DELETED, for a deleted namespace or changed labels)."""
        current = set(members)
        while True:
            path = f"{self._query}&watch=1&resourceVersion={self._version}&timeoutSeconds={WATCH_SECONDS}"
            try:
                async for event in self.session.stream(path):
                    if event.get("type") == "ERROR":  # 410 Gone: the version is too old; list again
                        break
                    name = event["object"]["metadata"]["name"]
                    if event["type"] == "ADDED":
                        current.add(name)
                    elif event["type"] == "DELETED":
                        current.discard(name)
                    if current != members:
                        return frozenset(current)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                log.info("the watch of the shard's namespaces ended (%s); listing them again", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            current = set(await self.members())  # whatever the watch missed, the list has
            if current != members:
                return frozenset(current)
