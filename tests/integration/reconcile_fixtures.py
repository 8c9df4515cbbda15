"""reconcile() and finalize() passes against the emulator, with the real async clients: shared by the tests that
drive one TGIService through Cloud Run's answers without kopf."""

from __future__ import annotations

import asyncio

import pytest
from emulator_fixtures import PROJECT

from tgi_operator.cloudrun import CloudRunServices, services_client
from tgi_operator.errors import TransientCloudError
from tgi_operator.iam import ServiceAccounts, iam_client
from tgi_operator.models import TGIServiceStatus
from tgi_operator.probe import ModelProbe
from tgi_operator.finalize import finalize
from tgi_operator.reconcile import Adapters, Event, ObjectRef, Outcome, reconcile
from tgi_operator.settings import Settings

__all__ = ["NOW", "SETTINGS", "SPEC", "UID", "adapters", "conditions", "finalize_until_gone", "ref", "run", "settle"]
SPEC = {"region": "us-central1", "model": {"id": "org/model"}, "access": {"invokers": ["group:ml@example.com"]}}
# Model preflight off: these passes drive Cloud Run's answers for a made-up model (org/model); the preflight has
# passes of its own against the emulator's Hub stand-in (test_preflight_passes.py).
SETTINGS = Settings(default_project=PROJECT, model_probe=False, preflight="off")
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
async def adapters(emulator) -> Adapters:  # noqa: F811 - the emulator fixture
    adapters = Adapters(CloudRunServices(services_client(emulator.grpc_endpoint)),
                        ServiceAccounts(iam_client(emulator.grpc_endpoint)), ModelProbe())
    yield adapters
    await adapters.services.close()
    await adapters.accounts.close()


UID = "0d4c3b2a-0000-4000-8000-000000000001"  # the object's metadata.uid, marked on the services it creates


def ref(status: dict | None = None, generation: int = 1, spec: dict | None = None,
        annotations: dict | None = None, uid: str = UID) -> ObjectRef:
    return ObjectRef("team-a", "llama", generation, spec or SPEC, status or {}, annotations or {}, uid)


async def intent_recorded(status: TGIServiceStatus) -> bool:
    """The handler's record_intent, as if its status write succeeded: the pass goes on to create."""
    return True


async def run(adapters: Adapters, status: dict, generation: int = 1, spec: dict | None = None,
              settings: Settings = SETTINGS, **options) -> Outcome:
    """One pass, as the handler runs it (a new object's status is written before it creates); with
    `record_intent=None`, after the pass that only writes the target down."""
    options.setdefault("record_intent", intent_recorded)
    outcome = await reconcile(ref(status, generation, spec), adapters, settings, now=NOW, **options)
    if outcome.again:
        outcome = await reconcile(ref(outcome.status.to_k8s(), generation, spec), adapters, settings, now=NOW, **options)
    return outcome


async def settle(adapters: Adapters, status: dict, generation: int = 1, spec: dict | None = None,
                 settings: Settings = SETTINGS, annotations: dict | None = None) -> dict:
    """Run passes until Ready, Stalled or a failed revision (the emulator settles in 0.2 s; a transient error is
    retried)."""
    for _ in range(100):
        outcome = await reconcile(ref(status, generation, spec, annotations), adapters, settings, now=NOW,
                                  record_intent=intent_recorded)
        status = outcome.status.to_k8s()
        a = outcome.assessment
        if a and (a.ready or a.stalled or a.reason == "RevisionFailed"):  # a failed revision awaits a redeploy
            return status
        if not outcome.again:
            await asyncio.sleep(0.1)
    raise AssertionError(f"not settled: {status}")


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


async def finalize_until_gone(obj: ObjectRef, adapters: Adapters, settings: Settings = SETTINGS) -> list[Event]:
    """finalize() as kopf retries it: Cloud Run's delete is a long-running operation, so it waits until it is done."""
    for _ in range(100):
        try:
            return await finalize(obj, adapters, settings)
        except TransientCloudError as exc:
            assert exc.code == "DELETING", exc
            await asyncio.sleep(0.1)
    raise AssertionError("the service was never deleted")
