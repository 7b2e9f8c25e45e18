"""Orbax checkpoints: exact round trip (sharded), fallback past a damaged newest checkpoint,
clear mismatch errors, last-K + best retention, and the read-only params hand-off."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.training.checkpoint import (
    CheckpointConfig,
    CheckpointMismatchError,
    Checkpointer,
    load_model,
    load_params,
)
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.step import StepOptions
from tiny_models import TinyLM, TokenData, make_lm_objective

SYNC = CheckpointConfig(async_save=False)


def program(objective, mesh_sizes=(1, 1, 1)):
    devices = jax.devices()[: int(np.prod(mesh_sizes))]
    return build_program(
        objective,
        make_mesh(MeshConfig(*mesh_sizes), devices),
        axis_rules(),
        StepOptions(compute_dtype=jnp.float32),
        100,
    )


def assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """An LM with dropout (rng streams in its state) on mesh (2, 2, 2), saved at step 7."""
    prog = program(make_lm_objective(dropout=0.1), (2, 2, 2))
    state = dataclasses.replace(prog.init(seed_rng(3)), step=jnp.asarray(7, jnp.int32))
    directory = tmp_path_factory.mktemp("sharded")
    with Checkpointer(directory, CheckpointConfig()) as ckpt:  # async save
        ckpt.save(7, state, data_states=[{"position": 7}], config_text="train.seed = 3")
        ckpt.wait()
    return prog, state, directory


def test_round_trip_restores_values_shardings_rng_and_data_state(sharded):
    prog, state, directory = sharded
    with Checkpointer(directory) as ckpt:
        restored = ckpt.restore(prog.abstract_state)
    assert restored.step == 7 and restored.data_states == [{"position": 7}]
    assert_trees_equal(restored.state, state)
    jax.tree.map(
        lambda x, sharding: np.testing.assert_equal(x.sharding, sharding),
        restored.state,
        prog.state_shardings,
    )
    assert restored.state.params["out"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor"
    )


def test_a_relative_directory_saves_and_restores(sharded, tmp_path, monkeypatch):
    """Users pass relative workdirs (the demo's outputs/demo/runs/...); Orbax wants absolute."""
    prog, state, _ = sharded
    monkeypatch.chdir(tmp_path)
    with Checkpointer("runs/relative/checkpoints", CheckpointConfig()) as ckpt:  # async save
        ckpt.save(7, state, data_states=[{"position": 7}], config_text="")
        ckpt.wait()
    with Checkpointer(os.path.join("runs", "relative", "checkpoints")) as ckpt:
        assert ckpt.restore(prog.abstract_state).step == 7
    assert (tmp_path / "runs" / "relative" / "checkpoints" / "7").is_dir()


def test_load_params_hands_a_frozen_model_to_the_next_stage(sharded):
    _, state, directory = sharded
    pure = load_params(directory)
    np.testing.assert_array_equal(pure["out"]["kernel"], state.params["out"]["kernel"])
    np.testing.assert_array_equal(pure["running_norm"], state.model_state["running_norm"])
    model = load_model(directory, lambda rngs: TinyLM(rngs, dropout=0.1))
    np.testing.assert_array_equal(model.out.kernel[...], state.params["out"]["kernel"])
    assert jax.dtypes.issubdtype(model.dropout.rngs.key[...].dtype, jax.dtypes.prng_key)
    tokens = jnp.asarray(TokenData(4).global_batch(0)["tokens"])
    model.eval()
    assert model(tokens).shape == (4, 8, 32)
    assert not os.path.exists(os.path.join(directory, "7.orbax-checkpoint-tmp"))


def _save_steps(directory, prog, steps, config=SYNC, metrics=None):
    state = prog.init(seed_rng(0))
    with Checkpointer(directory, config) as ckpt:
        for i, step in enumerate(steps):
            ckpt.save(
                step,
                dataclasses.replace(state, step=jnp.asarray(step, jnp.int32)),
                metrics=None if metrics is None else metrics[i],
            )
        ckpt.wait()
    return state


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    prog = program(make_lm_objective())
    _save_steps(tmp_path, prog, [1, 2])
    files = [
        os.path.join(root, f) for root, _, names in os.walk(tmp_path / "2" / "model") for f in names
    ]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)
    # A save killed mid-write leaves a temporary directory; it is never taken for a checkpoint.
    os.makedirs(tmp_path / "3.orbax-checkpoint-tmp-1700000000")
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [1, 2]
        with pytest.warns(UserWarning, match=r"checkpoint .*/2 is unreadable.*falling back"):
            restored = ckpt.restore(prog.abstract_state)
    assert restored.step == 1


def test_mismatch_names_the_parameter_and_the_fix(tmp_path):
    _save_steps(tmp_path, program(make_lm_objective()), [5])
    wider = program(make_lm_objective(mlp=64))
    deeper = program(make_lm_objective(layers=2))
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(
            CheckpointMismatchError,
            match=r"model/params/blocks/0/up/kernel: checkpoint shape \(16, 32\) != "
            r"configured \(16, 64\)(.|\n)*operative_config.gin",
        ):
            ckpt.restore(wider.abstract_state)
        with pytest.raises(
            CheckpointMismatchError, match=r"model/params/blocks/1/.*missing in the checkpoint"
        ):
            ckpt.restore(deeper.abstract_state, step=5)


def test_keeps_the_last_k_and_the_best_by_an_eval_metric(tmp_path):
    config = CheckpointConfig(keep=1, best_metric="eval/loss", best_mode="min", async_save=False)
    losses = [{"eval/loss": v} for v in (3.0, 1.0, 2.0, 4.0)]
    _save_steps(tmp_path, program(make_lm_objective()), [1, 2, 3, 4], config, losses)
    with Checkpointer(tmp_path, config) as ckpt:
        assert ckpt.steps() == [2, 4]
