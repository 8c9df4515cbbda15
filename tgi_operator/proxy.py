"""A local HTTP proxy to a private Cloud Run service, like `gcloud run services proxy`.

Each request is forwarded as is (method, path, query, body, end-to-end headers) with `Authorization: Bearer
<ID token>` for the service URL as audience, so any local client (curl, the openai SDK) can call the private
service. Responses are streamed back chunk by chunk as they arrive, so server-sent events (`stream: true`)
reach the client token by token. Tokens come from idtoken.py and are never logged.

Two checks keep the user's identity where it belongs: the upstream must be a Cloud Run URL (https://<service>.run.app)
or plain http to this machine (the local emulator), so whoever can write status.url cannot collect the token and it
never travels in clear text; and a request's Host header must name the proxy itself, so a web page cannot drive it
through DNS rebinding (as `kubectl proxy` filters hosts).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tgi_operator.idtoken import IdTokenSource

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",
})  # fmt: skip
# The proxy sets these itself: the upstream Host, its own credentials (X-Serverless-Authorization would win over
# Authorization at Cloud Run's front end), and the body length aiohttp computes.
REQUEST_REPLACED = frozenset({"host", "authorization", "x-serverless-authorization", "content-length"})
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Cloud Run's HTTP/1 request size limit
CONNECT_TIMEOUT_S = 30.0  # no read timeout: a generation may take minutes before its first byte


class UnsafeUpstream(ValueError):
    """The upstream URL is not one the user's ID token may be sent to (see check_upstream_url)."""


# Cloud Run's default URLs: https://SERVICE-PROJECTNUMBER.REGION.run.app and the older
# https://SERVICE-HASH-REGIONCODE.a.run.app. Whole DNS labels, then ".run.app" at the very end: "run.app.evil.com",
# "evilrun.app" and "run.app" itself do not match.
RUN_APP_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+run\.app")
ALLOWED_UPSTREAMS = ("allowed: a Cloud Run URL, https://<service>.run.app on port 443 without user info or path; "
                     "or plain http to this machine, for the local emulator (127.0.0.0/8, ::1, localhost)")


def is_loopback_host(host: str) -> bool:
    """True for this machine's own names: 127.0.0.0/8, ::1 and `localhost` (brackets allowed around IPv6)."""
    bare = host.strip().removeprefix("[").removesuffix("]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def check_upstream_url(url: str) -> None:
    """Raise UnsafeUpstream unless an ID token may be sent to `url`: a Cloud Run default URL (https, *.run.app,
    port 443), or plain http to a loopback host (the local emulator serves http://127.0.0.1:PORT). Nothing else,
    custom domains included: the URL comes from status.url, and whoever can write that must not choose where the
    user's token goes."""
    try:
        parsed = URL(url)
    except ValueError:  # e.g. a backslash in the authority
        parsed = URL()
    if not parsed.is_absolute() or not parsed.raw_host or parsed.scheme not in ("http", "https"):
        raise UnsafeUpstream(f"{url!r} is not an absolute http(s) URL; {ALLOWED_UPSTREAMS}")
    if parsed.scheme == "http" and not is_loopback_host(parsed.host or ""):
        raise UnsafeUpstream(f"{url!r} is not https: the ID token would travel in clear text; {ALLOWED_UPSTREAMS}")
    if parsed.scheme == "https" and not RUN_APP_HOST.fullmatch(parsed.raw_host):
        raise UnsafeUpstream(f"{url!r} is not a Cloud Run URL (host {parsed.raw_host!r}); {ALLOWED_UPSTREAMS}")
    if parsed.scheme == "https" and parsed.explicit_port not in (None, 443):
        raise UnsafeUpstream(f"{url!r} is not on port 443; {ALLOWED_UPSTREAMS}")
    if parsed.user is not None or parsed.password is not None:
        raise UnsafeUpstream(f"{url!r} carries user info; {ALLOWED_UPSTREAMS}")
    # status.url is an origin; a path, query or fragment is not a URL Cloud Run (or the emulator) hands out.
    if parsed.raw_path not in ("", "/") or parsed.raw_query_string or parsed.raw_fragment:
        raise UnsafeUpstream(f"{url!r} has a path, query or fragment; {ALLOWED_UPSTREAMS}")


def accepted_hosts(port: int, listen_hosts: Iterable[str]) -> frozenset[str]:
    """The Host header values (lower case) a request to this proxy may carry: its listen addresses and this
    machine's loopback names, with the port; also without it on port 80, where clients leave the port out."""
    names = {"localhost", "127.0.0.1", "[::1]"}
    names |= {_url_host(h.strip().removeprefix("[").removesuffix("]")).lower() for h in listen_hosts if h.strip()}
    with_port = {f"{name}:{port}" for name in names}
    return frozenset(with_port | names if port == 80 else with_port)


def host_accepted(host_header: str | None, accepted: frozenset[str]) -> bool:
    """Whether a request's Host header names the proxy itself. DNS rebinding makes a browser send a page's own
    host name to this address; such a request (or one without Host) must not be made as the user."""
    return host_header is not None and host_header.strip().lower() in accepted


def _end_to_end(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """Headers worth forwarding: not hop-by-hop, not named in Connection, not in `drop`."""
    listed = {token.strip().lower() for value in headers.getall("Connection", []) for token in value.split(",")}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP | drop | listed)


class CloudRunProxy:
    """Forwards every request to `url` with an ID token for it."""

    def __init__(self, url: str, tokens: IdTokenSource | None = None) -> None:
        check_upstream_url(url)
        self.url = url.rstrip("/")
        self._tokens = tokens or IdTokenSource()
        self._session: aiohttp.ClientSession | None = None
        # Set by `serve` once the port is known; until then nothing is accepted (fail closed).
        self.accepted_hosts: frozenset[str] = frozenset()

    async def token(self) -> str:
        """An ID token for the service (cached); also how `serve` checks credentials before it says ready."""
        return await self._tokens.token(self.url)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, app: web.Application) -> None:
        # auto_decompress off: bytes pass through unchanged with their Content-Encoding and Content-Length.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        )

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if not host_accepted(request.headers.get("Host"), self.accepted_hosts):
            log.warning("%s %s -> 403: Host %.100r is not this proxy", request.method, request.path,
                        request.headers.get("Host"))
            return web.Response(status=403, text="tgi-operator proxy: refused: the Host header does not name this "
                                                 "proxy (call it as http://127.0.0.1:PORT or http://localhost:PORT)\n")
        try:
            token = await self.token()
        except Exception as exc:  # noqa: BLE001 - any credential problem: tell the client why, never the token
            log.warning("%s %s -> 502: no ID token: %s", request.method, request.path, type(exc).__name__)
            return web.Response(status=502, text=f"tgi-operator proxy: cannot obtain an ID token for {self.url}: "
                                                 f"{type(exc).__name__}: {exc}\n")
        headers = _end_to_end(request.headers, REQUEST_REPLACED)
        headers["Authorization"] = f"Bearer {token}"
        body = await request.read()
        target = URL(self.url + str(request.rel_url), encoded=True)  # path and query exactly as the client sent them
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method, target, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                if upstream.status == 401:  # refused token (e.g. revoked early): fetch a fresh one next time
                    self._tokens.invalidate(self.url)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                              headers=_end_to_end(upstream.headers, frozenset()))
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():  # as it arrives: SSE events are not held back
                    await response.write(chunk)
                await response.write_eof()
                log.info("%s %s -> %d", request.method, request.path, upstream.status)
                return response
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("%s %s -> 502: %s", request.method, request.path, type(exc).__name__)
            if response is not None and response.prepared:
                raise  # headers already sent: all we can do is cut the connection
            return web.Response(status=502, text=f"tgi-operator proxy: {self.url} did not answer: {type(exc).__name__}: {exc}\n")


async def serve(
    proxy: CloudRunProxy, host: str, port: int, ready: Callable[[str], None], stop: Callable[[], Awaitable[object]]
) -> None:
    """Serve until `stop()` returns; `ready(local_url)` once listening (port 0 picks a free port)."""
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        proxy.accepted_hosts = accepted_hosts(bound_port, [host, *(address[0] for address in runner.addresses)])
        ready(f"http://{_url_host(bound_host)}:{bound_port}")
        await stop()
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
