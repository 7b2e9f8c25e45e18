"""The jitted train step: sharded == single device, gradient accumulation, the non-finite
guard, multi-group (GAN) updates, non-Param state, eval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.objective import OptimizerGroup
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.state import from_pure
from audiolm_jax.training.step import StepOptions
from tiny_models import GANData, TokenData, make_gan_objective, make_lm_objective

F32 = StepOptions(compute_dtype=jnp.float32)


def program(objective, mesh_sizes=(2, 2, 2), options=F32):
    devices = jax.devices()[: int(np.prod(mesh_sizes))]
    return build_program(
        objective, make_mesh(MeshConfig(*mesh_sizes), devices), axis_rules(), options, 100
    )


def run(prog, data, steps):
    state, history = prog.init(seed_rng(0)), []
    for _ in range(steps):
        batch = {k: jax.device_put(v, prog.batch_sharding) for k, v in next(data).items()}
        state, metrics = prog.train_step(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


@pytest.fixture(scope="module")
def sharded_run():
    """5 steps of the tiny LM on mesh (2, 2, 2), global batch 16."""
    return run(program(make_lm_objective()), TokenData(16), 5)


def test_sharded_mesh_matches_one_device_and_really_shards(sharded_run):
    state8, hist8 = sharded_run
    state1, hist1 = run(program(make_lm_objective(), (1, 1, 1)), TokenData(16), 5)
    loss8 = np.array([h["model/loss"] for h in hist8])
    loss1 = np.array([h["model/loss"] for h in hist1])
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    assert loss8[-1] < loss8[0]

    params = state8.params
    assert params["embed"]["embedding"].sharding.spec == P("tensor", "fsdp")  # (vocab, embed)
    assert params["blocks"][0]["up"]["kernel"].sharding.spec == P("fsdp", "tensor")  # (embed, mlp)
    assert params["norm"]["scale"].sharding.spec == P("fsdp")
    kernel = params["blocks"][0]["up"]["kernel"]
    assert kernel.addressable_shards[0].data.shape == (8, 16)  # [16, 32] over fsdp=2 x tensor=2
    mu = state8.opt_state["model"][1][0].mu  # chain(clip, adamw) -> adam's state
    assert mu["blocks"][0]["up"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert state8.model_state["running_norm"].sharding.spec == P()
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
        state8.params,
        state1.params,
    )


def test_four_microbatches_equal_one_batch(sharded_run):
    whole_state, whole = sharded_run
    accum = program(
        make_lm_objective(), options=StepOptions(num_microbatches=4, compute_dtype=jnp.float32)
    )
    micro_state, micro = run(accum, TokenData(16), 5)
    np.testing.assert_allclose(
        [h["model/loss"] for h in micro], [h["model/loss"] for h in whole], rtol=1e-5
    )
    np.testing.assert_allclose(
        [h["model/grad_norm"] for h in micro], [h["model/grad_norm"] for h in whole], rtol=1e-4
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
        micro_state.params,
        whole_state.params,
    )
    # The forward pass updates non-Param state once per microbatch, threaded through the scan.
    assert int(micro_state.model_state["calls"]) == 5 * 4
    assert int(whole_state.model_state["calls"]) == 5


def test_nonfinite_steps_are_skipped_counted_and_latch_after_a_streak():
    prog = program(
        make_lm_objective(poison_steps=(1, 3, 4, 5)),
        (1, 1, 1),
        StepOptions(compute_dtype=jnp.float32, max_nonfinite_streak=3),
    )
    data = TokenData(8)
    state = prog.init(seed_rng(0))
    snapshots, history = [], []
    for _ in range(8):
        snapshots.append(jax.device_get(state.params))
        state, metrics = prog.train_step(state, {k: jnp.asarray(v) for k, v in next(data).items()})
        history.append(jax.device_get(metrics))
    after = jax.device_get(state.params)
    snapshots.append(after)
    changed = [
        not np.array_equal(snapshots[i]["out"]["kernel"], snapshots[i + 1]["out"]["kernel"])
        for i in range(8)
    ]
    # steps 0 and 2 update; 1 is skipped; 3, 4, 5 are skipped and latch `halted`; 6, 7 change nothing.
    assert changed == [True, False, True, False, False, False, False, False]
    assert [int(h["nonfinite"]) for h in history] == [0, 1, 0, 1, 1, 1, 0, 0]
    assert [int(h["halted"]) for h in history] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert int(state.nonfinite_total) == 4 and int(state.step) == 8


def test_gan_groups_update_in_order_with_a_late_discriminator():
    objective = make_gan_objective(disc_start=2)
    prog = program(objective, (1, 1, 1))
    data = GANData(8)
    state = prog.init(seed_rng(0))
    layout = prog.layout
    for step in range(4):
        before = jax.device_get(state.params)
        batch = {k: jnp.asarray(v) for k, v in next(data).items()}
        state, metrics = prog.train_step(state, batch)
        after = jax.device_get(state.params)
        d_moved = not np.array_equal(
            before["discriminator"]["kernel"], after["discriminator"]["kernel"]
        )
        g_moved = not np.array_equal(
            before["generator"]["lin"]["kernel"], after["generator"]["lin"]["kernel"]
        )
        assert g_moved and d_moved == (step >= 2)
        if step < 2:
            assert float(metrics["discriminator/loss"]) == 0.0
        # The generator's loss was taken against the discriminator already updated this step.
        mixed = jax.tree.map(lambda x: x, after)
        mixed["generator"] = before["generator"]
        model = layout.merge(
            from_pure(layout.params, mixed), from_pure(layout.model_state, state.model_state)
        )
        g_loss = objective.optimizer_groups()[1].loss_fn(model, batch, None, None)[0]
        np.testing.assert_allclose(float(metrics["generator/loss"]), float(g_loss), rtol=1e-5)
    # keep_state_updates=False on the discriminator: the counter advances once per step.
    assert int(state.model_state["generator"]["uses"]) == 4


def test_overlapping_groups_are_rejected():
    gan = make_gan_objective()
    disc, gen = gan.optimizer_groups()

    class Overlapping(type(gan)):
        def optimizer_groups(self):
            return [disc, OptimizerGroup("everything", gen.loss_fn, params=nnx.Param)]

    with pytest.raises(
        ValueError, match="discriminator/bias is in optimizer groups 'discriminator' and"
    ):
        program(Overlapping(), (1, 1, 1))


def test_eval_step_runs_the_model_in_eval_mode():
    prog = program(make_lm_objective(dropout=0.5), (1, 1, 1))
    state = prog.init(seed_rng(0))
    batch = {k: jnp.asarray(v) for k, v in TokenData(8).global_batch(0).items()}
    first, second = prog.eval_step(state, batch), prog.eval_step(state, batch)
    assert set(first) == {"loss", "accuracy"}
    assert float(first["loss"]) == float(second["loss"])  # dropout off: deterministic
