"""Optimizers: AdamW with warmup + cosine / rsqrt / constant schedules and global-norm clipping.

Gradient accumulation is not an optax wrapper here: the train step averages microbatch
gradients itself (step.py), so one optimizer step is one train step and schedules count steps.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "rsqrt")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW settings. Scope it in gin per optimizer group: `generator/OptimizerConfig.learning_rate`.

    schedule: "constant", "cosine" (linear warmup, cosine decay to `min_lr_ratio * learning_rate`
      at `decay_steps`, default the run's length) or "rsqrt" (linear warmup, then
      `learning_rate * sqrt(warmup_steps / step)`, as in T5).
    clip_norm: global-norm clipping of the gradient before AdamW; None disables it.
    decay_all: apply weight decay to biases and norm scales too (default: only to >=2-D params).
    """

    learning_rate: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    decay_steps: int | None = None
    min_lr_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    decay_all: bool = False


def make_schedule(config: OptimizerConfig, num_train_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (0-based)."""
    if config.schedule not in SCHEDULES:
        raise ValueError(
            f"OptimizerConfig.schedule={config.schedule!r}; choose one of {SCHEDULES}."
        )
    peak, warmup = config.learning_rate, max(int(config.warmup_steps), 0)
    if config.schedule == "constant":
        if not warmup:
            return optax.constant_schedule(peak)
        return optax.linear_schedule(0.0, peak, warmup)
    if config.schedule == "cosine":
        decay_steps = int(config.decay_steps or num_train_steps)
        if decay_steps <= warmup:
            raise ValueError(
                f"cosine schedule: decay_steps={decay_steps} must exceed warmup_steps={warmup}; "
                "raise OptimizerConfig.decay_steps (or the run's num_train_steps)."
            )
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup,
            decay_steps=decay_steps,
            end_value=peak * config.min_lr_ratio,
        )

    def rsqrt(step):
        step = jnp.asarray(step, jnp.float32)
        ramp = jnp.minimum(1.0, (step + 1.0) / max(warmup, 1))
        decay = jnp.sqrt(max(warmup, 1) / jnp.maximum(step + 1.0, max(warmup, 1)))
        return peak * ramp * decay

    return rsqrt


def _decay_mask(params):
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig, num_train_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (optional) then AdamW on the schedule."""
    adamw = optax.adamw(
        make_schedule(config, num_train_steps),
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        mask=None if config.decay_all else _decay_mask,
    )
    if config.clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
