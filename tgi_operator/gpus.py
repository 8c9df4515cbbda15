"""Cloud Run's GPU offer and its CPU/memory rules: the one table every check reads.

The CRD's CEL rules and the pydantic models (models.py), the renderer, and the emulator's Cloud Run rules
(emulator/rules.py) all read it, so admission, the operator and the emulator can never disagree.

Sources (read 2026-12; update this table when Google's offer changes):
- GPU types, minimums, regions, launch stage: https://cloud.google.com/run/docs/configuring/services/gpu
  ("For L4 GPUs, you must use a minimum of 4 CPU and 16 GiB of memory"; "NVIDIA RTX PRO 6000 Blackwell GPU
  ... (Preview) ... a minimum of 20 CPU and 80 GiB of memory", 96 GB VRAM, driver 580 / CUDA 13.0).
- CPU values: https://cloud.google.com/run/docs/configuring/services/cpu (1, 2, 4, 6 or 8 vCPU; fractions below
  1 are not offered with a GPU, which needs at least 4).
- Memory per CPU: https://cloud.google.com/run/docs/configuring/services/memory-limits (more than 4 GiB needs
  at least 2 vCPU, more than 8 GiB 4, more than 16 GiB 6, more than 24 GiB 8: at most 4 GiB per vCPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

GIB = 1024**3
MAX_MEMORY_GIB_PER_CPU = 4  # memory-limits: 4 GiB per vCPU at most
# cpu: the least memory Cloud Run accepts with that many vCPU (4 vCPU need 2 GiB, 6 and 8 need 4 GiB).
MIN_MEMORY_GIB_FOR_CPU = {4: 2, 6: 4, 8: 4}


@dataclass(frozen=True)
class GpuType:
    name: str  # the value of Cloud Run's `run.googleapis.com/accelerator` node selector
    regions: tuple[str, ...]
    cpu_choices: tuple[int, ...]  # the whole vCPU counts an instance with this GPU may have
    min_memory_gib: int
    max_memory_gib: int
    vram_gib: int  # GPU memory as NVIDIA states it, in GB: gpu_memory.py reads it as 10^9 bytes (the stricter reading)
    launch_stage: str  # "GA", or "BETA" for a preview GPU: the service must say launch_stage BETA (or ALPHA)
    max_count: int = 1  # Cloud Run attaches exactly one GPU per instance
    image_note: str = ""  # what the container image needs on this GPU

    @property
    def min_cpu(self) -> int:
        return min(self.cpu_choices)

    @property
    def max_cpu(self) -> int:
        return max(self.cpu_choices)

    def memory_bounds_gib(self, cpu: int) -> tuple[int, int]:
        """The memory an instance with `cpu` vCPU and this GPU may have, in GiB (low, high)."""
        low = max(self.min_memory_gib, MIN_MEMORY_GIB_FOR_CPU.get(cpu, 0))
        high = min(self.max_memory_gib, cpu * MAX_MEMORY_GIB_PER_CPU)
        return low, high


GPU_TYPES: dict[str, GpuType] = {
    t.name: t
    for t in (
        GpuType(
            name="nvidia-l4",
            regions=("us-central1", "us-east4", "europe-west1", "europe-west4", "asia-southeast1", "asia-south1"),
            cpu_choices=(4, 6, 8),
            min_memory_gib=16,
            max_memory_gib=32,
            vram_gib=24,
            launch_stage="GA",
            image_note="CUDA 12.2 driver (535): any CUDA <= 12.x image, such as the default TGI DLC (CUDA 12.4 "
            "needs the forward-compatibility libraries the DLC ships)",
        ),
        GpuType(
            name="nvidia-rtx-pro-6000",
            # Public deployments show these two; the documentation's list is not in our sources (the stricter answer).
            regions=("us-central1", "europe-west4"),
            # Preview: the documented floor is 20 vCPU / 80 GiB. Larger shapes are not documented; until they are,
            # only the documented one is offered (the stricter answer).
            cpu_choices=(20,),
            min_memory_gib=80,
            max_memory_gib=80,
            vram_gib=96,
            launch_stage="BETA",
            image_note="Blackwell (sm_120) needs an image built for CUDA >= 12.8, e.g. TGI >= 3.3; "
            "the default CUDA 12.4 image cannot run on it",
        ),
    )
}

DEFAULT_GPU_TYPE = "nvidia-l4"
LAUNCH_STAGE_ORDER = ("ALPHA", "BETA", "GA")  # a service may use features at its launch stage or above


def regions_for(gpu_type: str) -> tuple[str, ...]:
    return GPU_TYPES[gpu_type].regions


def cpu_memory_problems(gpu: GpuType, cpu: Decimal, memory_bytes: Decimal | int) -> list[tuple[str, str]]:
    """What Cloud Run refuses in an instance shape with this GPU: (field, message) pairs, field 'cpu' or 'memory'.
    Empty when the shape is one Cloud Run accepts."""
    if cpu != cpu.to_integral_value() or int(cpu) not in gpu.cpu_choices:
        return [("cpu", cpu_message(gpu))]
    low, high = gpu.memory_bounds_gib(int(cpu))
    if not low * GIB <= memory_bytes <= high * GIB:
        return [("memory", memory_message(gpu, int(cpu)))]
    return []


def cpu_message(gpu: GpuType) -> str:
    return f"cpu must be one of {', '.join(map(str, gpu.cpu_choices))} with an {gpu.name} GPU"


def memory_message(gpu: GpuType, cpu: int) -> str:
    low, high = gpu.memory_bounds_gib(cpu)
    span = f"{low}Gi" if low == high else f"between {low}Gi and {high}Gi"
    return (f"memory must be {span} with {cpu} vCPU and an {gpu.name} GPU (Cloud Run allows at most "
            f"{MAX_MEMORY_GIB_PER_CPU}Gi per vCPU; the GPU needs at least {gpu.min_memory_gib}Gi)")
