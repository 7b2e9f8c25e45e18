"""Activation sharding constraints by logical axis names, a no-op unless a mesh is given.

The model calls `constrain(x, ("batch", "length", "embed"))` at layer boundaries. Without a
mesh that is the identity; the trainer passes `logical_constraint(mesh, rules)` (or its own
callable with the same signature) so XLA keeps activations laid out as its rules table says.
Names used by the model: batch, length, embed, heads, kv, mlp, vocab (the t5x vocabulary).
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def no_constraint(x: jax.Array, names: tuple) -> jax.Array:
    """The default hook: leaves placement to XLA (single device, tests)."""
    del names
    return x


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], rules: LogicalRules,
                    mesh_shape: dict[str, int]) -> PartitionSpec:
    """t5x semantics: each logical name takes its first rule whose mesh axes exist in the mesh,
    are not used by an earlier dimension and divide the dimension; else it is replicated."""
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        chosen = None
        for logical, physical in rules:
            if logical != name:
                continue
            axes = () if physical is None else ((physical,) if isinstance(physical, str) else tuple(physical))
            if all(a in mesh_shape and a not in used for a in axes):
                if size % int(np.prod([mesh_shape[a] for a in axes])) == 0:
                    chosen = physical
                    used.update(axes)
                break
        spec.append(chosen)
    return PartitionSpec(*spec)


def logical_constraint(mesh: Mesh, rules: LogicalRules):
    """A hook that constrains activations to `mesh` through the logical `rules` table."""
    mesh_shape = dict(mesh.shape)
    if any(t != AxisType.Auto for t in mesh.axis_types):
        raise ValueError(f"logical_constraint needs a mesh with Auto axes, got {mesh.axis_types}; build it "
                         "with jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names))")

    def constrain(x: jax.Array, names: tuple) -> jax.Array:
        if len(names) != x.ndim:
            raise ValueError(f"logical names {names} do not match an activation of shape {x.shape}")
        sharding = NamedSharding(mesh, logical_to_spec(names, x.shape, rules, mesh_shape))
        return jax.lax.with_sharding_constraint(x, sharding)

    return constrain
