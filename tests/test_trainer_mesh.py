"""Mesh sizing (incl. multi-slice DCN), the logical-axis rules table, and the optimizers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from audiolm_jax.training import partitioning as pt
from audiolm_jax.training.mesh import MeshConfig, device_grid, make_mesh, mesh_shapes, resolve_sizes
from audiolm_jax.training.optim import OptimizerConfig, make_optimizer, make_schedule


def test_mesh_fills_the_free_axis_and_uses_auto_axes():
    mesh = make_mesh(MeshConfig(data=-1, fsdp=2, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    assert make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1]).size == 1


@pytest.mark.parametrize(
    "sizes, match",
    [
        ((-1, 3, 1), "not divisible"),
        ((2, 2, 1), "8 are available"),
        ((-1, -1, 1), "at most one"),
        ((0, 1, 1), "positive"),
    ],
)
def test_bad_mesh_sizes_name_the_problem(sizes, match):
    with pytest.raises(ValueError, match=match):
        resolve_sizes(sizes, 8)


def test_dcn_sizes_divide_devices_into_slices():
    assert mesh_shapes(MeshConfig(data=-1, fsdp=2, dcn_data=2), 8) == ((2, 2, 1), (2, 1, 1))
    with pytest.raises(ValueError, match="slices"):
        mesh_shapes(MeshConfig(dcn_data=3), 8)


@dataclasses.dataclass(frozen=True)
class FakeTpu:
    id: int
    slice_index: int
    process_index: int = 0
    platform: str = "cpu"
    device_kind: str = "fake"
    coords: tuple = (0, 0, 0)
    core_on_chip: int = 0


def test_multislice_grid_puts_slices_along_the_dcn_axis():
    devices = [FakeTpu(i, slice_index=i // 4) for i in range(8)]
    grid = device_grid(MeshConfig(data=1, fsdp=4, dcn_data=2), devices)
    assert grid.shape == (2, 4, 1)
    assert {d.slice_index for d in grid[0].flat} == {0}
    assert {d.slice_index for d in grid[1].flat} == {1}


def test_rules_follow_t5x_first_free_rule_semantics():
    rules = pt.axis_rules()
    assert pt.logical_to_mesh_axes(("embed", "mlp"), rules) == ["fsdp", "tensor"]
    # batch takes (data, fsdp), so embed in the same array cannot use fsdp again.
    assert pt.logical_to_mesh_axes(("batch", "length", "embed"), rules) == [
        ("data", "fsdp"),
        None,
        None,
    ]
    assert pt.logical_to_mesh_axes(("unknown_name", None), rules) == [None, None]
    fallback = pt.axis_rules([("embed", "fsdp"), ("embed", "tensor")])
    assert pt.logical_to_mesh_axes(("embed", "embed"), fallback) == ["fsdp", "tensor"]


def test_dims_the_mesh_does_not_divide_are_replicated():
    mesh = make_mesh(MeshConfig(2, 2, 2))
    assert pt.spec_for(("embed", "mlp"), (3, 8), mesh, pt.axis_rules()) == P(None, "tensor")
    assert pt.spec_for(None, (3,), mesh, pt.axis_rules()) == P()
    with pytest.raises(ValueError, match="one name"):
        pt.spec_for(("embed",), (4, 4), mesh, pt.axis_rules())


def test_rules_table_rejects_unknown_mesh_axes():
    with pytest.raises(ValueError, match="'model' is not one of"):
        pt.axis_rules([("embed", "model")])


def test_optimizer_state_is_sharded_like_its_params():
    mesh = make_mesh(MeshConfig(2, 2, 2))
    params = {
        "w": jax.ShapeDtypeStruct((4, 8), jnp.float32),
        "b": jax.ShapeDtypeStruct((8,), jnp.float32),
    }
    shardings = {"w": NamedSharding(mesh, P("fsdp", "tensor")), "b": NamedSharding(mesh, P())}
    tx = optax.chain(
        optax.clip_by_global_norm(1.0), optax.masked(optax.adam(1e-3), {"w": True, "b": False})
    )
    out = pt.optimizer_shardings(jax.eval_shape(tx.init, params), params, shardings, mesh)
    adam = out[1].inner_state[0]
    assert adam.mu["w"].spec == P("fsdp", "tensor") and adam.nu["w"].spec == P("fsdp", "tensor")
    assert adam.count.spec == P()


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    lr = make_schedule(
        OptimizerConfig(learning_rate=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1),
        num_train_steps=110,
    )
    assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
    assert float(lr(60)) == pytest.approx(0.55, abs=1e-6)
    assert float(lr(110)) == pytest.approx(0.1)


def test_rsqrt_schedule_decays_as_inverse_square_root():
    lr = make_schedule(
        OptimizerConfig(learning_rate=2.0, schedule="rsqrt", warmup_steps=100), 10**6
    )
    assert float(lr(49)) == pytest.approx(1.0)  # halfway through the linear warmup
    assert float(lr(99)) == pytest.approx(2.0)  # peak at the end of warmup
    assert float(lr(399)) == pytest.approx(1.0)  # 4x the steps: half the rate


def test_schedule_errors_name_the_setting():
    with pytest.raises(ValueError, match="choose one of"):
        make_schedule(OptimizerConfig(schedule="linear"), 10)
    with pytest.raises(ValueError, match="decay_steps"):
        make_schedule(OptimizerConfig(schedule="cosine", warmup_steps=10), 10)


def test_global_norm_clipping_happens_before_adam():
    tx = make_optimizer(OptimizerConfig(learning_rate=1e-3, schedule="constant", clip_norm=1.0), 10)
    grads = {"w": jnp.full((4,), 50.0)}  # global norm 100
    _, state = tx.update(grads, tx.init(grads), grads)
    nu = optax.tree_utils.tree_get(state, "nu")["w"]
    np.testing.assert_allclose(nu, (1 - 0.99) * 0.5**2, rtol=1e-5)  # clipped to norm 1: 0.5 each


def test_weight_decay_skips_biases_and_scales():
    tx = make_optimizer(
        OptimizerConfig(learning_rate=1.0, schedule="constant", weight_decay=0.5, clip_norm=None),
        10,
    )
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["kernel"], 0.5)
    np.testing.assert_allclose(new["bias"], 1.0)
