"""The interface a model plugs into the trainer: an `Objective`.

An objective builds its Flax NNX model, declares one or more optimizer groups (each a loss, a
parameter filter and an optimizer), and optionally an eval step and the cost of a batch.

Multi-group steps (GANs). Groups update in the order declared, each from its own loss and
forward pass: declare the codec's "discriminator" first and its "generator" second, and the
generator's adversarial loss then sees the discriminator already updated on this batch (the
HiFi-GAN/SoundStream recipe). This costs one extra generator forward over a shared pass, but keeps
each group's gradient exact and lets any group be frozen, skipped or clipped on its own. A
group's non-Param state updates (EMA codebooks, usage counters, BatchStat) are kept unless it
sets `keep_state_updates=False` -- set that on the discriminator group so the codec's RVQ
statistics advance once per step, in the generator pass.

Loss functions are `loss_fn(model, batch, rng, step) -> (loss, metrics)`:
  model: the nnx.Module, params cast to the compute dtype (bf16 on accelerators); non-Param
    variables it updates in place (EMA, counters) are carried to the next step.
  batch: dict of global arrays `[batch, ...]` (one microbatch when accumulating).
  rng: a PRNG key for this step, microbatch and group (dropout, quantizer dropout, ...).
  step: int32 scalar, the optimizer step being taken (0-based).
  loss: f32 scalar, a mean over the batch (accumulation averages microbatch means).
  metrics: dict of scalars, averaged like the loss and logged as `<group>/<name>`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import optax
from flax import nnx

from audiolm_jax.training.optim import OptimizerConfig

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch, jax.Array, jax.Array], tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True)
class OptimizerGroup:
    """One optimizer: the Params it trains (`params`, intersected with nnx.Param), its loss and
    its optax optimizer: an OptimizerConfig (built for the run's length), a ready
    GradientTransformation, or None -- then `OptimizerConfig()` is built in the gin scope named
    after the group, so an experiment binds `generator/OptimizerConfig.learning_rate = 2e-4`.
    Params in no group are frozen. Before `start_step` the group is skipped (no forward, no
    update), e.g. a discriminator that joins late."""

    name: str
    loss_fn: LossFn
    params: nnx.filterlib.Filter = nnx.Param
    optimizer: OptimizerConfig | optax.GradientTransformation | None = None
    start_step: int = 0
    keep_state_updates: bool = True


@dataclasses.dataclass(frozen=True)
class StepCost:
    """What one global batch is worth, for throughput and MFU on the progress line.

    tokens: tokens per step (LMs). audio_seconds: seconds of audio per step (codec, w2v-BERT).
    flops: model FLOPs per step (forward + backward, all groups); 0 uses XLA's count.
    """

    tokens: float = 0.0
    audio_seconds: float = 0.0
    flops: float = 0.0


class Objective(abc.ABC):
    """Subclass per model family (LM stage, codec GAN, w2v-BERT)."""

    @abc.abstractmethod
    def create_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """Builds the model; params carry logical axis names (`nnx.with_partitioning`)."""

    @abc.abstractmethod
    def optimizer_groups(self) -> Sequence[OptimizerGroup]:
        """The groups, in update order."""

    def eval_step(self, model: nnx.Module, batch: Batch) -> Metrics:
        """Metrics for one eval batch (model in eval mode, params in compute dtype); averaged over
        the eval iterator and logged as `eval/<name>`. Override to enable evaluation."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no eval_step; "
            "set train.eval_every = 0 or implement eval_step."
        )

    def step_cost(self, batch: Mapping[str, jax.ShapeDtypeStruct]) -> StepCost:
        """Cost of one global batch with these shapes `[batch, ...]`."""
        del batch
        return StepCost()

    def has_eval(self) -> bool:
        return type(self).eval_step is not Objective.eval_step


def check_groups(groups: Sequence[OptimizerGroup]) -> None:
    """Names must be unique and non-empty (they key optimizer state and metrics)."""
    names = [g.name for g in groups]
    if not groups:
        raise ValueError("Objective.optimizer_groups() returned no groups; declare at least one.")
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"optimizer group names {names} must be unique and non-empty.")
    for g in groups:
        if g.start_step < 0:
            raise ValueError(f"optimizer group {g.name!r}: start_step={g.start_step} must be >= 0.")
