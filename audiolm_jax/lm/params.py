"""Parameters with logical axis names (the t5x vocabulary), created without needing a mesh.

Names are stored as the Variable's `out_sharding` metadata, so `nnx.get_partition_spec(state)`
returns `PartitionSpec('embed', 'mlp')`-style logical specs that the trainer's rules table maps
to mesh axes. `eager_sharding=False` keeps construction mesh-free (tests, `nnx.eval_shape`);
the trainer places parameters through `jax.jit(..., out_shardings=...)`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

Initializer = Callable[..., jnp.ndarray]


def logical_param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int],
                  names: Sequence[str | None]) -> nnx.Param:
    """An f32 parameter of `shape` whose dims carry the logical axis `names`."""
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match parameter shape {tuple(shape)}: "
                         "give one name (or None) per dimension")
    value = init(rngs.params(), tuple(shape), jnp.float32)
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)
