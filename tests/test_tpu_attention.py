"""The splash (Pallas TPU) causal attention, run in the Pallas interpreter on the CPU: equals
XLA's attention in values and gradients, alone, padded, with a wider value, and in shard_map."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from audiolm_jax.lm import tpu_attention
from audiolm_jax.lm.split_attention import split_bias_attention
from audiolm_jax.lm.tpu_attention import splash_causal_attention


def xla(q, k, v, scale):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    causal = np.tril(np.ones((q.shape[1], k.shape[1]), bool))
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(jnp.where(causal, logits, -1e30)), v)


def operands(batch=2, length=200, heads=4, dim=16, value_dim=16, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch, length, heads)
    return (jnp.asarray(rng.standard_normal(shape + (dim,)), jnp.float32),
            jnp.asarray(rng.standard_normal(shape + (dim,)), jnp.float32),
            jnp.asarray(rng.standard_normal(shape + (value_dim,)), jnp.float32))


splash = jax.jit(lambda q, k, v: splash_causal_attention(q, k, v, 0.25, interpret=True))


@pytest.mark.parametrize("length,value_dim", [(128, 16), (200, 18)])
def test_equals_xla_attention(length, value_dim):
    q, k, v = operands(length=length, value_dim=value_dim)
    np.testing.assert_allclose(splash(q, k, v), xla(q, k, v, 0.25), atol=2e-5, rtol=2e-5)


def test_gradients_equal_xla_attention():
    q, k, v = operands(length=150, seed=1)
    ct = jnp.asarray(np.random.default_rng(2).standard_normal(v.shape), jnp.float32)
    grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2))(q, k, v)  # noqa: E731
    for got, want in zip(grad(splash), grad(lambda *a: xla(*a, 0.25))):
        np.testing.assert_allclose(got, want, atol=1e-3 * float(jnp.max(jnp.abs(want))))


def test_under_a_mesh_runs_in_shard_map_and_equals_xla(shard_map_calls):
    mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
    q, k, v = operands(batch=4, length=130, seed=3)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda q, k, v: splash_causal_attention(q, k, v, 0.25, interpret=True))(q, k, v)
    assert shard_map_calls == [jax.sharding.PartitionSpec(("data",), None, ("tensor",), None)]
    np.testing.assert_allclose(got, xla(q, k, v, 0.25), atol=2e-5, rtol=2e-5)


def test_split_attention_with_the_splash_kernel_for_the_far_part():
    q, k, v = operands(length=300, seed=4)
    band = jnp.asarray(np.random.default_rng(5).standard_normal((4, 128)), jnp.float32)
    far = jnp.asarray([0.3, -0.2, 0.1, 0.0], jnp.float32)
    attend = lambda q, k, v, scale: splash_causal_attention(q, k, v, scale, interpret=True)  # noqa: E731
    got = jax.jit(lambda q, k, v: split_bias_attention(q, k, v, band, far, attend))(q, k, v)
    want = split_bias_attention(q, k, v, band, far)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_target_platform_is_the_abstract_meshs():
    assert tpu_attention.target_platform() == jax.default_backend()
    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,))
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        assert tpu_attention.target_platform() == "cpu"
