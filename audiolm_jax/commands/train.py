"""`audiolm-jax train`: train any model through the trainer core from gin."""
from __future__ import annotations

import argparse

from audiolm_jax import config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a gin experiment (T5X-style flags)",
        description="Train any model (codec, w2v-BERT, a stage LM) through the sharded trainer core. "
                    "Configure with --gin_file=FILE (repeatable; a path or a name under gin/) and "
                    "--gin.NAME=VALUE overrides, e.g. --gin.train.num_steps=1000.")
    p.set_defaults(func=_run_train, takes_gin=True)


def _run_train(args: argparse.Namespace) -> int:
    from audiolm_jax.training import trainer

    config.parse_gin(args.gin_files, args.gin_bindings)
    try:
        result = trainer.train()
    except trainer.NonFiniteError as e:
        # The last good checkpoint is kept; a scheduler must not restart into the same NaNs.
        print(f"audiolm-jax train: stopped: {e}", flush=True)
        return 3
    if result.preempted:
        print(f"audiolm-jax train: preempted at step {result.step}; checkpoint saved, rerun to resume",
              flush=True)
    return 0
