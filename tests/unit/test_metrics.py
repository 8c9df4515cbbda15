"""metrics.py: objects counted by condition at scrape time, and controller-runtime's `result` label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tgi_operator.access import InvokerAccountCreated
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
    registry.register(ObjectsCollector(lambda: [("team-m", f"o{i}", s) for i, s in enumerate(statuses)], lambda: 3))
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
    # Waiting for a just-made invoker account to propagate is a step of every new object, not an error.
    made = InvokerAccountCreated("ACCOUNT_PROPAGATING", "x", retry_after=3.0, email="inv@p.iam.gserviceaccount.com")
    assert _result(Outcome(TGIServiceStatus(), None, transient=made)) == "requeue_after"


def test_each_objects_estimated_cost_is_exported_while_it_is_known() -> None:
    objects = [
        ("team-m", "llama", {"cost": {"currency": "USD", "instanceHourly": "1.42", "minimumHourly": "0.00",
                                      "maximumHourly": "4.26"}}),
        ("team-m", "unpriced", {"cost": {"currency": "USD", "basis": "no price for nvidia-rtx-pro-6000"}}),
        ("team-m", "euro", {"cost": {"currency": "EUR", "maximumHourly": "3.00"}}),  # the metric is in USD
        ("team-m", "broken", {"cost": {"currency": "USD", "maximumHourly": "a lot"}}),
        ("team-m", "none", {}),
    ]
    registry = CollectorRegistry()
    registry.register(ObjectsCollector(lambda: objects, lambda: 0))

    def sample(name: str, bound: str) -> float | None:
        return registry.get_sample_value("tgi_operator_estimated_hourly_cost_usd",
                                         {"namespace": "team-m", "name": name, "bound": bound})

    assert (sample("llama", "instance"), sample("llama", "min"), sample("llama", "max")) == (1.42, 0.0, 4.26)
    assert [sample(name, "max") for name in ("unpriced", "euro", "broken", "none")] == [None] * 4
    objects.pop(0)  # gone from the operator's view: gone from the next scrape
    assert sample("llama", "max") is None
