"""The proxy's two guards of the user's ID token: where it may be sent (status.url) and who may ask (Host)."""

from __future__ import annotations

import re

import pytest

from tgi_operator.proxy import (
    CloudRunProxy,
    UnsafeUpstream,
    accepted_hosts,
    check_upstream_url,
    host_accepted,
    is_loopback_host,
)
from tgi_operator.proxy_cli import NotProxyable, exposure_warning, service_url


@pytest.mark.parametrize("url", [
    "https://llama-123456789012.us-central1.run.app",  # SERVICE-PROJECTNUMBER.REGION.run.app
    "https://llama-abc123-uc.a.run.app",  # the older SERVICE-HASH-REGIONCODE.a.run.app
    "https://llama-abc123-uc.a.run.app/",
    "HTTPS://LLAMA-ABC123-UC.A.RUN.APP:443",  # the default port, spelled out
    "http://127.0.0.1:40123",  # the local emulator
    "http://127.8.9.10:80",
    "http://localhost:8080",
    "http://LocalHost:8080",
    "http://[::1]:40123",
    "http://127.0.0.1:40123/",
])  # fmt: skip
def test_an_id_token_may_go_to_cloud_run_or_to_plain_http_on_this_machine(url: str) -> None:
    check_upstream_url(url)  # raises if refused


@pytest.mark.parametrize("url, says", [
    # Clear text off this machine.
    ("http://llama-abc123-uc.a.run.app", "is not https"),
    ("http://attacker.example:443", "is not https"),
    ("http://10.0.0.5:8080", "is not https"),
    ("http://0.0.0.0:8080", "is not https"),
    ("http://127.0.0.1.attacker.example", "is not https"),  # a name that merely starts like a loopback address
    ("http://localhost.attacker.example", "is not https"),
    ("http://127.0.0.1:80@attacker.example", "is not https"),  # userinfo, not the host
    ("http://[::ffff:7f00:1]:80", "is not https"),  # IPv4-mapped: not accepted as loopback
    # https, but not Cloud Run: whoever writes status.url would choose where the token goes.
    ("https://llm.example.com", "is not a Cloud Run URL"),  # custom domains too
    ("https://attacker.example", "is not a Cloud Run URL"),
    ("https://run.app.evil.com", "is not a Cloud Run URL"),  # contains run.app, does not end in it
    ("https://llama.a.run.app.evil.com", "is not a Cloud Run URL"),
    ("https://evilrun.app", "is not a Cloud Run URL"),  # ends in "run.app", but not in the run.app domain
    ("https://run.app", "is not a Cloud Run URL"),  # no service label
    ("https://llama.a.run.app.", "is not a Cloud Run URL"),  # trailing dot: another spelling, refused
    ("https://llama..run.app", "is not a Cloud Run URL"),
    ("https://llama_x.a.run.app", "is not a Cloud Run URL"),
    ("https://127.0.0.1:40123", "is not a Cloud Run URL"),  # the emulator speaks plain http, not https
    ("https://llama-abc123-uc.a.run.app:8443", "is not on port 443"),
    ("https://llama-abc123-uc.a.run.app:1", "is not on port 443"),
    # Not just an origin.
    ("https://llama.a.run.app@attacker.example", "is not a Cloud Run URL"),  # the host is attacker.example
    ("https://user@llama-abc123-uc.a.run.app", "carries user info"),
    ("https://user:pw@llama-abc123-uc.a.run.app", "carries user info"),
    ("http://user@127.0.0.1:40123", "carries user info"),
    ("https://llama-abc123-uc.a.run.app/v1", "has a path, query or fragment"),
    ("https://llama-abc123-uc.a.run.app?x=1", "has a path, query or fragment"),
    ("https://llama-abc123-uc.a.run.app#x", "has a path, query or fragment"),
    # Not URLs.
    ("https://llama.a.run.app\\@attacker.example", "not an absolute http"),  # yarl refuses the backslash
    ("ftp://llama.a.run.app", "not an absolute http"),
    ("llama.a.run.app", "not an absolute http"),
    ("https://", "not an absolute http"),
    ("", "not an absolute http"),
])  # fmt: skip
def test_an_id_token_goes_nowhere_else(url: str, says: str) -> None:
    with pytest.raises(UnsafeUpstream, match=re.escape(says)) as refused:
        check_upstream_url(url)
    assert "allowed: a Cloud Run URL, https://<service>.run.app" in str(refused.value)  # says what would do


def test_the_proxy_itself_refuses_an_unsafe_upstream() -> None:
    with pytest.raises(UnsafeUpstream):
        CloudRunProxy("http://attacker.example")


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.255.255.254", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("128.0.0.1", False), ("::", False), ("0.0.0.0", False), ("example.com", False),
    ("localhost.example.com", False), ("", False),
])  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def tgiservice(url: str | None, ready: str = "True") -> dict:
    status = {"conditions": [{"type": "Ready", "status": ready, "message": "m"}], **({"url": url} if url else {})}
    return {"metadata": {"namespace": "team", "name": "llama"}, "status": status}


def test_service_url_names_status_url_when_it_refuses_it() -> None:
    with pytest.raises(NotProxyable) as refused:
        service_url(tgiservice("http://attacker.example"))
    message = str(refused.value)
    assert "TGIService team/llama's status.url" in message and "'http://attacker.example' is not https" in message

    with pytest.raises(NotProxyable, match=re.escape("status.url: 'https://run.app.evil.com' is not a Cloud Run URL")):
        service_url(tgiservice("https://run.app.evil.com"))

    assert service_url(tgiservice("https://llama-abc.a.run.app")) == ("https://llama-abc.a.run.app", None)
    assert service_url(tgiservice("http://127.0.0.1:4000", ready="False")) == (
        "http://127.0.0.1:4000", "TGIService team/llama is not Ready: m"
    )
    with pytest.raises(NotProxyable, match="no status.url"):
        service_url(tgiservice(None, ready="False"))


LOOPBACK = accepted_hosts(8080, ["127.0.0.1"])


@pytest.mark.parametrize("accepted, header, ok", [
    (LOOPBACK, "127.0.0.1:8080", True),
    (LOOPBACK, "localhost:8080", True),
    (LOOPBACK, "LocalHost:8080", True),
    (LOOPBACK, "[::1]:8080", True),
    (LOOPBACK, "attacker.example:8080", False),  # DNS rebinding: the page's own name, resolved to 127.0.0.1
    (LOOPBACK, "attacker.example", False),
    (LOOPBACK, "127.0.0.1:8081", False),  # another port is another origin
    (LOOPBACK, "127.0.0.1", False),  # no port: the browser thinks it is talking to port 80
    (LOOPBACK, "localhost", False),
    (LOOPBACK, "::1:8080", False),  # an IPv6 address in Host is bracketed
    (LOOPBACK, "", False),
    (LOOPBACK, None, False),  # no Host at all
    (accepted_hosts(0, []), "127.0.0.1:0", True),
    (accepted_hosts(80, ["127.0.0.1"]), "localhost", True),  # port 80: clients leave it out
    (accepted_hosts(80, ["127.0.0.1"]), "localhost:80", True),
    (accepted_hosts(8080, ["::1"]), "[::1]:8080", True),
    (accepted_hosts(8080, ["[::1]"]), "[::1]:8080", True),
    (accepted_hosts(8080, ["192.168.1.5"]), "192.168.1.5:8080", True),  # its own (LAN) listen address
    (accepted_hosts(8080, ["192.168.1.5"]), "192.168.1.6:8080", False),
    (accepted_hosts(8080, ["mybox.lan", "192.168.1.5"]), "MyBox.lan:8080", True),  # --host as the user named it
    (accepted_hosts(8080, ["fe80::1"]), "[fe80::1]:8080", True),
    (accepted_hosts(8080, ["", " "]), ":8080", False),
])  # fmt: skip
def test_only_requests_that_name_the_proxy_are_accepted(accepted: frozenset[str], header: str | None, ok: bool) -> None:
    assert host_accepted(header, accepted) is ok


def test_nothing_is_accepted_before_the_proxy_knows_its_port() -> None:
    proxy = CloudRunProxy("http://127.0.0.1:1")
    assert not any(host_accepted(h, proxy.accepted_hosts) for h in ("127.0.0.1:8080", "localhost:1", "localhost"))


@pytest.mark.parametrize("host, warned", [
    ("127.0.0.1", False), ("127.0.0.2", False), ("localhost", False), ("::1", False), ("[::1]", False),
    ("0.0.0.0", True), ("::", True), ("", True), ("192.168.1.5", True), ("mybox.lan", True),
])  # fmt: skip
def test_a_proxy_reachable_from_elsewhere_is_announced_loudly(host: str, warned: bool) -> None:
    warning = exposure_warning(host)
    if warned:
        assert warning is not None and warning.startswith(f"WARNING: --host {host!r} is not a loopback address")
        assert "anyone who can reach it calls the service with your Google identity" in warning
    else:
        assert warning is None
