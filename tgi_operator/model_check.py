"""The model preflight as one step of a pass: before any Cloud Run call, ask the Hub (hub.py) and judge
(preflight.py). A generation that passed is not asked about again: its verdict stays in status.preflight, so a
resync costs the Hub nothing, after an operator restart too."""

from __future__ import annotations

from tgi_operator import preflight
from tgi_operator.hub import HubUnreachable, ModelHub, ModelNotFound, RevisionNotFound, base_url, shown
from tgi_operator.models import PreflightStatus, TGIServiceSpec
from tgi_operator.settings import Settings

REUSABLE = (preflight.PASSED, preflight.PARTIAL)  # a verdict that could change (a stop, a skip) is asked again


async def check_model(spec: TGIServiceSpec, generation: int, previous: PreflightStatus | None, hub: ModelHub,
                      settings: Settings) -> preflight.Verdict | None:
    """The verdict on the spec's model; None when preflight is off."""
    if settings.preflight == "off":
        return None
    if previous and previous.generation == generation and previous.result in REUSABLE:
        return preflight.Verdict.recorded(previous)
    try:
        facts = await hub.facts(spec.model.id, spec.model.revision, endpoint=settings.hf_endpoint,
                                timeout=settings.hf_timeout_seconds)
    except ModelNotFound:
        return preflight.model_not_found(spec, shown(base_url(settings.hf_endpoint)))
    except RevisionNotFound:
        return preflight.revision_not_found(spec)
    except HubUnreachable as exc:
        return preflight.hub_unreachable(str(exc), required=settings.preflight == "required")
    return preflight.judge(facts, spec)

