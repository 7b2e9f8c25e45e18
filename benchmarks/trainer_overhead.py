"""Trainer overhead: the core's step time over a bare jitted step, on the tiny test LM.

Both loops read the same numpy batches, run the same model, loss and optimizer on one device;
the trainer adds everything it does per step (global-array assembly, metrics, non-finite guard,
preemption and checkpoint checks). Writes results/trainer_overhead.json; `overhead` is the
fraction (trainer / bare - 1) of the fastest of alternating repeats (the least disturbed by other
load on the machine, as timeit advises); `overhead_median` uses the medians.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the tiny model lives with the tests

import jax  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from audiolm_jax.training.checkpoint import CheckpointConfig  # noqa: E402
from audiolm_jax.training.mesh import MeshConfig  # noqa: E402
from audiolm_jax.training.optim import make_optimizer  # noqa: E402
from audiolm_jax.training.trainer import train  # noqa: E402
from tiny_models import TinyLM, TokenData, lm_loss, make_lm_objective  # noqa: E402

BATCH, LENGTH, LAYERS = 32, 64, 2


def data_factory(shard_index: int = 0, shard_count: int = 1) -> TokenData:
    return TokenData(BATCH, 0, shard_index, shard_count, length=LENGTH)


def bare_seconds_per_step(steps: int) -> float:
    """A plain jitted value_and_grad + optax step fed by the same iterator."""
    objective = make_lm_objective(layers=LAYERS)
    group = objective.optimizer_groups()[0]
    tx = make_optimizer(group.optimizer, steps + 1)
    with nnx.use_eager_sharding(False):  # unsharded: one device
        graphdef, params, rest = nnx.split(TinyLM(nnx.Rngs(0), layers=LAYERS), nnx.Param, ...)
    opt_state = tx.init(params)

    def step(params, rest, opt_state, batch):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            loss, _ = lm_loss(model, batch, None, None)
            return loss, nnx.split(model, nnx.Param, ...)[2]

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    data = data_factory()
    device = jax.devices()[0]
    for _ in range(2):  # the second call compiles again, for committed (on-device) arguments
        params, rest, opt_state, loss = step(
            params, rest, opt_state, jax.device_put(next(data), device)
        )
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        params, rest, opt_state, loss = step(
            params, rest, opt_state, jax.device_put(next(data), device)
        )
    jax.block_until_ready((params, loss))
    return (time.perf_counter() - start) / steps


def trainer_seconds_per_step(steps: int) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        result = train(
            objective=make_lm_objective(layers=LAYERS),
            train_data=data_factory,
            num_train_steps=steps + 1,
            workdir=workdir,
            mesh_config=MeshConfig(1, 1, 1),
            devices=jax.devices()[:1],
            checkpoint=CheckpointConfig(every_steps=0),
            compute_dtype="float32",
            log_every=10**9,
            progress=lambda line: None,
        )
    return result.seconds_per_step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "trainer_overhead.json"))
    args = parser.parse_args()
    bare, core = [], []
    for _ in range(args.repeats):  # alternate so load changes hit both alike
        bare.append(bare_seconds_per_step(args.steps))
        core.append(trainer_seconds_per_step(args.steps))
    bare_s, core_s = min(bare), min(core)
    result = {
        "overhead": core_s / bare_s - 1.0,
        "overhead_median": statistics.median(core) / statistics.median(bare) - 1.0,
        "trainer_seconds_per_step": core_s,
        "bare_seconds_per_step": bare_s,
        "trainer_runs": core,
        "bare_runs": bare,
        "steps": args.steps,
        "repeats": args.repeats,
        "model": f"TinyLM layers={LAYERS} embed=16 vocab=32, batch {BATCH}x{LENGTH}, f32, 1 device",
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/trainer_overhead.py " + " ".join(sys.argv[1:]),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "overhead",
                    "overhead_median",
                    "trainer_seconds_per_step",
                    "bare_seconds_per_step",
                )
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
