"""metrics.py: objects counted by condition at scrape time, and controller-runtime's `result` label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tgi_operator.conditions import Assessment
from tgi_operator.errors import TransientCloudError
from tgi_operator.handlers import _result
from tgi_operator.metrics import ObjectsCollector
from tgi_operator.models import TGIServiceStatus
from tgi_operator.reconcile import Outcome

READY = {"type": "Ready", "status": "True", "reason": "Ready"}
DEPLOYING = {"type": "Ready", "status": "False", "reason": "Deploying"}


def test_objects_are_counted_by_condition_status_and_reason_and_broken_statuses_are_skipped() -> None:
    statuses = [{"conditions": [READY]}, {"conditions": [READY]}, {"conditions": [DEPLOYING]}, {},
                {"conditions": "garbage"}, {"conditions": ["garbage"]}]
    registry = CollectorRegistry()
    registry.register(ObjectsCollector(lambda: statuses, lambda: 3))
    text = generate_latest(registry).decode()
    assert 'tgi_operator_objects{condition="Ready",reason="Ready",status="True"} 2.0' in text
    assert 'tgi_operator_objects{condition="Ready",reason="Deploying",status="False"} 1.0' in text
    assert 'workqueue_depth{name="tgiservice"} 3.0' in text


def outcome(ready: bool = False, stalled: bool = False, again: bool = False) -> Outcome:
    return Outcome(TGIServiceStatus(), Assessment(ready, not (ready or stalled), stalled, "X", ""), again=again)


def test_the_result_label_is_controller_runtimes() -> None:
    assert _result(outcome(ready=True)) == "success"
    assert _result(outcome(stalled=True)) == "success"  # done: the status says what is wrong
    assert _result(outcome()) == "requeue_after"  # deploying: checked again after a delay
    assert _result(outcome(again=True)) == "requeue"
    assert _result(Outcome(TGIServiceStatus(), None, transient=TransientCloudError("UNAVAILABLE", "x"))) == "error"


def test_each_objects_estimated_cost_is_exported_until_it_is_gone() -> None:
    from prometheus_client import REGISTRY

    from tgi_operator.metrics import forget_cost, record_cost
    from tgi_operator.models import CostStatus

    def sample(bound: str) -> float | None:
        return REGISTRY.get_sample_value("tgi_operator_estimated_hourly_cost_usd",
                                         {"namespace": "team-m", "name": "llama", "bound": bound})

    record_cost("team-m", "llama", CostStatus(currency="USD", instance_hourly="1.42", minimum_hourly="0.00",
                                              maximum_hourly="4.26"))
    assert (sample("instance"), sample("min"), sample("max")) == (1.42, 0.0, 4.26)
    record_cost("team-m", "llama", CostStatus(currency="USD", basis="no price for nvidia-rtx-pro-6000"))
    assert sample("max") is None  # no estimate: no series
    record_cost("team-m", "llama", CostStatus(currency="EUR", maximum_hourly="3.00"))
    assert sample("max") is None  # the metric is in USD: another currency is not exported under its name
    record_cost("team-m", "llama", CostStatus(currency="USD", maximum_hourly="4.26"))
    forget_cost("team-m", "llama")
    assert sample("max") is None
