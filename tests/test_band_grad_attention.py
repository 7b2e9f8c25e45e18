"""band_grad_attention equals causal attention with the full T5 bias: values and gradients in
queries, keys, values and the bias table (whose gradient it computes from a band of offsets)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.lm.attention import causal_mask, reference_attention
from audiolm_jax.lm import cudnn_private
from audiolm_jax.lm.band_grad_attention import band_grad_attention
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.relative_bias import RelativePositionBias, band_far_square
from audiolm_jax.lm.sharding_hook import logical_constraint
from audiolm_jax.lm.transformer import Transformer

HEADS, DIM = 3, 16


def bias_module(buckets, width, seed=1):
    module = RelativePositionBias(HEADS, num_buckets=buckets, max_distance=width, rngs=nnx.Rngs(0))
    module.embedding[...] = jax.random.normal(jax.random.key(seed), (HEADS, buckets))
    return nnx.split(module)


def losses(length, buckets, width, block=None):
    """(reference loss, band_grad loss), each f(q, k, v, bias state) = sum(attention * cotangent)."""
    graphdef, _ = bias_module(buckets, width)
    cotangent = jnp.asarray(np.random.default_rng(9).standard_normal((2, length, HEADS, DIM)))
    positions = jnp.arange(length)

    def reference(q, k, v, state):
        bias = nnx.merge(graphdef, state).square(length)[None]
        out = reference_attention(q, k, v, bias, causal_mask(positions, positions))
        return jnp.sum(out.astype(jnp.float32) * cotangent)

    def band_grad(q, k, v, state):
        out = band_grad_attention(q, k, v, *nnx.merge(graphdef, state).split(), block=block)
        return jnp.sum(out.astype(jnp.float32) * cotangent)

    return reference, band_grad


def operands(length, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal((2, length, HEADS, DIM)) * 1.5, dtype)
                 for _ in range(3))


@pytest.mark.parametrize("length,buckets,width,block", [
    (7, 8, 16, None), (50, 8, 16, None), (64, 8, 16, None), (301, 8, 16, None), (301, 8, 16, 4),
    (50, 8, 16, 8), (200, 32, 128, None), (257, 32, 128, 64), (257, 32, 128, 32)])
def test_values_and_gradients_equal_the_full_bias_reference(length, buckets, width, block):
    reference, band_grad = losses(length, buckets, width, block)
    _, state = bias_module(buckets, width)
    args = (*operands(length), state)
    want_loss, want = jax.jit(jax.value_and_grad(reference, argnums=(0, 1, 2, 3)))(*args)
    got_loss, got = jax.jit(jax.value_and_grad(band_grad, argnums=(0, 1, 2, 3)))(*args)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_block_that_does_not_divide_the_band_is_refused():
    graphdef, state = bias_module(8, 16)
    with pytest.raises(ValueError, match="block=5 must divide the band width 16"):
        band_grad_attention(*operands(20), *nnx.merge(graphdef, state).split(), block=5)


def test_far_bucket_gradient_is_the_negative_band_sum_and_not_zero():
    # Offsets >= width all share the last bucket; its gradient comes only from the band sum.
    reference, band_grad = losses(301, 8, 16)
    _, state = bias_module(8, 16)
    q, k, v = operands(301, seed=3)
    want = jax.grad(reference, argnums=3)(q, k, v, state)
    got = jax.grad(band_grad, argnums=3)(q, k, v, state)
    far_want, far_got = (jax.tree.leaves(t)[0][:, -1] for t in (want, got))
    assert float(jnp.min(jnp.abs(far_want))) > 1e-3
    np.testing.assert_allclose(far_got, far_want, rtol=1e-4, atol=1e-5)


def test_band_far_square_equals_the_bucketed_square():
    graphdef, state = bias_module(32, 128)
    module = nnx.merge(graphdef, state)
    for length in (1, 2, 130, 300):
        np.testing.assert_array_equal(band_far_square(*module.split(), length), module.square(length))


def test_bfloat16_close_to_f32():
    reference, band_grad = losses(301, 8, 16)
    _, state = bias_module(8, 16)
    q, k, v = operands(301, seed=5)
    want = jax.grad(reference, argnums=(0, 3))(q, k, v, state)
    got = jax.grad(band_grad, argnums=(0, 3))(*(x.astype(jnp.bfloat16) for x in (q, k, v)), state)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32) - w)) / jnp.max(jnp.abs(w))) < 0.03


CONFIG = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                           dropout_rate=0.0, relative_buckets=8, relative_max_distance=16)


def model_loss_and_grads(attention, tokens, constrain=None):
    kwargs = {} if constrain is None else {"constrain": constrain}
    model = Transformer(dataclasses.replace(CONFIG, attention=attention), rngs=nnx.Rngs(0), **kwargs)
    graphdef, params = nnx.split(model)
    loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("path", ["band_grad", "pallas_bias", "split_lse"])
def test_table_gradient_paths_match_reference_model_and_gradients(path):
    """The Transformer on each path whose T5 table gradient comes from the band (band_grad,
    pallas_bias: the Pallas interpreter here, split_lse: its XLA far kernel) equals the
    full-bias reference."""
    tokens = jnp.asarray(np.random.default_rng(6).integers(0, 195, (2, 41)), jnp.int32)  # odd
    (got_loss, got), (want_loss, want) = (model_loss_and_grads(a, tokens)
                                          for a in (path, "reference"))
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-5 * (1 + float(jnp.max(jnp.abs(w)))))


@pytest.mark.parametrize("path", ["band_grad", "split_lse"])
def test_band_table_model_sharded_over_batch_and_heads_keeps_loss_and_gradients(path):
    # The table's gradient sums over the batch: sharding the batch must not change it.
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = [("batch", "data"), ("heads", "model"), ("mlp", "model"), ("vocab", "model"),
             ("embed", None), ("length", None), ("kv", None)]
    tokens = jnp.asarray(np.random.default_rng(7).integers(0, 195, (2, 40)), jnp.int32)
    plain_loss, plain = model_loss_and_grads(path, tokens)
    loss, grads = model_loss_and_grads(path, tokens, logical_constraint(mesh, rules))
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(plain)):
        np.testing.assert_allclose(g, w, atol=1e-5 * (1 + float(jnp.max(jnp.abs(w)))))


def test_public_api_fallback_gives_the_same_gradients(monkeypatch):
    # A jax whose private cuDNN entry point differs gets jax.nn.dot_product_attention (its
    # residual laid out [b, L, h]); here its XLA implementation stands in for cuDNN.
    from functools import partial
    from audiolm_jax.lm import band_grad_attention as module
    monkeypatch.setattr(module, "_kernel",
                        lambda query: partial(module._public_attention, implementation="xla"))
    reference, band_grad = losses(50, 8, 16)
    _, state = bias_module(8, 16)
    args = (*operands(50, seed=4), state)
    want = jax.grad(reference, argnums=(0, 3))(*args)
    got = jax.grad(band_grad, argnums=(0, 3))(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_private_cudnn_entry_point_has_the_expected_signature():
    # The GPU paths call jax's private cuDNN attention (the bias gradient switched off) and its
    # backward rule (split_lse's merged residuals); if jax changes either, this fails here
    # instead of those paths silently falling back there.
    assert cudnn_private.available()
