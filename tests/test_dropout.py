"""Hashed inverted dropout (audiolm_jax/dropout.py): rate, mean, determinism, independence,
its gradient, no random-bit generator in the program, and sharded == unsharded masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audiolm_jax.dropout import dropout, keep_probability


def _mask(key, shape=(400, 1000), rate=0.1):
    return np.asarray(dropout(jnp.ones(shape, jnp.float32), rate, key) != 0)


def test_drops_its_rate_and_keeps_the_mean():
    x = jnp.ones((400, 1000), jnp.float32)
    y = dropout(x, 0.1, jax.random.key(3))
    dropped = float(jnp.mean(y == 0))
    # 4e5 draws: the standard error of the rate is 4.7e-4.
    assert abs(dropped - 0.1) < 2.5e-3, dropped
    np.testing.assert_allclose(float(jnp.mean(y)), 1.0, atol=5e-3)
    kept = np.unique(np.asarray(y[y != 0]))
    np.testing.assert_allclose(kept, [1.0 / keep_probability(0.1)], rtol=1e-6)
    assert abs(keep_probability(0.1) - 0.9) < 1e-5


@pytest.mark.parametrize("rate", [0.01, 0.5, 0.9])
def test_other_rates(rate):
    dropped = 1.0 - _mask(jax.random.key(1), rate=rate).mean()
    assert abs(dropped - rate) < 4e-3, (rate, dropped)


def test_deterministic_per_key_and_off_without_one():
    x = jax.random.normal(jax.random.key(0), (8, 64)).astype(jnp.bfloat16)
    a, b = dropout(x, 0.1, jax.random.key(5)), dropout(x, 0.1, jax.random.key(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == jnp.bfloat16
    assert not np.array_equal(a, dropout(x, 0.1, jax.random.key(6)))
    assert dropout(x, 0.1, None) is x and dropout(x, 0.0, jax.random.key(5)) is x
    with pytest.raises(ValueError, match="rate must lie in"):
        dropout(x, 1.0, jax.random.key(5))


def _correlation(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_masks_are_independent_across_keys_rows_and_neighbours():
    """Split keys (one per layer), rows of one array and adjacent elements: correlations within
    5 standard errors of 0 (4e5 pairs: 1.6e-3 each)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    m1, m2 = _mask(k1), _mask(k2)
    bound = 5 / np.sqrt(m1.size)
    assert abs(_correlation(m1, m2)) < bound
    assert abs(_correlation(m1[:-1], m1[1:])) < bound * np.sqrt(m1.size / m1[1:].size)
    assert abs(_correlation(m1[:, :-1], m1[:, 1:])) < bound * 1.01
    # keys differing in one word only (split keys do; rbg keys have four words)
    m3 = _mask(jax.random.key(0, impl="rbg"))
    assert abs(_correlation(m1, m3)) < bound
    # 3-D arrays: the leading axes both enter the hash (no repeated slices)
    cube = _mask(k1, shape=(4, 100, 1000))
    assert abs(_correlation(cube[0], cube[1])) < 5 / np.sqrt(cube[0].size)


def test_legacy_uint32_keys_work():
    dropped = 1.0 - _mask(jax.random.PRNGKey(7)).mean()
    assert abs(dropped - 0.1) < 2.5e-3


def test_gradient_is_the_same_mask_scaled():
    x = jax.random.normal(jax.random.key(1), (32, 48))
    key = jax.random.key(2)
    g = jax.random.normal(jax.random.key(3), (32, 48))
    y, pullback = jax.vjp(lambda a: dropout(a, 0.2, key), x)
    (dx,) = pullback(g)
    keep = np.asarray(y != 0)
    np.testing.assert_allclose(dx, np.where(keep, g / keep_probability(0.2), 0.0), rtol=1e-6)
    # and autodiff of the same function written plainly agrees
    plain = jax.grad(lambda a: jnp.sum(jnp.where(keep, a / keep_probability(0.2), 0.0) * g))(x)
    np.testing.assert_allclose(dx, plain, rtol=1e-6)


def test_program_draws_no_random_bits_and_saves_no_mask():
    """What the module exists for: the step's masks come from iota and integer ops that fuse,
    not from threefry / rbg bit generators; the backward pass keeps no boolean mask."""
    key = jax.random.key(0)

    def loss(x):
        return jnp.sum(dropout(x, 0.1, key) ** 2)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(jnp.ones((16, 32))))
    for primitive in ("random_bits", "threefry2x32", "rng_bit_generator"):
        assert primitive not in jaxpr, primitive
    _, residuals = jax.linearize(lambda x: dropout(x, 0.1, key), jnp.ones((16, 32)))
    saved = [leaf for leaf in jax.tree_util.tree_leaves(residuals) if hasattr(leaf, "dtype")]
    assert not any(leaf.dtype == jnp.bool_ for leaf in saved), [leaf.dtype for leaf in saved]


def test_sharded_mask_equals_unsharded():
    devices = np.array(jax.devices()[:4]).reshape(2, 2)
    mesh = Mesh(devices, ("data", "model"))
    x = jnp.ones((8, 16, 32), jnp.float32)
    key = jax.random.key(4)
    plain = jax.jit(lambda a: dropout(a, 0.1, key))(x)
    sharding = NamedSharding(mesh, PartitionSpec("data", None, "model"))
    sharded = jax.jit(lambda a: dropout(a, 0.1, key), out_shardings=sharding)(
        jax.device_put(x, sharding))
    assert len(sharded.sharding.device_set) == 4
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(plain))
