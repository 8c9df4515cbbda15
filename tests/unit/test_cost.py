"""cost.py: hourly cost from the shipped pricing table (Cloud Run list prices, instance-based billing), per region tier;
a table of one's own; what status.cost says."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tgi_operator.cost import PricingError, cost_status, hourly_cost, load_pricing
from tgi_operator.gpus import GPU_TYPES
from tgi_operator.models import parse_spec

SEED = {"region": "us-central1", "model": {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "quantize": "awq"}}
RTX = {"region": "us-central1", "model": {"id": "org/model"},
       "resources": {"cpu": 20, "memory": "80Gi", "gpu": {"type": "nvidia-rtx-pro-6000"}}}


def spec(base: dict[str, Any], **changes: Any) -> Any:
    return parse_spec({**base, **changes})


def hourly(base: dict[str, Any], **changes: Any) -> tuple[str, str, str]:
    cost = hourly_cost(spec(base, **changes), changes.get("region", base["region"]), load_pricing())
    assert cost is not None
    return tuple(str(a.quantize(Decimal("0.00001"))) for a in (cost.instance, cost.minimum, cost.maximum))


def test_the_seed_costs_its_cpu_memory_and_l4_for_every_second_of_each_instance() -> None:
    # 8 vCPU x $0.000018 + 32 GiB x $0.000002 + 1 L4 x $0.0001867 = $0.00039470 a second: $1.42092 an hour.
    assert hourly(SEED) == ("1.42092", "0.00000", "4.26276")  # scales to zero; at most 3 instances


@pytest.mark.parametrize("changes, expected", [
    ({"scaling": {"minInstances": 1, "maxInstances": 2}}, ("1.42092", "1.42092", "2.84184")),  # a warm instance bills
    ({"resources": {"gpu": {"zonalRedundancy": True}}}, ("1.79604", "0.00000", "5.38812")),  # L4 at $0.0002909 a second
    ({"resources": {"cpu": 4, "memory": "16Gi"}}, ("1.04652", "0.00000", "3.13956")),  # the smallest L4 shape
    ({"suspend": True}, ("1.42092", "0.00000", "0.00000")),  # manual scaling to zero: nothing runs
    ({"region": "asia-southeast1"}, ("1.98929", "0.00000", "5.96786")),  # Tier 2: x 1.4 (assumption, the dearer)
], ids=["min instances", "zonal redundancy", "4 vCPU 16 GiB", "suspended", "tier 2"])
def test_what_changes_the_cost(changes: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert hourly(SEED, **changes) == expected


def test_the_rtx_pro_6000_shape() -> None:
    # 20 vCPU x $0.000018 + 80 GiB x $0.000002 + $0.00036522: $3.186792 an hour.
    assert hourly(RTX)[0] == "3.18679"


def test_every_gpu_region_has_a_tier_and_every_tier_a_price_for_every_gpu() -> None:
    pricing = load_pricing()
    listed = {region for tier in pricing.tiers for region in tier.regions}
    for gpu in GPU_TYPES.values():
        assert set(gpu.regions) <= listed, gpu.name  # none falls silently into the default tier
        for tier in pricing.tiers:
            assert gpu.name in tier.gpu_second, (tier.name, gpu.name)
    assert pricing.source.startswith("https://cloud.google.com/run/pricing as transcribed") and pricing.read


def test_a_region_no_tier_lists_is_priced_as_the_last_tier() -> None:
    pricing = load_pricing()
    assert pricing.tier("mars-north1").name == pricing.tiers[-1].name == "Tier 2"


def test_the_status_rounds_to_the_cent_and_names_its_basis() -> None:
    pricing = load_pricing()
    status = cost_status(hourly_cost(spec(SEED), "us-central1", pricing), spec(SEED), pricing)
    assert (status.currency, status.instance_hourly, status.minimum_hourly, status.maximum_hourly) == \
        ("USD", "1.42", "0.00", "4.26")
    assert status.basis == ("Cloud Run Tier 1 (us-central1), instance-based billing; https://cloud.google.com/run/pricing "
                            "as transcribed (Tier 2 GPU prices assumed) read 2026-12-01")


OWN_TABLE = """
currency: EUR
source: our contract 2026-11
read: "2026-11-30"
tiers:
  - name: negotiated
    regions: [us-central1]
    vcpuSecond: "0.00001"
    gibSecond: "0.000001"
    gpuSecond:
      nvidia-l4: {withoutZonalRedundancy: "0.0001", withZonalRedundancy: "0.0002"}
"""


def test_a_platform_teams_own_table_replaces_the_list_prices(tmp_path: Path) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(OWN_TABLE)
    pricing = load_pricing(str(path))
    cost = hourly_cost(spec(SEED), "us-central1", pricing)
    # (8 x 0.00001 + 32 x 0.000001 + 0.0001) x 3600 = 0.7632
    assert cost is not None and cost.instance == Decimal("0.7632") and cost.currency == "EUR"
    # A GPU the table does not price: no guess, and the status says what to add.
    rtx = spec(RTX)
    assert hourly_cost(rtx, "us-central1", pricing) is None
    status = cost_status(None, rtx, pricing)
    assert status.maximum_hourly is None and "no price for nvidia-rtx-pro-6000" in status.basis
    assert "TGI_OPERATOR_PRICING_FILE" in status.basis


@pytest.mark.parametrize("content, says", [
    (None, "cannot read the pricing file"),
    ("tiers: []\ncurrency: USD\nsource: x\nread: y\n", "is not a pricing table"),
    ("currency: USD\nsource: x\nread: y\ntiers: [{name: t, regions: [], vcpuSecond: '-1', gibSecond: '0', gpuSecond: {}}]",
     "is not a pricing table"),
])
def test_a_broken_table_is_refused_naming_the_file(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "pricing.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PricingError, match=says) as raised:
        load_pricing(str(path))
    assert str(path) in str(raised.value)
