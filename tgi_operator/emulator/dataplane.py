"""Serve each Ready emulated Cloud Run service for real on its own loopback port.

One aiohttp listener per service, so the root of `http://127.0.0.1:PORT` IS the service, like
`https://svc-xyz.a.run.app`. In front of the TGI stand-in sits Cloud Run's front end:

1. Authorization (IAM lives in the control plane; it answers through `Endpoint.may_invoke`):
   - `may_invoke("")` asks "may an anonymous caller invoke?" (allUsers holds run.invoker, or
     invoker_iam_disabled). If so the request passes and no token is checked; like Cloud Run, the
     Authorization header is forwarded untouched (public services often use it for their own auth).
   - Otherwise the ID token comes from `X-Serverless-Authorization: Bearer T` or else
     `Authorization: Bearer T` (Cloud Run's order). No token: 403 Forbidden. A token that is
     malformed, not signed by the emulator's issuer, expired, or whose `aud` is not the service URL
     (with or without a trailing slash): 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
   - `may_invoke(email)` with the token's email decides the rest (run.invoker on the service, a project
     role that includes run.routes.invoke, allAuthenticatedUsers, ...): False gives 403.
   `may_invoke` is called on every request, so IAM changes apply without republishing.
2. Concurrency: at most `Endpoint.concurrency` requests in flight (one instance); beyond that 429
   immediately, with Cloud Run's "no available instance" message.
3. Request timeout: a request still running after `Endpoint.timeout_s` (the revision's template.timeout)
   gets 504 "upstream request timeout"; a stream whose headers are out is cut (connection closed).
4. The TGI stand-in (tgi_standin.py), which also enforces TGI's own --max-concurrent-requests (429
   "Model is overloaded").

Test hooks: `set_latency(service, seconds)` delays every generation (the container env
`TGI_EMULATOR_LATENCY_MS` does the same from the revision); `hold(service)` parks generations until
`release(service)`, and `in_flight(service)` tells how many requests the service is serving, so a test
can fill the concurrency exactly, see the 429, then release, without timing.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from tgi_operator.emulator.identity import InvalidToken, TokenIssuer
from tgi_operator.emulator.tgi_standin import TGIStandIn, parse_launcher_config

log = logging.getLogger(__name__)

NO_INSTANCE_MESSAGE = "The request was aborted because there was no available instance."
UPSTREAM_TIMEOUT_MESSAGE = "upstream request timeout"  # the 504 body (like Cloud Run's front end)


@dataclass
class Endpoint:
    service_name: str  # projects/p/locations/r/services/s
    launcher_args: list[str]  # container args of the serving revision
    env: dict[str, str]  # plain env values of the container
    concurrency: int  # max_instance_request_concurrency
    may_invoke: Callable[[str], bool]  # email -> allowed; "" asks whether anonymous callers may invoke
    timeout_s: float = 300.0  # the revision's request timeout (template.timeout; Cloud Run's default 300 s)


def _google_error_page(status: int, title: str, message: str) -> str:
    """The HTML Google's front end answers with (Cloud Run's 401/403/429 pages)."""
    return (
        "<html><head>\n"
        '<meta http-equiv="content-type" content="text/html;charset=utf-8">\n'
        f"<title>{status} {title}</title>\n"
        "</head>\n"
        "<body text=#000000 bgcolor=#ffffff>\n"
        f"<h1>Error: {title}</h1>\n"
        f"<h2>{message}</h2>\n"
        "<h2></h2>\n"
        "</body></html>\n"
    )


def unauthorized(path: str) -> web.Response:
    message = f"Your client does not have permission to the requested URL <code>{html.escape(path)}</code>."
    return web.Response(
        status=401,
        text=_google_error_page(401, "Unauthorized", message),
        content_type="text/html",
        headers={
            "WWW-Authenticate": 'Bearer error="invalid_token" error_description="The access token could not be verified"'
        },
    )


def forbidden(path: str) -> web.Response:
    message = f"Your client does not have permission to get URL <code>{html.escape(path)}</code> from this server."
    return web.Response(status=403, text=_google_error_page(403, "Forbidden", message), content_type="text/html")


def too_many_requests() -> web.Response:
    return web.Response(
        status=429, text=_google_error_page(429, "Too Many Requests", NO_INSTANCE_MESSAGE), content_type="text/html"
    )


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The ID token Cloud Run would check: X-Serverless-Authorization wins over Authorization."""
    for name in ("X-Serverless-Authorization", "Authorization"):
        value = headers.get(name)
        if value:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""  # present but not a bearer token: an invalid credential, not a missing one
    return None


def service_audiences(uri: str) -> list[str]:
    base = uri.rstrip("/")
    return [base, base + "/"]


class _Published:
    """One listener and its mutable state; the endpoint and config are swapped on republish."""

    def __init__(self, endpoint: Endpoint, uri: str, runner: web.AppRunner, standin: TGIStandIn) -> None:
        self.endpoint = endpoint
        self.uri = uri
        self.runner = runner
        self.standin = standin
        self.in_flight = 0


class DataPlane:
    def __init__(self, issuer: TokenIssuer, host: str = "127.0.0.1") -> None:
        self._issuer = issuer
        self._host = host
        self._services: dict[str, _Published] = {}

    async def publish(self, endpoint: Endpoint, port: int | None = None) -> str:
        """Start serving `endpoint` (or update it in place, keeping its port); returns its uri.

        Raises tgi_standin.LauncherConfigError when TGI would refuse the args/env: the container
        would never listen (check first with tgi_standin.check_launcher_config).
        """
        config = parse_launcher_config(endpoint.launcher_args, endpoint.env)
        published = self._services.get(endpoint.service_name)
        if published is not None:
            published.endpoint = endpoint
            published.standin.reconfigure(config)
            return published.uri
        standin = TGIStandIn(config)
        holder: dict[str, _Published] = {}
        app = web.Application(middlewares=[self._front_end(holder)])
        standin.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, port or 0, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_port = runner.addresses[0][1]
        uri = f"http://{self._host}:{bound_port}"
        published = _Published(endpoint, uri, runner, standin)
        holder["service"] = published
        self._services[endpoint.service_name] = published
        log.info("serving %s at %s", endpoint.service_name, uri)
        return uri

    async def withdraw(self, service_name: str) -> None:
        published = self._services.pop(service_name, None)
        if published is None:
            return
        published.standin.release()  # let parked requests finish rather than hang
        await published.runner.cleanup()
        log.info("stopped serving %s", service_name)

    async def close(self) -> None:
        for service_name in list(self._services):
            await self.withdraw(service_name)

    def uri(self, service_name: str) -> str | None:
        published = self._services.get(service_name)
        return published.uri if published else None

    def set_latency(self, service_name: str, seconds: float | None) -> None:
        """Delay each generation of the service (None: back to the container's TGI_EMULATOR_LATENCY_MS)."""
        self._service(service_name).standin.latency_override_s = seconds

    def hold(self, service_name: str) -> None:
        self._service(service_name).standin.hold()

    def release(self, service_name: str) -> None:
        self._service(service_name).standin.release()

    def in_flight(self, service_name: str) -> int:
        return self._service(service_name).in_flight

    def _service(self, service_name: str) -> _Published:
        published = self._services.get(service_name)
        if published is None:
            raise KeyError(f"{service_name} is not published")
        return published

    def _front_end(self, holder: dict[str, _Published]) -> Callable[..., Awaitable[web.StreamResponse]]:
        issuer = self._issuer

        @web.middleware
        async def front_end(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            published = holder["service"]
            endpoint = published.endpoint
            if not endpoint.may_invoke(""):
                token = bearer_token(request.headers)
                if token is None:
                    return forbidden(request.path)
                try:
                    email = issuer.verify(token, service_audiences(published.uri))
                except InvalidToken:
                    return unauthorized(request.path)
                if not endpoint.may_invoke(email):
                    return forbidden(request.path)
            if published.in_flight >= endpoint.concurrency:
                return too_many_requests()
            published.in_flight += 1
            try:
                return await asyncio.wait_for(handler(request), endpoint.timeout_s)
            except TimeoutError:
                # https://cloud.google.com/run/docs/configuring/request-timeout: a request (a streamed one too)
                # that runs past the timeout is ended with 504. Once a stream's headers are out, the connection
                # is closed instead.
                if request.writer.output_size > 0:
                    if request.transport is not None:
                        request.transport.close()
                    raise ConnectionResetError("request timeout after the response started") from None
                return web.Response(status=504, text=UPSTREAM_TIMEOUT_MESSAGE, content_type="text/plain")
            finally:
                published.in_flight -= 1

        return front_end
