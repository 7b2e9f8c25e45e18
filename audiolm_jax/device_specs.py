"""Accelerator datasheet figures, matched against jax's `device_kind`: dense bf16 peak FLOP/s
(for MFU) and HBM bandwidth (for the decoding roofline, generate/roofline.py)."""
from __future__ import annotations

from typing import Sequence

import jax

# Dense bf16 peak FLOP/s per device (vendor datasheets).
PEAK_FLOPS = (
    ("v6", 918e12),
    ("v5p", 459e12),
    ("v5 lite", 197e12),
    ("v5e", 197e12),
    ("v4", 275e12),
    ("v3", 123e12),
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
    ("l4", 121e12),
)

# HBM bandwidth per device in bytes/s (vendor datasheets); the PCIe H100 before the SXM one.
HBM_BYTES_PER_SECOND = (
    ("h200", 4.8e12),
    ("h100 pcie", 2.0e12),
    ("h100", 3.35e12),
    ("a100", 2.0e12),
    ("l4", 0.3e12),
    ("v6", 1.64e12),
    ("v5p", 2.765e12),
    ("v5 lite", 0.819e12),
    ("v5e", 0.819e12),
    ("v4", 1.2e12),
)


def by_device_kind(table: Sequence[tuple[str, float]], kind: str) -> float | None:
    """The value of the first (name, value) whose name is in `kind` (a jax device_kind, any
    case), None when none is (CPUs, unknown chips)."""
    kind = kind.lower()
    return next((value for name, value in table if name in kind), None)


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device` (default the first), None when unknown (CPUs)."""
    return by_device_kind(PEAK_FLOPS, (device or jax.devices()[0]).device_kind)


def hbm_bandwidth(device: jax.Device | None = None) -> float | None:
    """HBM bytes/s of `device` (default the first), None when unknown (CPUs)."""
    return by_device_kind(HBM_BYTES_PER_SECOND, (device or jax.devices()[0]).device_kind)
