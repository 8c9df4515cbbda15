"""The model is asked once per revision: a probe at every resync would keep a scale-to-zero service (and its GPU)
awake, or meet a cold start and report a healthy model as waiting."""

from __future__ import annotations

from google.cloud import run_v2

from tgi_operator.models import ModelStatus, TGIServiceStatus
from tgi_operator.probe import ProbeResult
from tgi_operator.reconcile import _probe


class CountingProbe:
    """Stands in for ModelProbe (our own adapter; the HTTP path is covered by the integration tests)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def check(self, url: str) -> ProbeResult:
        self.calls.append(url)
        return ProbeResult(True, "", {"model_id": "org/model"})


def serving(revision: str) -> run_v2.Service:
    return run_v2.Service(uri="https://svc.a.run.app", latest_ready_revision=f"projects/p/locations/r/services/s/revisions/{revision}")


async def test_a_new_revision_is_probed() -> None:
    probe = CountingProbe()
    result = await _probe(serving("s-00002-abc"), TGIServiceStatus(model=ModelStatus(revision="s-00001-xyz")), probe)
    assert result.healthy and probe.calls == ["https://svc.a.run.app"]


async def test_a_revision_whose_model_answered_is_not_probed_again() -> None:
    probe = CountingProbe()
    result = await _probe(serving("s-00001-xyz"), TGIServiceStatus(model=ModelStatus(revision="s-00001-xyz")), probe)
    assert result.healthy and probe.calls == []


async def test_nothing_known_yet_is_probed() -> None:
    probe = CountingProbe()
    await _probe(serving("s-00001-xyz"), TGIServiceStatus(), probe)
    assert probe.calls == ["https://svc.a.run.app"]
