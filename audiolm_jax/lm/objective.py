"""A stage language model (semantic, coarse or fine) as a trainer `Objective`.

Batches are the stage layouts of `audiolm_jax.lm.layouts`: "inputs", "targets", "loss_mask"
int `[batch, length]`. One optimizer group; throughput counts every processed token and MFU uses
the PaLM-style FLOP count of `flops.flops_per_token`.
"""
from __future__ import annotations

from typing import Mapping

import gin
import jax
from flax import nnx

from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.flops import flops_per_token
from audiolm_jax.lm.loss import lm_loss
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.training.objective import Objective, OptimizerGroup, StepCost
from audiolm_jax.training.optim import OptimizerConfig


@gin.configurable(module="lm")
class StageObjective(Objective):
    """Next-token prediction over the positions a stage predicts."""

    def __init__(self, config: TransformerConfig = gin.REQUIRED,
                 optimizer: OptimizerConfig | None = None):
        """optimizer: None builds the gin-scoped `model/OptimizerConfig()`."""
        self.config = config
        self.optimizer = optimizer

    def create_model(self, rngs: nnx.Rngs) -> Transformer:
        return Transformer(self.config, rngs=rngs)

    def optimizer_groups(self) -> list[OptimizerGroup]:
        def loss_fn(model, batch, rng, step):
            del step
            return lm_loss(model, batch, rng, train=True)
        return [OptimizerGroup("model", loss_fn, optimizer=self.optimizer)]

    def eval_step(self, model: Transformer, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        _, metrics = lm_loss(model, batch, None, train=False)
        return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}

    def step_cost(self, batch: Mapping[str, jax.ShapeDtypeStruct]) -> StepCost:
        batch_size, length = batch["inputs"].shape
        tokens = float(batch_size * length)
        return StepCost(tokens=tokens, flops=tokens * flops_per_token(self.config, length))
