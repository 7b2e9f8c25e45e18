"""Logical axis names -> mesh axes (the t5x rules table) -> NamedSharding for state and batches.

Models name the dims of their params with the t5x vocabulary (batch, length, embed, mlp, heads,
kv, vocab, ...) through `nnx.with_partitioning(init, ("embed", "mlp"))`; a rules table, bound in
gin (`gin/training/partitioning.gin`), says which mesh axis each name is split over. A name not in
the table, or a dim the mesh axes do not divide, is replicated.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Sequence

import gin
import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiolm_jax.training.mesh import MESH_AXES

MeshAxes = str | tuple[str, ...] | None
LogicalRules = tuple[tuple[str, MeshAxes], ...]

# FSDP shards the embed dim of every weight; tensor parallelism splits mlp/heads/vocab.
DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("joined_kv", "tensor"),
    ("vocab", "tensor"),
    ("channels", "tensor"),
    ("codebook", None),
    ("relpos_buckets", None),
    ("layers", None),
)

BATCH_AXES = ("data", "fsdp")


@gin.configurable
def axis_rules(rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> LogicalRules:
    """The rules table, as bound in gin: `axis_rules.rules = [("embed", "fsdp"), ...]`."""
    out = []
    for rule in rules:
        name, axes = rule
        axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
        for axis in axes if isinstance(axes, tuple) else (axes,):
            if axis is not None and axis not in MESH_AXES:
                raise ValueError(
                    f"axis rule {rule!r}: mesh axis {axis!r} is not one of {MESH_AXES}."
                )
        out.append((name, axes))
    return tuple(out)


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return axes if isinstance(axes, tuple) else (axes,)


def logical_to_mesh_axes(logical: Iterable[str | None], rules: LogicalRules) -> list[MeshAxes]:
    """Maps each logical name to mesh axes, t5x style: the first rule for the name whose mesh axes
    are still free in this spec wins; a name with no free rule is replicated (None)."""
    used: set[str] = set()
    out: list[MeshAxes] = []
    for name in logical:
        choice: MeshAxes = None
        if name is not None:
            for rule_name, axes in rules:
                if rule_name == name and not (set(_as_tuple(axes)) & used):
                    choice = axes
                    break
        used.update(_as_tuple(choice))
        out.append(choice)
    return out


def spec_for(
    logical: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh, rules: LogicalRules
) -> P:
    """PartitionSpec for an array of `shape` whose dims are named `logical`.

    Dims whose size the mesh axes do not divide are replicated (logged), so odd-sized params
    (a 3-way bias, say) still fit any mesh.
    """
    if not logical:
        return P()
    if len(logical) != len(shape):
        raise ValueError(
            f"logical axes {tuple(logical)} do not match an array of shape {tuple(shape)}: "
            "give one name (or None) per dim in nnx.with_partitioning."
        )
    out = []
    for axes, size in zip(logical_to_mesh_axes(logical, rules), shape):
        n = math.prod(mesh.shape[a] for a in _as_tuple(axes))
        if axes is not None and size % n:
            logging.info(
                "replicating a dim of size %d named %s: mesh axes %s (size %d) do not divide it",
                size,
                logical,
                axes,
                n,
            )
            axes = None
        out.append(axes)
    return P(*out)


def _logical_names(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    meta = variable.get_metadata()
    # flax >= 0.12 names it out_sharding; earlier releases sharding_names / sharding.
    for key in ("out_sharding", "sharding_names", "sharding"):
        names = meta.get(key)
        if names is not None:
            return tuple(names)
    return None


def tree_shardings(tree: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedSharding for every array leaf of `tree` (same structure).

    `tree` may hold nnx Variables (sharded by their logical names) and plain arrays or
    ShapeDtypeStructs (replicated): a train state with params, EMA state and optax state.
    """

    def one(x):
        if isinstance(x, nnx.Variable):
            value = x.get_value()
            return x.replace(
                NamedSharding(mesh, spec_for(_logical_names(x), value.shape, mesh, rules))
            )
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _path_keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def optimizer_shardings(
    abstract_opt_state: Any, params: Any, param_shardings: Any, mesh: Mesh
) -> Any:
    """Shardings for an optax state: a leaf whose path ends with a param's path and has its shape
    (Adam's mu/nu, momentum, ...) is sharded like that param; everything else (counts, scalars,
    factored statistics) is replicated. Works through chains, masks and wrappers alike."""
    by_path = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_shardings)
    ):
        by_path[_path_keys(path)] = (tuple(leaf.shape), sharding)
    replicated = NamedSharding(mesh, P())

    def one(path, leaf):
        keys = _path_keys(path)
        for start in range(len(keys)):
            match = by_path.get(keys[start:])
            if match is not None and match[0] == tuple(leaf.shape):
                return match[1]
        return replicated

    return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches: leading dim split over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def with_logical_constraint(
    x: jax.Array, logical: Sequence[str | None], mesh: Mesh, rules: LogicalRules
) -> jax.Array:
    """Pins an activation's sharding by logical names inside a jitted function."""
    return jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, spec_for(logical, x.shape, mesh, rules))
    )
