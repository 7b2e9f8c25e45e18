"""Pallas attention kernels under a device mesh: GSPMD cannot partition a Pallas call, so under
the abstract mesh the training program traces under (several devices) a kernel runs inside
`shard_map`, the batch split over the batch axes and the heads over "tensor" (attention is
independent across both). Used by `tpu_attention` (splash) and `pallas_bias_attention`.
"""
from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import PartitionSpec

from audiolm_jax.training.partitioning import BATCH_AXES

HEAD_AXES = ("tensor",)


def mesh_axes(mesh, names, size):
    """The mesh axes among `names` whose product divides `size` (greedy, in order)."""
    chosen, product = [], 1
    for name in names:
        if name in mesh.shape and size % (product * mesh.shape[name]) == 0:
            chosen.append(name)
            product *= mesh.shape[name]
    return tuple(chosen) or None


def per_shard(local: Callable, batch: int, heads: int, in_kinds: str, out_kinds: str) -> Callable:
    """`local` inside `shard_map` under a mesh of several devices, else `local` itself. Kinds,
    one letter per operand / result: 'x' [batch, length, heads, dim], 't' a per-head table
    [heads, width], 'r' a row [batch, heads, length], 'w' per-block windows [batch, heads,
    blocks, rows, columns]; one out kind: a single result."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size <= 1:
        return local
    b, h = mesh_axes(mesh, BATCH_AXES, batch), mesh_axes(mesh, HEAD_AXES, heads)
    spec = {"x": PartitionSpec(b, None, h, None), "t": PartitionSpec(h, None),
            "r": PartitionSpec(b, h, None), "w": PartitionSpec(b, h, None, None, None)}
    specs = lambda kinds: tuple(spec[kind] for kind in kinds)  # noqa: E731
    out_specs = specs(out_kinds) if len(out_kinds) > 1 else spec[out_kinds]
    return jax.shard_map(local, mesh=mesh, in_specs=specs(in_kinds), out_specs=out_specs,
                         check_vma=False)
