"""The train and eval steps: pure functions of (state, batch), jitted by program.py.

One train step, for each optimizer group in order: forward + backward over the microbatches
(gradients averaged, non-Param state threaded through them), clip + optax update. The step is
all-or-nothing: a NaN/Inf loss or gradient norm in any group skips every update (the state is
kept, the step counter and data still advance) and is counted; once `max_nonfinite_streak`
steps in a row were skipped the state latches `halted` and the host stops the run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiolm_jax.training.objective import Objective, OptimizerGroup
from audiolm_jax.training.partitioning import BATCH_AXES
from audiolm_jax.training.state import ModelLayout, TrainState, from_pure, to_pure

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """num_microbatches: gradient accumulation (the global batch is split into this many).
    compute_dtype: params are cast to it for the forward pass (bf16 on accelerators; f32 keeps
      CPU tests exact); master params, gradients and optimizer state stay f32.
    max_nonfinite_streak: skipped steps in a row before the state latches `halted`."""

    num_microbatches: int = 1
    compute_dtype: Any = jnp.bfloat16
    max_nonfinite_streak: int = 10


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Floating leaves to `dtype` (the mixed-precision forward); others unchanged."""
    dtype = jnp.dtype(dtype)

    def one(x):
        if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return x.astype(dtype)
        return x

    return jax.tree.map(one, tree)


def split_microbatches(batch: Batch, n: int, mesh: Mesh | None) -> Batch:
    """`[batch, ...]` -> `[n, batch / n, ...]`, microbatch m = examples m, m+n, m+2n, ...

    Interleaving keeps each device's rows on that device: every microbatch is spread over the
    whole (data, fsdp) mesh with no resharding.
    """

    def one(x):
        y = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)
        if mesh is not None:
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, P(None, BATCH_AXES)))
        return y

    return jax.tree.map(one, batch)


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _same_dtypes(new, old):
    return jax.tree.map(lambda a, b: a.astype(b.dtype), new, old)


def _scalar(x):
    return jnp.asarray(x, jnp.float32)


class _Group:
    """A group bound to its optimizer, schedule and gradient shardings for one compiled step."""

    def __init__(
        self,
        group: OptimizerGroup,
        tx: optax.GradientTransformation,
        schedule: Callable | None,
        layout: ModelLayout,
        param_shardings: Any | None,
    ):
        self.group, self.tx, self.schedule = group, tx, schedule
        self.shardings = None
        if param_shardings is not None:  # the group's subset of the params' shardings
            self.shardings = layout.split_params(param_shardings, group)[0]


def make_train_step(
    layout: ModelLayout,
    groups: Sequence[OptimizerGroup],
    txs: Mapping[str, optax.GradientTransformation],
    options: StepOptions,
    *,
    schedules: Mapping[str, Callable] | None = None,
    mesh: Mesh | None = None,
    param_shardings: Any | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds `train_step(state, batch) -> (state, metrics)`; batch leaves are `[batch, ...]`.

    param_shardings: the params' NamedShardings (a dict like `state.params`); gradients are
    pinned to them so FSDP keeps the accumulators sharded.
    """
    n_micro = int(options.num_microbatches)
    if n_micro < 1:
        raise ValueError(f"num_microbatches={n_micro} must be >= 1.")
    bound = [
        _Group(g, txs[g.name], (schedules or {}).get(g.name), layout, param_shardings)
        for g in groups
    ]

    def constrain(grads, g: _Group):
        return (
            grads if g.shardings is None else jax.lax.with_sharding_constraint(grads, g.shardings)
        )

    def group_update(g: _Group, params, model_state, opt_state, batch, key, step):
        selected, rest = layout.split_params(params, g.group)
        rest_compute = cast_floats(rest, options.compute_dtype)
        selected_template = layout.group_template(g.group)

        def loss_of(trainable, variables, microbatch, rng):
            trainable = from_pure(selected_template, cast_floats(trainable, options.compute_dtype))
            model = layout.merge(trainable, rest_compute, from_pure(layout.model_state, variables))
            loss, metrics = g.group.loss_fn(model, microbatch, rng, step)
            _, _, new_variables = nnx.split(model, nnx.Param, ...)
            metrics = {k: _scalar(v) for k, v in metrics.items()}
            return _scalar(loss), (metrics, _same_dtypes(to_pure(new_variables), variables))

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)

        def compute():
            if n_micro == 1:
                (loss, (metrics, new_state)), grads = grad_fn(
                    selected, model_state, batch, jax.random.fold_in(key, 0)
                )
            else:
                micro = split_microbatches(batch, n_micro, mesh)
                first = jax.tree.map(lambda x: x[0], micro)
                metric_shapes = jax.eval_shape(grad_fn, selected, model_state, first, key)[0][1][0]

                def body(carry, xs):
                    variables, grad_sum, loss_sum, metric_sum = carry
                    microbatch, i = xs
                    (loss, (metrics, variables)), grads = grad_fn(
                        selected, variables, microbatch, jax.random.fold_in(key, i)
                    )
                    grad_sum = constrain(jax.tree.map(jnp.add, grad_sum, grads), g)
                    metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
                    return (variables, grad_sum, loss_sum + loss, metric_sum), None

                zeros = (
                    model_state,
                    constrain(jax.tree.map(jnp.zeros_like, selected), g),
                    jnp.zeros((), jnp.float32),
                    jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
                )
                (new_state, grad_sum, loss_sum, metric_sum), _ = jax.lax.scan(
                    body, zeros, (micro, jnp.arange(n_micro))
                )
                grads = jax.tree.map(lambda x: x / n_micro, grad_sum)
                loss = loss_sum / n_micro
                metrics = jax.tree.map(lambda x: x / n_micro, metric_sum)
            grads = constrain(grads, g)
            grad_norm = optax.global_norm(grads)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            updates, new_opt = g.tx.update(grads, opt_state, selected)
            new_selected = optax.apply_updates(selected, updates)
            return new_selected, new_opt, new_state, loss, metrics, grad_norm, finite

        if g.group.start_step > 0:
            shapes = jax.eval_shape(compute)

            def skip():
                zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[3:6])
                return (selected, opt_state, model_state, *zeros, jnp.ones((), jnp.bool_))

            outs = jax.lax.cond(step >= g.group.start_step, compute, skip)
        else:
            outs = compute()
        new_selected, new_opt, new_state, loss, metrics, grad_norm, finite = outs
        merged = nnx.merge_state(
            from_pure(layout.params, params), from_pure(selected_template, new_selected)
        )
        params = jax.tree.map(lambda a, b: a.astype(b.dtype), to_pure(merged), params)
        if not g.group.keep_state_updates:
            new_state = model_state
        name = g.group.name
        out = {f"{name}/loss": loss, f"{name}/grad_norm": grad_norm}
        out.update({f"{name}/{k}": v for k, v in metrics.items()})
        if g.schedule is not None:
            out[f"{name}/learning_rate"] = _scalar(
                g.schedule(jnp.maximum(step - g.group.start_step, 0))
            )
        return params, new_state, new_opt, finite, out

    def train_step(state: TrainState, batch: Batch):
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        params, model_state = state.params, state.model_state
        opt_state = dict(state.opt_state)
        finite = jnp.ones((), jnp.bool_)
        metrics: dict[str, jax.Array] = {}
        for index, g in enumerate(bound):
            params, model_state, opt_state[g.group.name], group_finite, group_metrics = (
                group_update(
                    g,
                    params,
                    model_state,
                    state.opt_state[g.group.name],
                    batch,
                    jax.random.fold_in(step_key, index),
                    state.step,
                )
            )
            finite &= group_finite
            metrics.update(group_metrics)
        apply = finite & ~state.halted
        streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
        total = state.nonfinite_total + (~finite).astype(jnp.int32)
        halted = state.halted | (streak >= options.max_nonfinite_streak)
        new_state = TrainState(
            step=state.step + 1,
            params=_tree_where(apply, params, state.params),
            model_state=_tree_where(apply, model_state, state.model_state),
            opt_state=_tree_where(apply, opt_state, state.opt_state),
            rng=state.rng,
            nonfinite_streak=streak,
            nonfinite_total=total,
            halted=halted,
        )
        metrics.update(
            nonfinite=(~finite).astype(jnp.int32),
            nonfinite_streak=streak,
            nonfinite_total=total,
            halted=halted.astype(jnp.int32),
        )
        return new_state, metrics

    return train_step


def make_eval_step(
    layout: ModelLayout, objective: Objective, options: StepOptions
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """Builds `eval_step(state, batch) -> metrics`: the objective's eval_step on the model in eval
    mode (dropout off, running statistics used) with params in the compute dtype."""

    def eval_step(state: TrainState, batch: Batch):
        model = layout.merge(
            from_pure(layout.params, cast_floats(state.params, options.compute_dtype)),
            from_pure(layout.model_state, state.model_state),
        )
        model.eval()
        return {k: _scalar(v) for k, v in objective.eval_step(model, batch).items()}

    return eval_step
