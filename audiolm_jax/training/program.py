"""A run's compiled pieces: the abstract state, its shardings and the jitted init/train/eval.

Shared by the trainer and by ahead-of-time compilation (aot.py), so both see the same program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import gin
import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiolm_jax.training import optim
from audiolm_jax.training.objective import Objective, OptimizerGroup, check_groups
from audiolm_jax.training.partitioning import (
    LogicalRules,
    batch_sharding,
    optimizer_shardings,
    tree_shardings,
)
from audiolm_jax.training.state import (
    ModelLayout,
    TrainState,
    check_disjoint,
    create_state,
    to_pure,
)
from audiolm_jax.training.step import StepOptions, make_eval_step, make_train_step


@dataclasses.dataclass
class Program:
    """mesh, rules: where and how the state lives. layout: the model's static structure.
    abstract_state: TrainState of ShapeDtypeStruct carrying their shardings (restore/AOT target).
    state_shardings: TrainState of NamedSharding. init(rng) -> TrainState (rng: uint32 key data).
    train_step(state, batch) -> (state, metrics), state donated. eval_step(state, batch) -> metrics
    (None when the objective has no eval). A batch is a dict of global `[batch, ...]` arrays."""

    objective: Objective
    mesh: Mesh
    rules: LogicalRules
    options: StepOptions
    groups: Sequence[OptimizerGroup]
    layout: ModelLayout
    abstract_state: TrainState
    state_shardings: TrainState
    batch_sharding: NamedSharding
    init: Callable[[jax.Array], TrainState]
    train_step: Any
    eval_step: Any | None

    def abstract_batch(
        self, shapes: Mapping[str, tuple[tuple[int, ...], Any]]
    ) -> dict[str, jax.ShapeDtypeStruct]:
        """{name: (global shape, dtype)} -> sharded ShapeDtypeStructs."""
        return {
            k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
            for k, (shape, dtype) in shapes.items()
        }


def build_optimizers(
    groups: Sequence[OptimizerGroup], num_train_steps: int
) -> tuple[dict[str, optax.GradientTransformation], dict[str, Callable]]:
    """Per group: the optax transformation and (for OptimizerConfig groups) the schedule."""
    txs, schedules = {}, {}
    for g in groups:
        config = g.optimizer
        if config is None:
            with gin.config_scope(g.name):
                config = optim.OptimizerConfig()
        if isinstance(config, optim.OptimizerConfig):
            # The schedule counts the group's own steps, from its start_step.
            steps = max(num_train_steps - g.start_step, 1)
            txs[g.name] = optim.make_optimizer(config, steps)
            schedules[g.name] = optim.make_schedule(config, steps)
        else:
            txs[g.name] = config
    return txs, schedules


def traced_under(mesh: Mesh, fn):
    """`fn` traced with `mesh` as the abstract mesh: code that must know where it runs (a
    Pallas kernel in `shard_map`, `lm.tpu_attention`) finds it there, ahead-of-time compiles
    for a TPU topology included. Auto axes: GSPMD still places everything else."""
    @functools.wraps(fn)
    def wrapped(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)
    return wrapped


def build_program(
    objective: Objective,
    mesh: Mesh,
    rules: LogicalRules,
    options: StepOptions,
    num_train_steps: int,
) -> Program:
    """Traces the model abstractly (no params allocated) and jits init/train/eval over `mesh`."""
    groups = list(objective.optimizer_groups())
    check_groups(groups)
    txs, schedules = build_optimizers(groups, num_train_steps)

    def init(rng: jax.Array) -> TrainState:
        key = jax.random.wrap_key_data(rng)
        # Eager sharding off: params are placed by init's out_shardings, not at creation.
        with nnx.use_eager_sharding(False):
            model = objective.create_model(nnx.Rngs(jax.random.fold_in(key, 0)))
        return create_state(model, groups, txs, jax.random.key_data(jax.random.fold_in(key, 1)))

    with nnx.use_eager_sharding(False):
        layout = ModelLayout.of(nnx.eval_shape(lambda: objective.create_model(nnx.Rngs(0))))
    check_disjoint(layout, groups)
    abstract = jax.eval_shape(init, jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))))
    replicated = NamedSharding(mesh, P())
    param_shardings = to_pure(tree_shardings(layout.params, mesh, rules))
    opt_shardings = {}
    for g in groups:
        selected = layout.split_params(abstract.params, g)[0]
        opt_shardings[g.name] = optimizer_shardings(
            abstract.opt_state[g.name], selected, layout.split_params(param_shardings, g)[0], mesh
        )
    shardings = TrainState(
        step=replicated,
        params=param_shardings,
        model_state=to_pure(tree_shardings(layout.model_state, mesh, rules)),
        opt_state=opt_shardings,
        rng=replicated,
        nonfinite_streak=replicated,
        nonfinite_total=replicated,
        halted=replicated,
    )
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings
    )
    data = batch_sharding(mesh)

    train_fn = make_train_step(
        layout,
        groups,
        txs,
        options,
        schedules=schedules,
        mesh=mesh,
        param_shardings=param_shardings,
    )
    train_step = jax.jit(
        traced_under(mesh, train_fn),
        in_shardings=(shardings, data),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    eval_step = None
    if objective.has_eval():
        eval_step = jax.jit(
            traced_under(mesh, make_eval_step(layout, objective, options)),
            in_shardings=(shardings, data),
            out_shardings=replicated,
        )
    return Program(
        objective=objective,
        mesh=mesh,
        rules=rules,
        options=options,
        groups=groups,
        layout=layout,
        abstract_state=abstract,
        state_shardings=shardings,
        batch_sharding=data,
        init=jax.jit(init, out_shardings=shardings),
        train_step=train_step,
        eval_step=eval_step,
    )


def seed_rng(seed: int) -> np.ndarray:
    """uint32 key data for `seed` (host array; init() takes it)."""
    return np.asarray(jax.random.key_data(jax.random.key(seed)))
