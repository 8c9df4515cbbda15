"""Cloud Run's GPU offer: the one table of GPU types, their regions and their CPU/memory bounds.

Everything that checks a GPU setting reads it from here: the CRD's CEL rules (crd.py),
the pydantic models, the renderer, and the emulator's Cloud Run rules.
Source: Cloud Run GPU documentation (services/gpu); update this table when Google's offer changes.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GpuType:
    name: str  # the value of Cloud Run's `run.googleapis.com/accelerator` node selector
    regions: tuple[str, ...]
    min_cpu: int  # vCPU an instance needs at least when it holds this GPU
    min_memory_gib: int
    max_cpu: int  # the most an instance with this GPU may have
    max_memory_gib: int
    max_count: int = 1  # Cloud Run attaches exactly one GPU per instance


GPU_TYPES: dict[str, GpuType] = {
    t.name: t
    for t in (
        GpuType(
            name="nvidia-l4",
            regions=("us-central1", "us-east4", "europe-west1", "europe-west4", "asia-southeast1", "asia-south1"),
            min_cpu=4,
            min_memory_gib=16,
            max_cpu=8,
            max_memory_gib=32,
        ),
        GpuType(
            name="nvidia-rtx-pro-6000",
            regions=("us-central1", "europe-west4", "asia-southeast1", "asia-south2"),
            min_cpu=20,
            min_memory_gib=80,
            max_cpu=44,
            max_memory_gib=176,
        ),
    )
}

DEFAULT_GPU_TYPE = "nvidia-l4"


def regions_for(gpu_type: str) -> tuple[str, ...]:
    return GPU_TYPES[gpu_type].regions
