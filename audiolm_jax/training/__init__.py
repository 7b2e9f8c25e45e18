"""T5X-style sharded training for every AudioLM stage (see trainer.py for the gin binding).

Importing this package registers the gin configurables: train, MeshConfig, axis_rules,
CheckpointConfig, OptimizerConfig, distributed.initialize, compile_train_step.
"""

from audiolm_jax.training.aot import AotReport, compile_train_step
from audiolm_jax.training.checkpoint import (
    CheckpointConfig,
    CheckpointMismatchError,
    Checkpointer,
    load_model,
    load_params,
)
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.objective import Objective, OptimizerGroup, StepCost
from audiolm_jax.training.optim import OptimizerConfig, make_optimizer, make_schedule
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.trainer import NonFiniteError, TrainResult, train

__all__ = [
    "AotReport",
    "CheckpointConfig",
    "CheckpointMismatchError",
    "Checkpointer",
    "MeshConfig",
    "NonFiniteError",
    "Objective",
    "OptimizerConfig",
    "OptimizerGroup",
    "StepCost",
    "TrainResult",
    "axis_rules",
    "compile_train_step",
    "load_model",
    "load_params",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "train",
]
