"""Stage Transformer (tiny config): relative bias, causality, attention paths, KV cache, dropout, loss."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.lm import (Transformer, TransformerConfig, fast_causal_attention, lm_loss,
                            logical_constraint, reference_attention, relative_position_bucket)
from audiolm_jax.lm.attention import causal_mask, even_length_attention

TINY = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                         dropout_rate=0.1)
LENGTH = 24


def _model(config=TINY, seed=0):
    return Transformer(config, rngs=nnx.Rngs(seed))


# Jitted entry points: eager op-by-op dispatch of even the tiny model costs seconds per call.
forward = nnx.jit(lambda model, tokens: model(tokens))
train_forward = nnx.jit(lambda model, tokens, key: model(tokens, train=True, dropout_rng=key))
loss_eval = nnx.jit(lambda model, batch: lm_loss(model, batch, None, train=False))


def _tokens(batch=2, length=LENGTH, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, TINY.vocab_size)


def _t5_bucket(relative_position, bidirectional, num_buckets=32, max_distance=128):
    """Scalar T5 bucket (Raffel et al., t5 `_relative_position_bucket`), written from its definition."""
    n = -relative_position
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_relative_position_buckets_match_t5(bidirectional):
    relative = np.arange(-600, 600)
    got = np.asarray(relative_position_bucket(jnp.asarray(relative), bidirectional=bidirectional))
    expected = [_t5_bucket(int(r), bidirectional) for r in relative]
    np.testing.assert_array_equal(got, expected)
    if not bidirectional:
        assert got[relative >= 0].max() == 0           # future keys share bucket 0 (masked anyway)
        assert got[relative == -20][0] == 17 and got[relative <= -128].min() == 31


@pytest.mark.parametrize("length", [1, 2, 3, 24, 301])
def test_relative_bias_square_equals_the_gather_with_the_same_gradient(length):
    """The Toeplitz layout used in training (`square`) against a numpy table lookup of T5's
    buckets, and its gradient against the plain gather's (the scatter it replaces)."""
    from audiolm_jax.lm import RelativePositionBias
    bias = RelativePositionBias(4, rngs=nnx.Rngs(1))
    table = np.asarray(bias.embedding[...])
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    buckets = np.vectorize(lambda r: _t5_bucket(int(r), False))(j - i)
    np.testing.assert_array_equal(np.asarray(bias.square(length)), table[:, buckets])
    positions = jnp.arange(length)
    weights = jax.random.normal(jax.random.key(length), (4, length, length))
    grad = lambda f: nnx.grad(lambda m: jnp.sum(weights * f(m)))(bias).embedding[...]
    np.testing.assert_allclose(grad(lambda m: m.square(length)),
                               grad(lambda m: m(positions, positions)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_causal_future_tokens_do_not_change_past_logits(path):
    model = _model(dataclasses.replace(TINY, attention=path))
    tokens = _tokens()
    changed = tokens.at[:, 10:].set((tokens[:, 10:] + 7) % TINY.vocab_size)
    logits, logits_changed = forward(model, tokens), forward(model, changed)
    np.testing.assert_array_equal(logits[:, :10], logits_changed[:, :10])
    assert not np.allclose(logits[:, 10:], logits_changed[:, 10:])


def test_fast_attention_matches_reference_with_gradients():
    keys = jax.random.split(jax.random.key(1), 4)
    q, k, v = (jax.random.normal(key, (2, 16, 4, 16)) for key in keys[:3])
    bias = jax.random.normal(keys[3], (1, 4, 16, 16))
    positions = jnp.arange(16)
    reference = lambda q, k, v, b: reference_attention(q, k, v, b, causal_mask(positions, positions))
    np.testing.assert_allclose(jax.jit(fast_causal_attention)(q, k, v, bias),
                               jax.jit(reference)(q, k, v, bias), atol=1e-5, rtol=1e-5)
    grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2, 3)))
    fast_grads = grad(fast_causal_attention)(q, k, v, bias)
    reference_grads = grad(reference)(q, k, v, bias)
    for fast, ref in zip(fast_grads, reference_grads):
        np.testing.assert_allclose(fast, ref, atol=1e-5, rtol=1e-5)


def test_odd_length_padding_for_cudnn_matches_reference_with_gradients():
    """The pad-to-even path cuDNN takes for stage 2 (2251) and 3 (1801), run here through XLA."""
    length, heads, dim = 7, 2, 8
    q, k, v = (jax.random.normal(jax.random.key(i), (2, length, heads, dim)) for i in range(3))
    bias = jax.random.normal(jax.random.key(3), (1, heads, length, length))
    positions = jnp.arange(length)
    reference = lambda q, k, v, b: reference_attention(q, k, v, b, causal_mask(positions, positions))
    padded = lambda q, k, v, b: even_length_attention(q, k, v, b, None)
    np.testing.assert_allclose(jax.jit(padded)(q, k, v, bias), jax.jit(reference)(q, k, v, bias),
                               atol=1e-5, rtol=1e-5)
    grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2, 3)))
    for got, want in zip(grad(padded)(q, k, v, bias), grad(reference)(q, k, v, bias)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_odd_length_padding_without_bias_matches_reference():
    """bias=None (lm_step_profile's no_bias ablation) is the reference attention with no bias."""
    length, heads, dim = 5, 2, 8
    q, k, v = (jax.random.normal(jax.random.key(i), (1, length, heads, dim)) for i in range(3))
    positions = jnp.arange(length)
    want = reference_attention(q, k, v, jnp.zeros(()), causal_mask(positions, positions))
    unbiased = jax.jit(lambda q, k, v: even_length_attention(q, k, v, None, None))
    np.testing.assert_allclose(unbiased(q, k, v), want, atol=1e-5, rtol=1e-5)


def test_fast_model_matches_reference_model():
    tokens = _tokens()
    fast = forward(_model(dataclasses.replace(TINY, attention="fast")), tokens)
    reference = forward(_model(dataclasses.replace(TINY, attention="reference")), tokens)
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", [{}, {"tie_embeddings": True, "feed_forward": "gelu"}])
def test_kv_cache_decoding_matches_full_forward(variant):
    """Prefill of 9 tokens, then 15 single-token steps inside a jitted lax.scan."""
    model = _model(dataclasses.replace(TINY, **variant))
    tokens = _tokens(length=LENGTH)
    prefill_len, max_len = 9, 32
    graphdef, state = nnx.split(model)

    @jax.jit
    def decode(state, tokens):
        model = nnx.merge(graphdef, state)
        cache = model.init_cache(tokens.shape[0], max_len)
        first, cache = model.decode_step(tokens[:, :prefill_len], cache, 0)

        def step(cache, position):
            token = jax.lax.dynamic_slice_in_dim(tokens, position, 1, axis=1)
            logits, cache = model.decode_step(token, cache, position)
            return cache, logits[:, 0]

        _, rest = jax.lax.scan(step, cache, jnp.arange(prefill_len, tokens.shape[1]))
        return jnp.concatenate([first, jnp.swapaxes(rest, 0, 1)], axis=1)

    np.testing.assert_allclose(decode(state, tokens), forward(model, tokens), atol=1e-5, rtol=1e-5)


def test_dropout_only_when_training():
    model, tokens = _model(), _tokens()
    evaluation = forward(model, tokens)
    eval_with_key = nnx.jit(lambda m, t, k: m(t, train=False, dropout_rng=k))(model, tokens, jax.random.key(3))
    np.testing.assert_array_equal(evaluation, eval_with_key)
    np.testing.assert_array_equal(evaluation, forward(model, tokens))
    train_a = train_forward(model, tokens, jax.random.key(1))
    np.testing.assert_array_equal(train_a, train_forward(model, tokens, jax.random.key(1)))
    assert not np.allclose(train_a, train_forward(model, tokens, jax.random.key(2)))
    assert not np.allclose(train_a, evaluation)
    with pytest.raises(ValueError, match="dropout_rng"):
        model(tokens, train=True)


def _batch(seed=0):
    tokens = _tokens(seed=seed, length=LENGTH + 1)
    mask = jnp.zeros((2, LENGTH)).at[:, 8:20].set(1.0)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}


def test_loss_ignores_masked_positions():
    model, batch = _model(), _batch()
    loss, metrics = loss_eval(model, batch)
    # Targets outside the mask are free to change; the loss must not move.
    other = dict(batch, targets=batch["targets"].at[:, :8].set(3).at[:, 20:].set(5))
    np.testing.assert_allclose(loss_eval(model, other)[0], loss, rtol=1e-6)
    logits = forward(model, batch["inputs"])
    log_probs = jax.nn.log_softmax(logits)
    picked = jnp.take_along_axis(log_probs, batch["targets"][..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(loss, -picked[:, 8:20].mean(), rtol=1e-5)
    correct = (jnp.argmax(logits, -1) == batch["targets"])[:, 8:20].sum()
    assert metrics["target_tokens"] == 24 and metrics["tokens"] == 2 * LENGTH
    np.testing.assert_allclose(metrics["accuracy"], correct / 24)
    assert 0.5 * math.log(TINY.vocab_size) < float(loss) < 3 * math.log(TINY.vocab_size)


def test_remat_gives_the_same_gradients():
    batch = _batch(seed=1)

    def grads(remat):
        model = _model(dataclasses.replace(TINY, remat=remat, num_layers=1))  # one block: faster compile
        loss_fn = lambda m: lm_loss(m, batch, jax.random.key(0), train=True)[0]
        return nnx.jit(nnx.grad(loss_fn))(model)

    plain, rematerialised = grads("none"), grads("full")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 plain, rematerialised)


def test_sharding_hook_under_a_mesh_keeps_logits():
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = [("batch", "data"), ("heads", "model"), ("mlp", "model"), ("vocab", "model"),
             ("embed", None), ("length", None), ("kv", None)]
    tokens = _tokens()
    plain = forward(_model(), tokens)
    sharded_model = Transformer(TINY, rngs=nnx.Rngs(0), constrain=logical_constraint(mesh, rules))
    graphdef, state = nnx.split(sharded_model)
    logits = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, tokens)
    assert logits.sharding.spec == jax.sharding.PartitionSpec("data", None, "model")
    np.testing.assert_allclose(logits, plain, atol=1e-5, rtol=1e-5)
    specs = nnx.get_partition_spec(nnx.state(sharded_model, nnx.Param))
    assert specs["blocks"][0]["attention"]["query"].value == jax.sharding.PartitionSpec("embed", "heads", "kv")
    assert specs["relative_bias"]["embedding"].value == jax.sharding.PartitionSpec("heads", "relpos_buckets")
