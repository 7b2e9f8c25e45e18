"""Cloud TPU accelerator types: parse `v4-128`, know its hosts and a default runtime.

The suffix counts TensorCores for v2, v3, v4 and v5p (two per chip, eight per host) and chips
for v5e (`v5litepod-N`) and v6e (one TensorCore per chip; slices up to 8 chips sit on one host,
larger ones on hosts of 4 chips). The host count is what `--worker=all` fans out to, and so the
number of JAX processes of one slice.
"""
from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Generation:
    """What one TPU generation allows: sizes, host layout and a runtime (software) version."""
    unit: str                      # what the suffix counts: "TensorCores" or "chips"
    sizes: tuple[int, ...] | None  # allowed suffixes; None: any multiple of 8
    runtime: str                   # `--version` / `--runtime-version` when the spec leaves it empty

    def hosts(self, size: int) -> int:
        if self.unit == "TensorCores":  # 4 chips x 2 TensorCores per host
            return max(1, size // 8)
        return 1 if size <= 8 else size // 4  # v5e / v6e: single-host up to 8 chips, then 4 per host


_SMALL_POD = (1, 4, 8, 16, 32, 64, 128, 256)
GENERATIONS: dict[str, Generation] = {
    "v2": Generation("TensorCores", None, "tpu-ubuntu2204-base"),
    "v3": Generation("TensorCores", None, "tpu-ubuntu2204-base"),
    "v4": Generation("TensorCores", None, "tpu-ubuntu2204-base"),
    "v5p": Generation("TensorCores", None, "v2-alpha-tpuv5"),
    "v5litepod": Generation("chips", _SMALL_POD, "v2-alpha-tpuv5-lite"),
    "v6e": Generation("chips", _SMALL_POD, "v2-alpha-tpuv6e"),
}


@dataclasses.dataclass(frozen=True)
class TpuType:
    """One parsed accelerator type, e.g. `v4-128`: generation v4, 128 TensorCores, 16 hosts."""
    name: str
    generation: str
    size: int
    hosts: int
    default_runtime: str


def parse_tpu_type(accelerator_type: str) -> TpuType:
    """`v4-128` -> TpuType; ValueError saying what is wrong and what is allowed."""
    known = ", ".join(f"{g}-N" for g in GENERATIONS)
    match = re.fullmatch(r"(v[0-9a-z]+)-([0-9]+)", str(accelerator_type))
    if not match:
        raise ValueError(f"accelerator type {accelerator_type!r} is not GENERATION-SIZE; "
                         f"use one of {known} (e.g. 'v4-8', 'v4-128', 'v5litepod-256')")
    generation, size = match.group(1), int(match.group(2))
    if generation not in GENERATIONS:
        raise ValueError(f"unknown TPU generation {generation!r} in {accelerator_type!r}; "
                         f"known: {known} (v5e is spelled 'v5litepod-N')")
    gen = GENERATIONS[generation]
    if gen.sizes is not None and size not in gen.sizes:
        raise ValueError(f"{accelerator_type!r}: {generation} slices have {gen.sizes} {gen.unit}")
    if gen.sizes is None and (size < 8 or size % 8):
        raise ValueError(f"{accelerator_type!r}: {generation} sizes count {gen.unit} and are "
                         f"multiples of 8 (e.g. {generation}-8, {generation}-128)")
    return TpuType(str(accelerator_type), generation, size, gen.hosts(size), gen.runtime)
