"""The device mesh: axes (data, fsdp, tensor) sized from config, with cross-slice (DCN) sizes.

A run's devices form a mesh of shape `ici * dcn` (elementwise): `ici` sizes are the axes inside
one slice (fast interconnect), `dcn` sizes split the axes across slices of a multi-slice TPU
job (data-centre network). Keep the chatty axes (tensor, fsdp) inside a slice and put `data`
across slices, which is what the defaults do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes. One ICI size may be -1: it takes the devices the others leave.

    data, fsdp, tensor: sizes inside one slice (their product is the devices per slice).
    dcn_data, dcn_fsdp, dcn_tensor: how many slices each axis spans (product = number of slices).
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_tensor: int = 1

    @property
    def ici(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)

    @property
    def dcn(self) -> tuple[int, int, int]:
        return (self.dcn_data, self.dcn_fsdp, self.dcn_tensor)


def resolve_sizes(sizes: Sequence[int], num_devices: int, what: str = "mesh") -> tuple[int, ...]:
    """Fills one -1 in `sizes` so that their product is `num_devices`; errors name the fix."""
    sizes = tuple(int(s) for s in sizes)
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1:
        raise ValueError(f"{what} sizes {sizes}: at most one axis may be -1 (take the rest).")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"{what} sizes {sizes}: sizes must be positive or -1.")
    fixed = math.prod(s for s in sizes if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"{what} sizes {sizes}: {num_devices} devices are not divisible by {fixed}; "
                f"choose sizes whose product divides {num_devices}."
            )
        sizes = tuple(num_devices // fixed if s == -1 else s for s in sizes)
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"{what} sizes {sizes} use {math.prod(sizes)} devices but {num_devices} are available; "
            f"set one axis to -1 or make the product {num_devices}."
        )
    return sizes


def mesh_shapes(config: MeshConfig, num_devices: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ici, dcn) shapes for `num_devices` devices; dcn has no -1 (it is the slice count)."""
    dcn = tuple(int(s) for s in config.dcn)
    if any(s < 1 for s in dcn):
        raise ValueError(f"MeshConfig dcn sizes {dcn} must be >= 1.")
    num_slices = math.prod(dcn)
    if num_devices % num_slices:
        raise ValueError(
            f"MeshConfig dcn sizes {dcn} ask for {num_slices} slices but {num_devices} devices "
            f"do not split evenly into them."
        )
    ici = resolve_sizes(config.ici, num_devices // num_slices, "MeshConfig ici")
    return ici, dcn


def device_grid(config: MeshConfig, devices: Sequence[jax.Device]) -> np.ndarray:
    """Devices arranged as the mesh array `[data, fsdp, tensor]` (object ndarray).

    Multi-slice: devices are grouped by `slice_index` (TPU) or, where devices have none (GPU
    clusters), by process, and the DCN sizes lay those groups along the axes.
    """
    ici, dcn = mesh_shapes(config, len(devices))
    if math.prod(dcn) == 1:
        return mesh_utils.create_device_mesh(ici, devices)
    by_process = getattr(devices[0], "slice_index", None) is None
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=by_process)


def make_mesh(
    config: MeshConfig | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """The run's mesh over `devices` (default: all), axes `MESH_AXES`, Auto axis types.

    Auto axes: shardings come from jit in/out shardings and the rules table, not from types.
    """
    config = config or MeshConfig()
    devices = list(devices if devices is not None else jax.devices())
    if math.prod(config.dcn) == 1:
        ici, _ = mesh_shapes(config, len(devices))
        return jax.make_mesh(
            ici, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
        )
    return Mesh(
        device_grid(config, devices), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES)
    )
