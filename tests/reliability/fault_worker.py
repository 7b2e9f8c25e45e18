"""One trainer run as a subprocess for fault injection: the codec, w2v-BERT or a stage LM, each from
its real gin config, shrunk to a few steps on one CPU device.

    python tests/reliability/fault_worker.py --trainer codec --workdir W --corpus C \
        --steps 8 --save_every 2 --step_file F [--step_sleep 0.2] [--params_out P.npz]

It appends one line per finished step to --step_file (the fault injector waits on it), and when
the run completes writes the final model variables (params and non-Param state, read back from
the last checkpoint) to --params_out as an npz keyed by variable path. The LM reads a synthetic
in-memory batch source with exact resume state (no token cache needed).
Exit codes: 0 finished or preempted (the log says `preempted=True`), 3 non-finite streak.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINERS = ("codec", "w2v_bert", "lm")


def gin_setup(trainer: str, corpus: str, workdir: str, steps: int, save_every: int) -> list:
    """Parses the trainer's gin config with tiny-run overrides; returns train() kwargs."""
    from audiolm_jax import config

    common = [f"train.workdir = '{workdir}'", f"train.num_train_steps = {steps}",
              "train.eval_every = 0", "train.log_every = 1000",
              f"CheckpointConfig.every_steps = {save_every}", "CheckpointConfig.keep = 2",
              "MeshConfig.data = 1"]
    if trainer == "codec":
        config.parse_gin(["experiments/codec_tiny_cpu"], common + [
            f"CORPUS = '{corpus}'", "audio_crop_batches.crop_seconds = 0.2",
            "audio_crop_batches.batch_size = 2", "audio_crop_batches.cache_audio = True",
            # The GAN phase starts mid-run, so a resume crosses into it (or restores into it).
            f"CodecObjective.discriminator_start_step = {steps // 2}",
            "OptimizerConfig.warmup_steps = 0"])
        return []
    if trainer == "w2v_bert":
        config.parse_gin(["experiments/w2v_bert_tiny_cpu"], common + [
            f"audio_crop_batches.root = '{corpus}'", "audio_crop_batches.crop_seconds = 1.0",
            "audio_crop_batches.batch_size = 2", "audio_crop_batches.cache_audio = True",
            "W2vBertConfig.num_contrastive_layers = 1", "W2vBertConfig.num_mlm_layers = 1",
            "OptimizerConfig.warmup_steps = 2"])
        return []
    if trainer == "lm":
        import audiolm_jax.lm.objective  # noqa: F401 -- registers lm.* configurables before the lock
        config.parse_gin(["training/defaults.gin", "models/lm_tiny"], common + [
            "train.compute_dtype = 'float32'", "OptimizerConfig.schedule = 'constant'",
            "OptimizerConfig.learning_rate = 3e-3"])
        return []
    raise ValueError(f"unknown trainer {trainer!r}; use one of {TRAINERS}")


class SyntheticStageBatches:
    """Stage-LM batches (inputs, targets, loss_mask) that are a pure function of (seed, index)."""

    def __init__(self, vocab_size: int, batch_size: int = 2, length: int = 24, seed: int = 0,
                 shard_index: int = 0, shard_count: int = 1):
        self.vocab_size, self.batch_size, self.length, self.seed = vocab_size, batch_size, length, seed
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        seq = rng.integers(3, self.vocab_size, size=(self.batch_size, self.length + 1), dtype=np.int32)
        mask = np.ones((self.batch_size, self.length), np.int32)
        mask[:, : self.length // 3] = 0
        return {"inputs": seq[:, :-1], "targets": seq[:, 1:], "loss_mask": mask}

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


def flat_variables(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """{"a/b/c": array} of a nested mapping of arrays (an nnx.State or dicts)."""
    out = {}
    for key, value in (tree.items() if hasattr(tree, "items") else []):
        name = f"{prefix}/{key}" if prefix else str(key)
        if hasattr(value, "items"):
            out.update(flat_variables(value, name))
        else:
            out[name] = np.asarray(getattr(value, "value", value))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", choices=TRAINERS, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--corpus", default="")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--save_every", type=int, default=2)
    parser.add_argument("--step_file", required=True)
    parser.add_argument("--step_sleep", type=float, default=0.0)
    parser.add_argument("--params_out", default="")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)

    from audiolm_jax.training.checkpoint import load_params
    from audiolm_jax.training.trainer import train

    kwargs = {}
    gin_setup(args.trainer, args.corpus, args.workdir, args.steps, args.save_every)
    if args.trainer == "lm":
        from audiolm_jax.lm.config import TransformerConfig
        from audiolm_jax.lm.objective import StageObjective

        lm_config = TransformerConfig()
        kwargs = {"objective": StageObjective(lm_config),
                  "train_data": lambda shard_index=0, shard_count=1: SyntheticStageBatches(
                      lm_config.vocab_size, shard_index=shard_index, shard_count=shard_count)}

    def on_step(step, metrics):
        with open(args.step_file, "a") as f:
            f.write(f"{step}\n")
        if args.step_sleep:
            time.sleep(args.step_sleep)

    result = train(on_step=on_step, progress=lambda line: print(line, flush=True), **kwargs)
    print(f"finished step={result.step} preempted={result.preempted}", flush=True)
    if args.params_out and not result.preempted:
        variables = flat_variables(load_params(os.path.join(args.workdir, "checkpoints")))
        np.savez(args.params_out, **variables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
