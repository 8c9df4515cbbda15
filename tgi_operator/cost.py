"""Pure: what a TGIService costs per hour on Cloud Run, from a pricing table kept in a data file.

The table (tgi_operator/data/pricing.yaml, or TGI_OPERATOR_PRICING_FILE) holds per-second prices per region tier:
vCPU-second, GiB-second and GPU-second, for instance-based billing, the only billing a GPU service has (its CPU is
always allocated). One instance costs its vCPUs, its memory and its GPU for every second it lives, busy or idle; so
the service costs that times its instance count: `minInstances` when idle, `maxInstances` at most.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tgi_operator.models import CostStatus, TGIServiceSpec
from tgi_operator.quantity import gib

DEFAULT_PRICING_FILE = Path(__file__).resolve().parent / "data" / "pricing.yaml"
SECONDS_PER_HOUR = 3600
CENT = Decimal("0.01")

Price = Annotated[Decimal, Field(ge=0)]  # written as a string in the file: exact, no binary float


class _Table(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class GpuPrice(_Table):
    without_zonal_redundancy: Price
    with_zonal_redundancy: Price


class Tier(_Table):
    name: str
    regions: list[str]
    vcpu_second: Price
    gib_second: Price
    gpu_second: dict[str, GpuPrice]


class Pricing(_Table):
    currency: str
    source: str
    read: str
    tiers: Annotated[list[Tier], Field(min_length=1)]

    def tier(self, region: str) -> Tier:
        """The region's tier; a region no tier lists gets the last one (the dearer: the stricter estimate)."""
        return next((t for t in self.tiers if region in t.regions), self.tiers[-1])


class PricingError(ValueError):
    """The pricing file cannot be read or does not have the expected shape."""


@functools.lru_cache(maxsize=4)
def load_pricing(path: str | None = None) -> Pricing:
    """The pricing table at `path` (default: the one shipped with the operator), read once per path."""
    where = Path(path) if path else DEFAULT_PRICING_FILE
    try:
        return Pricing.model_validate(yaml.safe_load(where.read_text()))
    except OSError as exc:
        raise PricingError(f"cannot read the pricing file {where}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise PricingError(f"the pricing file {where} is not a pricing table: {exc}") from None


@dataclass(frozen=True)
class HourlyCost:
    instance: Decimal  # one instance, per hour
    minimum: Decimal  # minInstances, per hour: what the service costs while idle
    maximum: Decimal  # maxInstances, per hour: the most it can cost
    currency: str
    basis: str  # which prices, from where


def hourly_cost(spec: TGIServiceSpec, region: str, pricing: Pricing) -> HourlyCost | None:
    """The estimate for `spec` in `region`; None when the table has no price for its GPU (no guess is made)."""
    tier = pricing.tier(region)
    gpu = spec.resources.gpu
    gpu_price = tier.gpu_second.get(gpu.type.value)
    if gpu_price is None:
        return None
    per_gpu = gpu_price.with_zonal_redundancy if gpu.zonal_redundancy else gpu_price.without_zonal_redundancy
    per_second = (spec.resources.cpu_count() * tier.vcpu_second + gib(spec.resources.memory) * tier.gib_second
                  + gpu.count * per_gpu)
    instance = per_second * SECONDS_PER_HOUR
    low, high = (0, 0) if spec.suspend else (spec.scaling.min_instances, spec.scaling.max_instances)
    basis = f"Cloud Run {tier.name} ({region}), instance-based billing; {pricing.source} read {pricing.read}"
    return HourlyCost(instance, instance * low, instance * high, pricing.currency, basis)


def cost_status(cost: HourlyCost | None, spec: TGIServiceSpec, pricing: Pricing) -> CostStatus:
    """The estimate as status.cost shows it: amounts rounded to the cent, or why there is none."""
    if cost is None:
        return CostStatus(currency=pricing.currency, basis=(
            f"no price for {spec.resources.gpu.type.value} in the pricing table ({pricing.source} read {pricing.read}): "
            "add one (TGI_OPERATOR_PRICING_FILE) to get an estimate"))
    return CostStatus(currency=cost.currency, instance_hourly=cents(cost.instance), minimum_hourly=cents(cost.minimum),
                      maximum_hourly=cents(cost.maximum), basis=cost.basis)


def cents(amount: Decimal) -> str:
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))
