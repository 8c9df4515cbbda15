"""What a pass wants, computed once per spec: the parsed spec, and the owned fields of the service it renders.

Parsing the spec, rendering the proto-plus Service and flattening its owned fields cost more CPU than a resync's
three reads (about 40 % of a steady-state pass, profiled); a resync of an unchanged spec reuses them. Keyed by
the spec's own JSON (not by `generation`, which a restored object may repeat with another spec). The owned fields
are shared between passes and never modified; the Service a write sends is rendered afresh for it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.cloud import run_v2

from tgi_operator.diff import changes, owned_fields, owned_keys
from tgi_operator.interning import shared
from tgi_operator.models import TGIServiceSpec, parse_spec
from tgi_operator.render import INVOKERS_ANNOTATION, Target, render_service

CACHED_SPECS = 2048  # about one per object: a few KiB each


def spec_key(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


@functools.lru_cache(maxsize=CACHED_SPECS)
def parsed_spec(key: str) -> TGIServiceSpec:
    """The spec model (raises pydantic's ValidationError, which is not cached, for an invalid one)."""
    return parse_spec(json.loads(key))


@dataclass(frozen=True)
class Desired:
    """The service one object wants, as a resync compares it: its owned fields flattened (`wanted`) and the runtime
    identity it names. The rendered Service itself is not kept (a proto-plus message is about 6 KiB per object,
    measured: 6 MiB at a thousand objects); only a write needs it, and service() renders it again."""

    wanted: dict[str, Any]
    service_account: str
    render_args: tuple[str, str, TGIServiceSpec, Target, str, str]  # render_service's

    def service(self) -> run_v2.Service:
        return render_service(*self.render_args)

    def changed_fields(self, observed: run_v2.Service) -> list[str]:
        """The owned fields whose observed value differs (empty: nothing to update)."""
        return changes(self.wanted, self.service_account, observed)

    @property
    def invokers(self) -> str | None:
        """The record of invoker members the service carries (an annotation)."""
        return self.wanted["annotations"].get(INVOKERS_ANNOTATION)


@functools.lru_cache(maxsize=CACHED_SPECS)
def desired_service(namespace: str, name: str, uid: str, key: str, where: Target, cluster: str,
                    private: bool) -> Desired:
    """What the object wants deployed; `private`: public access refused, deployed private."""
    spec = parsed_spec(key)
    if private:
        spec = spec.model_copy(update={"access": spec.access.model_copy(update={"public": False})})
    args = (namespace, name, spec, where, cluster, uid)
    service = render_service(*args)
    return Desired(shared(owned_fields(service, owned_keys(service))), service.template.service_account, args)
