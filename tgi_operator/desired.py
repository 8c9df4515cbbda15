"""What a pass wants, computed once per spec: the parsed spec, and the rendered service with its owned fields.

Parsing the spec, rendering the proto-plus Service and flattening its owned fields cost more CPU than a resync's
three reads (about 40 % of a steady-state pass, profiled); a resync of an unchanged spec reuses them. Keyed by
the spec's own JSON (not by `generation`, which a restored object may repeat with another spec). The results
are shared between passes: they are never modified (diff.merge_for_update copies before it changes anything).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from google.cloud import run_v2

from tgi_operator.diff import owned_fields
from tgi_operator.models import TGIServiceSpec, parse_spec
from tgi_operator.render import Target, render_service

CACHED_SPECS = 2048  # about one per object: a few KiB each


def spec_key(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


@functools.lru_cache(maxsize=CACHED_SPECS)
def parsed_spec(key: str) -> TGIServiceSpec:
    """The spec model (raises pydantic's ValidationError, which is not cached, for an invalid one)."""
    return parse_spec(json.loads(key))


@functools.lru_cache(maxsize=CACHED_SPECS)
def desired_service(namespace: str, name: str, uid: str, key: str, where: Target, cluster: str,
                    private: bool) -> tuple[run_v2.Service, dict[str, Any]]:
    """The service to deploy and its owned fields; `private`: public access refused, deployed private."""
    spec = parsed_spec(key)
    if private:
        spec = spec.model_copy(update={"access": spec.access.model_copy(update={"public": False})})
    service = render_service(namespace, name, spec, where, cluster, uid)
    return service, owned_fields(service, service)
