"""`tgi-operator render -f manifest.yaml`: what the operator would create for TGIServices, without a cluster.

stdout is YAML only (pipeable): per TGIService, the Cloud Run service (camelCase, as the REST API and
`gcloud run services describe --format=yaml` spell it) and the invoker IAM bindings plus any service account
the operator would create. Notes, the cost estimate (what status.cost will say), the `--preflight` verdict (the
model checked on the Hugging Face Hub, as the operator does before deploying) and the `--validate` verdict go to
stderr; any problem exits 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from google.cloud import run_v2
from pydantic import ValidationError

from tgi_operator import API_GROUP, KIND
from tgi_operator.cost import PricingError, cents, cost_status, hourly_cost, load_pricing
from tgi_operator.diff import copy
from tgi_operator.models import TGIServiceSpec, describe_errors, parse_spec
from tgi_operator.naming import invoker_account_id, service_id
from tgi_operator.reconcile import PUBLIC_REFUSED, Stall, check_policy, public_refused
from tgi_operator.render import INVOKER_ROLE, Target, invoker_members, invoker_service_account, render_service
from tgi_operator.settings import Settings

DEFAULT_NAMESPACE = "default"
_MAP_FIELDS = ("labels", "annotations", "limits")  # proto maps: sorted for a stable output


class RenderError(Exception):
    """A problem with the input; the message names the document and the field."""


@dataclass(frozen=True)
class Rendered:
    namespace: str
    name: str
    target: Target
    spec: TGIServiceSpec
    service: run_v2.Service  # as the operator sends it to CreateService (no name: that is parent + service id)


# ---------------------------------------------------------------------------------------------- input


def read_documents(text: str, source: str) -> Iterator[dict[str, Any]]:
    """The TGIService objects in a YAML stream (also inside `kind: List`), skipping empty documents."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: not valid YAML: {exc}") from None
    for document in documents:
        if not isinstance(document, dict):
            raise RenderError(f"{source}: every document must be a mapping (an object), got {type(document).__name__}")
        if document.get("kind") == "List" and isinstance(document.get("items"), list):
            yield from (item for item in document["items"] if isinstance(item, dict) and _is_tgiservice(item))
        elif _is_tgiservice(document):
            yield document
        else:
            print(f"note: skipping {document.get('kind', '<no kind>')} {(document.get('metadata') or {}).get('name', '')}"
                  f" (not a {KIND})", file=sys.stderr)


def _is_tgiservice(document: dict[str, Any]) -> bool:
    return document.get("kind") == KIND and str(document.get("apiVersion", "")).startswith(f"{API_GROUP}/")


def render_document(
    document: dict[str, Any], namespace: str | None, default_project: str | None
) -> Rendered:
    """Validate one TGIService and render it as the operator would (raises RenderError naming the field)."""
    metadata = document.get("metadata") or {}
    name = metadata.get("name")
    if not name or not isinstance(name, str):
        raise RenderError(f"{KIND} without metadata.name: metadata.name is required")
    own_namespace = metadata.get("namespace")
    if namespace and own_namespace and namespace != own_namespace:  # kubectl apply -n refuses this too
        raise RenderError(f"{KIND} {name}: metadata.namespace {own_namespace!r} does not match --namespace {namespace!r}")
    namespace = namespace or own_namespace or DEFAULT_NAMESPACE
    try:
        spec = parse_spec(document.get("spec") or {})
    except ValidationError as exc:
        problems = "\n".join(f"  {line}" for line in describe_errors(exc))
        raise RenderError(f"{KIND} {namespace}/{name} is invalid:\n{problems}") from None
    project = spec.project or default_project
    if not project:
        raise RenderError(
            f"{KIND} {namespace}/{name}: no project: set spec.project, pass --project, "
            "or set TGI_OPERATOR_DEFAULT_PROJECT (the operator's default project)"
        )
    where = Target(project, spec.region, service_id(namespace, name))
    return Rendered(namespace, name, where, spec, render_service(namespace, name, spec, where))


# ---------------------------------------------------------------------------------------------- output


def service_document(rendered: Rendered) -> dict[str, Any]:
    """The service in the REST API's JSON shape (camelCase), with its full resource name."""
    named = copy(rendered.service)  # a deep copy: the rendered service stays as CreateService would get it
    named.name = rendered.target.name
    body = run_v2.Service.to_dict(
        named, preserving_proto_field_name=False, use_integers_for_enums=False, always_print_fields_with_no_presence=False
    )
    # proto3 JSON leaves out zero values, but these are deliberate choices a reader must see:
    # --no-cpu-throttling (required with a GPU), scale to zero, and IAM checked on every request.
    body["invokerIamDisabled"] = named.invoker_iam_disabled
    template = body.setdefault("template", {})
    template.setdefault("scaling", {})["minInstanceCount"] = named.template.scaling.min_instance_count
    for container, source in zip(template.get("containers", []), named.template.containers):
        resources = container.get("resources", {})
        container["resources"] = {"limits": resources.pop("limits", {}), "cpuIdle": source.resources.cpu_idle, **resources}
    return _sorted_maps(body)


def iam_document(rendered: Rendered) -> dict[str, Any]:
    """The invoker binding on the service and the service account the operator would create for it."""
    namespace, name, spec, project = rendered.namespace, rendered.name, rendered.spec, rendered.target.project
    members = invoker_members(namespace, name, spec, project)
    document: dict[str, Any] = {
        "resource": rendered.target.name,
        "bindings": [{"role": INVOKER_ROLE, "members": members}] if members else [],
    }
    if spec.access.create_invoker_service_account:
        document["serviceAccounts"] = [{
            "name": f"projects/{project}/serviceAccounts/{invoker_service_account(namespace, name, project)}",
            "accountId": invoker_account_id(namespace, name),
            "email": invoker_service_account(namespace, name, project),
            "displayName": f"Invoker of {namespace}/{name}",
            "description": f"Created by tgi-operator to call TGIService {namespace}/{name}",
        }]
    return document


def _sorted_maps(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        items = sorted(value.items()) if key in _MAP_FIELDS else value.items()
        return {k: _sorted_maps(v, k) for k, v in items}
    if isinstance(value, list):
        return [_sorted_maps(v) for v in value]
    return value


def to_yaml(rendered: list[Rendered]) -> str:
    chunks = []
    for item in rendered:
        title = f"{KIND} {item.namespace}/{item.name}"
        chunks.append(f"# {title}: Cloud Run service\n" + yaml.safe_dump(service_document(item), sort_keys=False, width=120))
        chunks.append(f"# {title}: IAM (roles/run.invoker on the service; service account to create)\n"
                      + yaml.safe_dump(iam_document(item), sort_keys=False, width=120))
    return "---\n".join(chunks)


# ---------------------------------------------------------------------------------------------- --validate


async def validate(rendered: list[Rendered], endpoint: str | None, timeout: float) -> list[str]:
    """Ask Cloud Run to check each service (validate_only: nothing is created); one problem line per refusal."""
    from tgi_operator.cloudrun import CloudRunServices, services_client
    from tgi_operator.errors import PermanentCloudError, TransientCloudError

    services = CloudRunServices(services_client(endpoint), timeout=timeout)
    problems = []
    try:
        for item in rendered:
            title = f"{item.namespace}/{item.name} ({item.target.name})"
            try:
                await services.validate(item.target.parent, item.target.service_id, item.service)
            except TransientCloudError as exc:
                problems.append(f"{title}: could not validate: {exc}")
            except PermanentCloudError as exc:  # GPU quota and a disabled API have reasons of their own, that say what to do
                label = exc.reason if exc.reason in ("GpuQuotaExceeded", "ApiNotEnabled") else exc.code
                problems.append(f"{title}: Cloud Run refused it: {label}: {exc.message}")
            except asyncio.TimeoutError:
                problems.append(f"{title}: could not validate: no answer within {timeout} s")
            else:
                print(f"valid: {title}: Cloud Run accepted it (validate only: nothing was created)", file=sys.stderr)
    finally:
        await services.close()
    return problems


# ---------------------------------------------------------------------------------------------- cost, preflight


def cost_note(item: Rendered, settings: Settings) -> str:
    """What status.cost will say, as one line."""
    title = f"cost: {item.namespace}/{item.name}"
    try:
        pricing = load_pricing(settings.pricing_file)
    except PricingError as exc:
        return f"{title}: no estimate: {exc}"
    cost = hourly_cost(item.spec, item.spec.region, pricing)
    if cost is None:
        return f"{title}: no estimate: {cost_status(None, item.spec, pricing).basis}"
    scaling = item.spec.scaling
    low, high = ("suspended", "suspended") if item.spec.suspend else \
        (f"minInstances {scaling.min_instances}", f"maxInstances {scaling.max_instances}")
    return (f"{title}: {cents(cost.instance)} {cost.currency} per instance-hour; {cents(cost.minimum)} an hour while "
            f"idle ({low}), {cents(cost.maximum)} at most ({high}). {cost.basis}")


async def preflight(rendered: list[Rendered], settings: Settings) -> list[str]:
    """Check each model on the Hub as the operator would before deploying; one problem line per model it would stop
    (or could not check)."""
    from tgi_operator.hub import ModelHub
    from tgi_operator.model_check import check_model
    from tgi_operator.preflight import SKIPPED

    hub, asking = ModelHub(), settings.model_copy(update={"preflight": "best-effort"})
    problems = []
    for item in rendered:
        title = f"{item.namespace}/{item.name} ({item.spec.model.id})"
        verdict = await check_model(item.spec, 0, None, hub, asking)
        assert verdict is not None  # preflight is on
        if verdict.problem:
            problems.append(f"{title}: the operator would stall it before deploying ({verdict.problem.reason}): "
                            f"{verdict.problem.message}")
        elif verdict.result == SKIPPED:
            problems.append(f"{title}: the model was not checked: {verdict.message}")
        else:
            print(f"preflight: {title}: {verdict.result}: {verdict.message}", file=sys.stderr)
    return problems


# ---------------------------------------------------------------------------------------------- command


def render(
    filename: Annotated[str, typer.Option("--filename", "-f", help="Manifest with one or more TGIServices ('-': stdin).")],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace of the objects (default: metadata.namespace, else 'default').")
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(help="Project for objects without spec.project, standing in for the operator's "
                          "TGI_OPERATOR_DEFAULT_PROJECT (which is the default)."),
    ] = None,
    validate_: Annotated[
        bool,
        typer.Option("--validate", help="Also ask the Cloud Run API to check each service (validate_only; nothing is "
                                        "created). Uses TGI_OPERATOR_CLOUD_RUN_ENDPOINT, else Google with ADC."),
    ] = False,
    preflight_: Annotated[
        bool,
        typer.Option("--preflight", help="Also check each model on the Hugging Face Hub as the operator does before "
                                         "deploying (exists, gated, fits the GPU, tokens within its context). Uses "
                                         "TGI_OPERATOR_HF_ENDPOINT, else HF_ENDPOINT, else https://huggingface.co."),
    ] = False,
) -> None:
    """Print the Cloud Run service and IAM bindings the operator would create for TGIServices (no cluster needed)."""
    settings = Settings()
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    except OSError as exc:
        _fail([f"cannot read {filename}: {exc.strerror}"])
    rendered, problems = [], []
    try:
        documents = list(read_documents(text, "stdin" if filename == "-" else filename))
    except RenderError as exc:
        _fail([str(exc)])
    if not documents:
        _fail([f"no {KIND} in {filename}"])
    for document in documents:
        try:
            item = render_document(document, namespace, project or settings.default_project)
        except RenderError as exc:
            problems.append(str(exc))
            continue
        if project and item.spec.project and item.spec.project != project:
            print(f"note: {item.namespace}/{item.name}: spec.project {item.spec.project} wins over --project {project}",
                  file=sys.stderr)
        try:
            check_policy(item.spec, item.target, settings)
            if public_refused(item.spec, settings):
                raise Stall(PUBLIC_REFUSED.reason, PUBLIC_REFUSED.message)
        except Stall as stall:  # the operator's settings here may differ from the deployed operator's
            print(f"note: {item.namespace}/{item.name}: an operator with this environment's settings would stall "
                  f"({stall.problem.reason}): {stall.problem.message}", file=sys.stderr)
        rendered.append(item)
    if problems:
        _fail(problems)
    sys.stdout.write(to_yaml(rendered))
    sys.stdout.flush()
    for item in rendered:
        print(cost_note(item, settings), file=sys.stderr)
    if preflight_:
        problems += asyncio.run(preflight(rendered, settings))
    if validate_:
        problems += asyncio.run(validate(rendered, settings.cloud_run_endpoint, settings.request_timeout_seconds))
    if problems:
        _fail(problems)


def _fail(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    raise typer.Exit(1)
