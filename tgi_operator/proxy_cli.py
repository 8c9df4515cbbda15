"""`tgi-operator proxy NAME -n NAMESPACE`: call a private TGIService from localhost with your Google identity."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tgi_operator import API_GROUP, API_VERSION, KIND, PLURAL

if TYPE_CHECKING:
    from tgi_operator.proxy import CloudRunProxy


# google-auth mints audience-bound ID tokens only from these; plain user ADC (gcloud auth application-default
# login) cannot, so impersonating a service account (e.g. status.invokerServiceAccount) is the laptop path.
NO_TOKEN_HINT = (
    "hint: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key or to an impersonated-service-account file "
    "(gcloud auth application-default login --impersonate-service-account=SA_EMAIL writes one to "
    "~/.config/gcloud/application_default_credentials.json), or run where a metadata server answers (GKE, GCE)"
)


class NotProxyable(Exception):
    """The TGIService cannot be proxied (yet); the message says why."""


class _NoToken(Exception):
    """No Google identity here can mint an ID token for the service."""


def _kube_namespace(context: str | None) -> str:
    """The namespace of the kubeconfig context, like kubectl; 'default' when it names none (or in a pod)."""
    import kubernetes.config

    try:
        contexts, active = kubernetes.config.list_kube_config_contexts()
    except Exception:  # noqa: BLE001 - no kubeconfig (in-cluster): kubectl's default
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return (chosen or {}).get("context", {}).get("namespace") or "default"


def read_tgiservice(namespace: str, name: str, context: str | None) -> dict[str, Any]:
    """The object from the cluster (KUBECONFIG / ~/.kube/config, else in-cluster config)."""
    import kubernetes.client
    import kubernetes.config
    from kubernetes.client.rest import ApiException

    try:
        kubernetes.config.load_config(**({"context": context} if context else {}))  # in-cluster takes none
    except Exception as exc:  # noqa: BLE001 - the config loaders raise several unrelated types
        raise NotProxyable(f"no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {exc}") from None
    api = kubernetes.client.CustomObjectsApi()
    try:
        return api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, _request_timeout=30)
    except ApiException as exc:
        if exc.status == 404:
            raise NotProxyable(f"{KIND} {namespace}/{name} not found") from None
        raise NotProxyable(f"cannot read {KIND} {namespace}/{name}: {exc.status} {exc.reason}") from None
    finally:
        api.api_client.close()


def service_url(obj: dict[str, Any]) -> tuple[str, str | None]:
    """status.url, and a warning when the object is not Ready (the URL may still answer, e.g. mid-update).
    NotProxyable when there is no URL yet or it is not one an ID token may be sent to (see check_upstream_url)."""
    from tgi_operator.proxy import UnsafeUpstream, check_upstream_url

    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    why = ready.get("message") or ready.get("reason") or "the operator has not reported on it"
    title = f"{KIND} {meta.get('namespace')}/{meta.get('name')}"
    if not status.get("url"):
        raise NotProxyable(f"{title} is not Ready yet: {why} (no status.url)")
    try:  # whoever can write status.url must not be able to collect the user's ID token
        check_upstream_url(status["url"])
    except UnsafeUpstream as exc:
        raise NotProxyable(f"refusing to send an ID token to {title}'s status.url: {exc}") from None
    warning = None if ready.get("status") == "True" else f"{title} is not Ready: {why}"
    return status["url"], warning


def exposure_warning(host: str) -> str | None:
    """What to shout when --host is not this machine: the proxy adds the user's ID token to whatever reaches it."""
    from tgi_operator.proxy import is_loopback_host

    if is_loopback_host(host):
        return None
    return (f"WARNING: --host {host!r} is not a loopback address: anyone who can reach it calls the service with your "
            "Google identity (every request gets your ID token). Use --host 127.0.0.1 unless that is what you want.")


def proxy(
    name: Annotated[str, typer.Argument(help="The TGIService to call.")],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Its namespace (default: the kubeconfig context's, else 'default').")
    ] = None,
    port: Annotated[int, typer.Option(help="Local port (0 picks a free one).", min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option(help="Local address. Anyone who can reach it calls the service as you. "
                                           "Requests must name it (or localhost) in their Host header.")] = "127.0.0.1",
    context: Annotated[str | None, typer.Option(help="kubeconfig context (default: the current one).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each request (method, path, status).")] = False,
) -> None:
    """Serve the TGIService's private Cloud Run URL on localhost, adding an ID token to every request
    (like `gcloud run services proxy`). The identity is google-auth's: GOOGLE_APPLICATION_CREDENTIALS (a service
    account or impersonated service account key file) or the metadata server."""
    from tgi_operator.proxy import CloudRunProxy

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    namespace = namespace or _kube_namespace(context)
    try:
        url, warning = service_url(read_tgiservice(namespace, name, context))
    except NotProxyable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if exposed := exposure_warning(host):
        print(exposed, file=sys.stderr)
    upstream = CloudRunProxy(url)
    try:
        asyncio.run(_run(upstream, host, port))
    except _NoToken as exc:
        print(f"error: cannot obtain an ID token for {url}: {exc}\n{NO_TOKEN_HINT}", file=sys.stderr)
        raise typer.Exit(1) from None
    except OSError as exc:  # e.g. the port is taken
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(1) from None


async def _run(upstream: CloudRunProxy, host: str, port: int) -> None:
    from tgi_operator.proxy import serve

    try:
        await upstream.token()  # fail now, not on the first request, when there is no usable identity
    except Exception as exc:  # noqa: BLE001
        raise _NoToken(f"{type(exc).__name__}: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(local: str) -> None:
        print(f"Proxying {local} -> {upstream.url}", flush=True)

    await serve(upstream, host, port, ready, stop.wait)
