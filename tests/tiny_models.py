"""Tiny NNX models, objectives and a resumable data iterator for the trainer tests.

Also a command line (`python tests/tiny_models.py --workdir DIR ...`, with JAX_PLATFORMS=cpu and
the device count in XLA_FLAGS set by the caller) that trains the tiny LM and appends one
`step loss` line per step to a file: the subprocess tests kill it, signal it, restart it and run
it as two jax.distributed processes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from audiolm_jax.training import distributed
from audiolm_jax.training.checkpoint import CheckpointConfig
from audiolm_jax.training.mesh import MeshConfig
from audiolm_jax.training.objective import Objective, OptimizerGroup, StepCost
from audiolm_jax.training.optim import OptimizerConfig
from audiolm_jax.training.trainer import train

VOCAB, EMBED, HEADS, MLP, LENGTH = 32, 16, 2, 32, 8


def _partitioned(init, *names):
    return nnx.with_partitioning(init, names)


class RunningNorm(nnx.Variable):
    """Non-Param state updated in the forward pass (like the codec's EMA codebooks)."""


class TinyLM(nnx.Module):
    """One pre-norm Transformer block LM. Input tokens [batch, length] -> logits [batch, length, vocab]."""

    def __init__(self, rngs: nnx.Rngs, dropout: float = 0.0, layers: int = 1, mlp: int = MLP):
        init = nnx.initializers.normal(0.2)
        self.embed = nnx.Embed(
            VOCAB, EMBED, embedding_init=_partitioned(init, "vocab", "embed"), rngs=rngs
        )
        self.blocks = nnx.List([self._block(rngs, init, mlp) for _ in range(layers)])
        self.norm = nnx.LayerNorm(
            EMBED, scale_init=_partitioned(nnx.initializers.ones, "embed"), rngs=rngs
        )
        self.out = nnx.Linear(
            EMBED, VOCAB, kernel_init=_partitioned(init, "embed", "vocab"), rngs=rngs
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.running_norm = RunningNorm(jnp.zeros(()))
        self.calls = RunningNorm(jnp.zeros((), jnp.int32))

    @staticmethod
    def _block(rngs, init, mlp):
        return nnx.Dict(
            # No qkv bias: the key bias gets no gradient (softmax ignores it), and Adam would turn
            # its rounding noise into updates that differ between equivalent runs.
            qkv=nnx.Linear(
                EMBED,
                3 * EMBED,
                use_bias=False,
                kernel_init=_partitioned(init, "embed", "joined_kv"),
                rngs=rngs,
            ),
            proj=nnx.Linear(
                EMBED, EMBED, kernel_init=_partitioned(init, "joined_kv", "embed"), rngs=rngs
            ),
            up=nnx.Linear(EMBED, mlp, kernel_init=_partitioned(init, "embed", "mlp"), rngs=rngs),
            down=nnx.Linear(mlp, EMBED, kernel_init=_partitioned(init, "mlp", "embed"), rngs=rngs),
            ln1=nnx.LayerNorm(EMBED, rngs=rngs),
            ln2=nnx.LayerNorm(EMBED, rngs=rngs),
        )

    def __call__(self, tokens):
        x = self.embed(tokens)
        b, t, _ = x.shape
        mask = jnp.tril(jnp.ones((t, t), bool))
        for blk in self.blocks:
            q, k, v = jnp.split(blk["qkv"](blk["ln1"](x)), 3, axis=-1)
            q, k, v = (a.reshape(b, t, HEADS, EMBED // HEADS) for a in (q, k, v))
            att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(EMBED // HEADS)
            att = jax.nn.softmax(jnp.where(mask, att, -1e9).astype(jnp.float32), -1).astype(x.dtype)
            x = x + blk["proj"](jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, EMBED))
            x = x + self.dropout(blk["down"](jax.nn.gelu(blk["up"](blk["ln2"](x)))))
        x = self.norm(x)
        self.running_norm[...] = 0.9 * self.running_norm[...] + 0.1 * jnp.mean(
            jnp.abs(x.astype(jnp.float32))
        )
        self.calls[...] = self.calls[...] + 1
        return self.out(x).astype(jnp.float32)


def lm_loss(model, batch, rng, step):
    """Next-token cross entropy; tokens [batch, length]."""
    del rng, step
    logits = model(batch["tokens"][:, :-1])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["tokens"][:, 1:])}


def make_lm_objective(
    dropout: float = 0.0,
    layers: int = 1,
    learning_rate: float = 3e-3,
    poison_steps: tuple[int, ...] = (),
    mlp: int = MLP,
):
    """The tiny LM as an Objective. poison_steps: steps whose loss is made NaN (guard tests)."""

    def loss_fn(model, batch, rng, step):
        loss, metrics = lm_loss(model, batch, rng, step)
        if poison_steps:
            bad = jnp.isin(step, jnp.asarray(poison_steps))
            loss = jnp.where(bad, jnp.nan, loss)
        return loss, metrics

    class TinyLMObjective(Objective):
        def create_model(self, rngs):
            return TinyLM(rngs, dropout=dropout, layers=layers, mlp=mlp)

        def optimizer_groups(self):
            return [
                OptimizerGroup(
                    "model",
                    loss_fn,
                    optimizer=OptimizerConfig(
                        learning_rate=learning_rate, schedule="constant", weight_decay=0.01
                    ),
                )
            ]

        def eval_step(self, model, batch):
            loss, metrics = lm_loss(model, batch, None, None)
            return {"loss": loss, **metrics}

        def step_cost(self, batch):
            b, t = batch["tokens"].shape
            n_params = VOCAB * EMBED * 2 + layers * (4 * EMBED * EMBED + 2 * EMBED * mlp)
            return StepCost(tokens=b * (t - 1), flops=6.0 * n_params * b * (t - 1))

    return TinyLMObjective()


def make_gan_objective(disc_start: int = 0, learning_rate: float = 1e-2):
    """A generator/discriminator pair with groups "discriminator" then "generator".

    generator: noise [batch, 4] -> fake [batch, 8]; discriminator: [batch, 8] -> logit [batch].
    The generator keeps a usage counter (non-Param state) bumped on each forward pass.
    """

    class Counter(nnx.Variable):
        pass

    class Generator(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(
                4,
                8,
                kernel_init=_partitioned(nnx.initializers.normal(0.5), "embed", "mlp"),
                rngs=rngs,
            )
            self.uses = Counter(jnp.zeros((), jnp.int32))

        def __call__(self, z):
            self.uses[...] = self.uses[...] + 1
            return jnp.tanh(self.lin(z))

    class GAN(nnx.Module):
        def __init__(self, rngs):
            self.generator = Generator(rngs)
            self.discriminator = nnx.Linear(
                8, 1, kernel_init=_partitioned(nnx.initializers.normal(0.5), "mlp", None), rngs=rngs
            )

    def d_loss(model, batch, rng, step):
        fake = jax.lax.stop_gradient(model.generator(batch["noise"]))
        real_logit = model.discriminator(batch["real"])[:, 0]
        fake_logit = model.discriminator(fake)[:, 0]
        loss = (
            optax.sigmoid_binary_cross_entropy(real_logit, jnp.ones_like(real_logit)).mean()
            + optax.sigmoid_binary_cross_entropy(fake_logit, jnp.zeros_like(fake_logit)).mean()
        )
        return loss, {}

    def g_loss(model, batch, rng, step):
        fake_logit = model.discriminator(model.generator(batch["noise"]))[:, 0]
        return optax.sigmoid_binary_cross_entropy(fake_logit, jnp.ones_like(fake_logit)).mean(), {}

    class GANObjective(Objective):
        def create_model(self, rngs):
            return GAN(rngs)

        def optimizer_groups(self):
            opt = OptimizerConfig(learning_rate=learning_rate, schedule="constant", clip_norm=None)
            return [
                OptimizerGroup(
                    "discriminator",
                    d_loss,
                    params=nnx.PathContains("discriminator"),
                    optimizer=opt,
                    start_step=disc_start,
                    keep_state_updates=False,
                ),
                OptimizerGroup(
                    "generator", g_loss, params=nnx.PathContains("generator"), optimizer=opt
                ),
            ]

    return GANObjective()


class TokenData:
    """Deterministic token batches: batch i is a pure function of (seed, i).

    Yields this shard's rows `[batch / shard_count, length]` of the global batch; `get_state()` /
    `set_state()` ({"position": i}) make resumption exact.
    """

    def __init__(
        self,
        batch_size: int = 8,
        seed: int = 0,
        shard_index: int = 0,
        shard_count: int = 1,
        length: int = LENGTH,
    ):
        if batch_size % shard_count:
            raise ValueError(f"batch_size={batch_size} not divisible by shard_count={shard_count}")
        self.batch_size, self.seed, self.length = batch_size, seed, length
        self.shard_index, self.shard_count = shard_index, shard_count
        self.position = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def global_batch(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, i])
        # A learnable pattern (token t+1 = token t + 1 mod VOCAB) with some noise.
        start = rng.integers(0, VOCAB, size=(self.batch_size, 1))
        tokens = (start + np.arange(self.length)[None]) % VOCAB
        noise = rng.random(tokens.shape) < 0.1
        tokens = np.where(noise, rng.integers(0, VOCAB, size=tokens.shape), tokens)
        return {"tokens": tokens.astype(np.int32)}

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.global_batch(self.position)
        self.position += 1
        rows = self.batch_size // self.shard_count
        return {
            k: v[self.shard_index * rows : (self.shard_index + 1) * rows] for k, v in batch.items()
        }

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


def token_data(batch_size: int = 8, seed: int = 0):
    """A data factory in the trainer's form: `factory(shard_index=, shard_count=) -> iterator`."""

    def factory(shard_index: int = 0, shard_count: int = 1):
        return TokenData(batch_size, seed, shard_index, shard_count)

    return factory


class GANData:
    """noise [batch, 4] and real [batch, 8] samples, resumable like TokenData."""

    def __init__(self, batch_size: int = 8):
        self.batch_size, self.position = batch_size, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([7, self.position])
        self.position += 1
        real = np.sin(np.linspace(0, 3, 8)[None] + rng.random((self.batch_size, 1)) * 3)
        return {
            "noise": rng.normal(size=(self.batch_size, 4)).astype(np.float32),
            "real": real.astype(np.float32),
        }

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])


def main(argv=None) -> int:
    """Trains the tiny LM, appending `step loss(hex)` per step to --loss_file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--loss_file", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--save_every", type=int, default=3)
    parser.add_argument("--step_sleep", type=float, default=0.0)
    parser.add_argument("--mesh", default="2,2,2")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    args = parser.parse_args(argv)
    if args.coordinator:
        distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            cpu_collectives="gloo",
        )

    def on_step(step, metrics):
        with open(args.loss_file, "a") as f:
            f.write(f"{step} {float(metrics['model/loss']).hex()}\n")
        if args.step_sleep:
            time.sleep(args.step_sleep)

    data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
    result = train(
        objective=make_lm_objective(dropout=args.dropout),
        train_data=token_data(8),
        num_train_steps=args.steps,
        workdir=args.workdir,
        mesh_config=MeshConfig(data=data, fsdp=fsdp, tensor=tensor),
        checkpoint=CheckpointConfig(every_steps=args.save_every, keep=2),
        compute_dtype="float32",
        log_every=4,
        on_step=on_step,
    )
    print(f"finished step={result.step} preempted={result.preempted}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
