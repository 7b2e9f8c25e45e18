"""pallas_bias_attention (its Pallas kernels in the interpreter on the CPU) equals causal
attention with the full T5 bias square: values, log-normaliser and gradients in queries, keys,
values, the band and far; tile sizes that leave far tiles, band tiles and padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.lm.attention import causal_mask, reference_attention, reference_logits
from audiolm_jax.lm.pallas_bias_attention import (Blocks, pallas_bias_attention,
                                                  pallas_bias_forward)
from audiolm_jax.lm.relative_bias import band_far_square

HEADS, DIM, WIDTH = 2, 16, 8
SMALL = Blocks(q=16, k=16, backward_q=16, backward_k=16)
# Unequal tiles: a query block spans two key tiles (and the reverse backwards).
UNEQUAL = Blocks(q=32, k=16, backward_q=16, backward_k=32)


def operands(length, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((2, length, HEADS, DIM)) * 1.5, dtype)
               for _ in range(3))
    band = jnp.asarray(rng.standard_normal((HEADS, WIDTH)), jnp.float32)
    far = jnp.asarray(rng.standard_normal(HEADS), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((2, length, HEADS, DIM)), jnp.float32)
    return (q, k, v, band, far), cotangent


def reference(q, k, v, band, far):
    positions = jnp.arange(q.shape[1])
    bias = band_far_square(band, far, q.shape[1])[None]
    return reference_attention(q, k, v, bias, causal_mask(positions, positions))


def value_and_grads(attend, args, cotangent):
    loss = lambda *a: jnp.sum(attend(*a).astype(jnp.float32) * cotangent)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)


def partial_blocks(blocks, block=None):
    return lambda *a: pallas_bias_attention(*a, block=block, blocks=blocks)


@pytest.mark.parametrize("length,blocks", [(70, SMALL), (33, SMALL), (70, UNEQUAL)])
def test_values_and_gradients_equal_the_full_bias_reference(length, blocks):
    args, cotangent = operands(length)
    want_loss, want = value_and_grads(reference, args, cotangent)
    got_loss, got = value_and_grads(partial_blocks(blocks), args, cotangent)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for name, g, w in zip(("query", "key", "value", "band", "far"), got, want):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))), err_msg=name)
    assert float(jnp.min(jnp.abs(want[4]))) > 1e-3        # far's gradient is exercised


def test_log_normaliser_is_the_reference_logsumexp():
    (q, k, v, band, far), _ = operands(70, seed=1)
    out, lse = jax.jit(lambda *a: pallas_bias_forward(*a, blocks=SMALL))(q, k, v, band, far)
    positions = jnp.arange(70)
    logits = reference_logits(q, k, band_far_square(band, far, 70)[None],
                              causal_mask(positions, positions), 1.0 / np.sqrt(DIM))
    assert lse.shape == (2, HEADS, 70) and lse.dtype == jnp.float32
    np.testing.assert_allclose(lse, jax.nn.logsumexp(logits, axis=-1), atol=2e-5, rtol=1e-6)
    np.testing.assert_allclose(out, reference(q, k, v, band, far), atol=2e-5)


def test_bfloat16_close_to_f32():
    args, cotangent = operands(70, seed=2)
    _, want = value_and_grads(reference, args, cotangent)
    half = tuple(x.astype(jnp.bfloat16) for x in args[:3]) + args[3:]
    got = jax.jit(lambda *a: partial_blocks(SMALL)(*a))(*half)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), reference(*args), atol=0.03)
    _, got = value_and_grads(partial_blocks(SMALL), half, cotangent)
    for g, w in zip(got, want):
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32) - w)) / jnp.max(jnp.abs(w))) < 0.03


def test_band_gradient_blocks_and_odd_head_size():
    # `block`: band_bias_gradient's query blocks; head_dim 12 is padded to 16 inside.
    rng = np.random.default_rng(3)
    args, cotangent = operands(40, seed=3)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 40, HEADS, 12)), jnp.float32) for _ in range(3))
    args = (q, k, v) + args[3:]
    cotangent = cotangent[..., :12]
    _, want = value_and_grads(reference, args, cotangent)
    _, got = value_and_grads(partial_blocks(SMALL, block=4), args, cotangent)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_bad_blocks_are_refused():
    args, _ = operands(20)
    with pytest.raises(ValueError, match="block=5 must divide the band width 8"):
        pallas_bias_attention(*args, block=5, blocks=SMALL)
    with pytest.raises(ValueError, match="powers of two >= 16"):
        pallas_bias_attention(*args, blocks=SMALL._replace(k=24))


def test_under_a_mesh_runs_in_shard_map_with_the_same_values_and_gradients(shard_map_calls):
    mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    args, cotangent = operands(40, seed=4)
    _, want = value_and_grads(reference, args, cotangent)
    shard_map_calls.clear()
    with jax.set_mesh(mesh):
        _, got = value_and_grads(partial_blocks(SMALL), args, cotangent)
    # Forward, then backward: batch over "data", heads over "tensor".
    assert shard_map_calls == [jax.sharding.PartitionSpec(("data",), None, ("tensor",), None)] * 2
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))
