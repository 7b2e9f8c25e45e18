"""The train state: f32 params, the model's other variables, per-group optax state, step, rng.

The state is plain nested dicts of arrays (no nnx objects), so jit dispatch stays on JAX's fast
path and Orbax writes it as is. The model's structure lives beside it, static, in a
`ModelLayout`: the GraphDef plus abstract nnx.States whose Variables carry the types (Param,
BatchStat, EMA codebooks, ...) and logical axis names. Inside the jitted step the layout turns
the dicts back into a module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from audiolm_jax.training.objective import OptimizerGroup

PyTree = Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """step: int32 [], optimizer steps taken.
    params: nested dict of the model's nnx.Param values (f32).
    model_state: nested dict of every other variable (BatchStat, EMA codebooks, usage counters,
      rng streams as uint32 key data) -- updated by the forward pass, carried and checkpointed.
    opt_state: {group name: optax state over that group's params dict}.
    rng: uint32 key data; the keys of step s are fold_in(rng, s).
    nonfinite_streak / nonfinite_total: int32 [], skipped steps in a row / in all.
    halted: bool [], latched once the streak reaches the limit; later steps change nothing.
    """

    step: jax.Array
    params: dict
    model_state: dict
    opt_state: dict[str, Any]
    rng: jax.Array
    nonfinite_streak: jax.Array
    nonfinite_total: jax.Array
    halted: jax.Array


# --- nnx.State <-> dict --------------------------------------------------------------------


def is_key(x: Any) -> bool:
    """A typed PRNG key array (or its ShapeDtypeStruct)."""
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impl(x: Any) -> Any:
    try:
        return jax.random.key_impl(x)
    except TypeError:  # a ShapeDtypeStruct
        return getattr(x.dtype, "_impl", None)


def _key_data(x: Any) -> Any:
    if not is_key(x):
        return x
    if isinstance(x, jax.ShapeDtypeStruct):
        out = jax.eval_shape(jax.random.key_data, x)
        return jax.ShapeDtypeStruct(out.shape, out.dtype, sharding=getattr(x, "sharding", None))
    return jax.random.key_data(x)


def to_pure(state: nnx.State) -> dict:
    """Variables -> their values, PRNG keys -> uint32 key data (checkpointable everywhere)."""
    return jax.tree.map(_key_data, nnx.to_pure_dict(state))


def from_pure(template: nnx.State, pure: Mapping) -> nnx.State:
    """Inverse of `to_pure`: `template`'s Variables (types, metadata) holding `pure`'s values."""
    values = dict(nnx.to_flat_state(nnx.State(pure)))
    out = {}
    for path, var in nnx.to_flat_state(template):
        value = values[path] if path in values else values[tuple(map(str, path))]
        old = var.get_value() if isinstance(var, nnx.Variable) else var
        if is_key(old) and not is_key(value):
            value = jax.random.wrap_key_data(value, impl=_key_impl(old))
        out[path] = var.replace(value) if isinstance(var, nnx.Variable) else value
    return nnx.from_flat_state(out)


# --- the model's static layout ---------------------------------------------------------------


def param_filter(group: OptimizerGroup) -> nnx.filterlib.Filter:
    """The params a group trains: its filter, restricted to nnx.Param."""
    return nnx.All(nnx.Param, group.params)


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """graphdef + abstract params / other-variable States (ShapeDtypeStruct values)."""

    graphdef: nnx.GraphDef
    params: nnx.State
    model_state: nnx.State

    @classmethod
    def of(cls, model: nnx.Module) -> "ModelLayout":
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        abstract = lambda s: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), s)  # noqa: E731
        return cls(graphdef, abstract(params), abstract(rest))

    def split_params(self, params: Mapping, group: OptimizerGroup) -> tuple[dict, nnx.State]:
        """(the group's params as a dict, the other params as an nnx.State)."""
        selected, rest = nnx.split_state(from_pure(self.params, params), param_filter(group), ...)
        return to_pure(selected), rest

    def group_template(self, group: OptimizerGroup) -> nnx.State:
        selected, _ = nnx.split_state(self.params, param_filter(group), ...)
        return selected

    def merge(self, *states: nnx.State) -> nnx.Module:
        # copy=True: fresh Variables in the current trace, so the forward pass may update them.
        return nnx.merge(self.graphdef, *states, copy=True)


def check_disjoint(layout: ModelLayout, groups: Sequence[OptimizerGroup]) -> None:
    """Each param belongs to at most one group; an overlap would apply two updates to it."""
    owner: dict[tuple, str] = {}
    for group in groups:
        paths = [path for path, _ in nnx.to_flat_state(layout.group_template(group))]
        if not paths:
            raise ValueError(
                f"optimizer group {group.name!r} selects no nnx.Param; check its `params` filter."
            )
        for path in paths:
            if path in owner:
                raise ValueError(
                    f"param {'/'.join(map(str, path))} is in optimizer groups {owner[path]!r} "
                    f"and {group.name!r}; make the groups' `params` filters disjoint."
                )
            owner[path] = group.name


def create_state(
    model: nnx.Module,
    groups: Sequence[OptimizerGroup],
    txs: Mapping[str, optax.GradientTransformation],
    rng: jax.Array,
) -> TrainState:
    """A fresh state for `model` (traceable: run it under jit with out_shardings so params are
    born sharded). rng: uint32 key data."""
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    opt_state = {}
    for g in groups:
        selected, _ = nnx.split_state(params, param_filter(g), ...)
        opt_state[g.name] = txs[g.name].init(to_pure(selected))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        step=zero,
        params=to_pure(params),
        model_state=to_pure(model_state),
        opt_state=opt_state,
        rng=rng,
        nonfinite_streak=zero,
        nonfinite_total=zero,
        halted=jnp.zeros((), jnp.bool_),
    )
