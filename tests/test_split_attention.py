"""split_bias_attention equals causal attention with the full T5 bias, values and gradients."""
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.sharding_hook import logical_constraint
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.lm.attention import causal_mask, reference_attention
from audiolm_jax.lm.relative_bias import relative_position_bucket
from audiolm_jax.lm.split_attention import band_attention, split_bias_attention

HEADS, DIM, WIDTH = 3, 16, 128


def full_bias_attention(q, k, v, table):
    positions = jnp.arange(q.shape[1])
    buckets = relative_position_bucket(positions[None, :] - positions[:, None])
    bias = jnp.take(table, buckets, axis=1)[None]
    return reference_attention(q, k, v, bias, causal_mask(positions, positions))


def split(q, k, v, table):
    band = jnp.take(table, relative_position_bucket(-jnp.arange(WIDTH)), axis=1)
    return split_bias_attention(q, k, v, band, table[:, -1])


def operands(length, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((2, length, HEADS, DIM)) * spread, jnp.float32)
               for _ in range(3))
    table = jnp.asarray(rng.standard_normal((HEADS, 32)), jnp.float32)
    return q, k, v, table


@pytest.mark.parametrize("length", [50, 127, 128, 129, 301])
def test_equals_full_bias_attention(length):
    args = operands(length)
    np.testing.assert_allclose(jax.jit(split)(*args), jax.jit(full_bias_attention)(*args),
                               atol=2e-5, rtol=2e-5)


def test_gradients_equal_in_queries_keys_values_and_table():
    args = operands(300, seed=1)
    cotangent = jnp.asarray(np.random.default_rng(2).standard_normal((2, 300, HEADS, DIM)),
                            jnp.float32)
    grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * cotangent),  # noqa: E731
                                      argnums=(0, 1, 2, 3)))(*args)
    for got, want in zip(grad(split), grad(full_bias_attention)):
        np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.max(jnp.abs(want))), rtol=0)


def test_far_bias_matters():
    # A wrong far constant changes the result (the far part is really merged, not dropped).
    q, k, v, table = operands(300, seed=3, spread=0.3)
    band = jnp.take(table, relative_position_bucket(-jnp.arange(WIDTH)), axis=1)
    attend = jax.jit(split_bias_attention)
    right = attend(q, k, v, band, table[:, -1])
    wrong = attend(q, k, v, band, table[:, -1] + 2.0)
    assert float(jnp.max(jnp.abs(right - wrong))) > 1e-2
    np.testing.assert_allclose(right[:, :WIDTH], wrong[:, :WIDTH])   # only the band reaches them


def test_band_attention_normaliser():
    q, k, v, table = operands(200, seed=4)
    band = jnp.take(table, relative_position_bucket(-jnp.arange(WIDTH)), axis=1)
    _, lse = band_attention(q, k, v, band, 1.0 / np.sqrt(DIM))
    i = 150  # keys 23..150
    logits = (jnp.einsum("bhd,bkhd->bhk", q[:, i], k[:, i - WIDTH + 1:i + 1]) / np.sqrt(DIM)
              + band[:, ::-1][None])
    np.testing.assert_allclose(lse[:, i], jax.nn.logsumexp(logits, axis=-1), rtol=1e-5)


def test_bfloat16_close_to_f32():
    q, k, v, table = operands(301, seed=5)
    want = jax.jit(full_bias_attention)(q, k, v, table)
    got = jax.jit(split)(*(x.astype(jnp.bfloat16) for x in (q, k, v)), table).astype(jnp.float32)
    assert float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want))) < 0.03


def test_split_model_matches_reference_model_and_gradients():
    """The Transformer's "split" path (bias band of 16, sequences of 40) against "reference"."""
    base = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                             dropout_rate=0.0, relative_buckets=8, relative_max_distance=16)
    tokens = jnp.asarray(np.random.default_rng(6).integers(0, 195, (2, 40)), jnp.int32)

    def loss_and_grads(attention):
        model = Transformer(dataclasses.replace(base, attention=attention), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    (split_loss, split_grads), (ref_loss, ref_grads) = map(loss_and_grads, ("split", "reference"))
    np.testing.assert_allclose(split_loss, ref_loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(split_grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(got, want, atol=1e-5 * (1 + float(jnp.max(jnp.abs(want)))))


def test_attention_kernels_benchmark_times_every_variant():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import attention_kernels
    for variant in attention_kernels.VARIANTS:
        row = attention_kernels.time_variant(variant, 1, 150, 2, 16, jnp.float32, steps=1)
        assert row["ms"] > 0, row
        if variant in attention_kernels.BIASED:
            for name in ("relative_error_vs_f32", "d_query_relative_error_vs_f32",
                         "d_table_relative_error_vs_f32"):
                assert row[name] < 1e-5, (name, row)
    # --pieces: the forward alone and the gradients without the table's compute the same loss
    row = attention_kernels.time_variant("band_grad", 1, 150, 2, 16, jnp.float32, steps=1,
                                         pieces=True)
    assert sorted(row["pieces_ms"]) == ["forward", "no_table"] and min(row["pieces_ms"].values()) > 0
    rng = np.random.default_rng(1)
    q, k, v, cotangent = (jnp.asarray(rng.standard_normal((1, 150, 2, 16)), jnp.float32)
                          for _ in range(4))
    args = (q, k, v, jnp.asarray(rng.standard_normal((2, 32)), jnp.float32), cotangent)
    (loss, _), grads = attention_kernels.make_step("band_grad", 150, 2)(*args)
    forward_loss, _ = attention_kernels.make_step("band_grad", 150, 2, piece="forward")(*args)
    (no_table_loss, _), no_table = attention_kernels.make_step("band_grad", 150, 2,
                                                               piece="no_table")(*args)
    assert len(no_table) == 3
    np.testing.assert_allclose([forward_loss, no_table_loss], [loss, loss], rtol=1e-5)
    for got, want in zip(no_table, grads[:3]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_split_model_sharded_over_batch_and_heads_keeps_logits():
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = [("batch", "data"), ("heads", "model"), ("mlp", "model"), ("vocab", "model"),
             ("embed", None), ("length", None), ("kv", None)]
    config = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                               dropout_rate=0.0, relative_buckets=8, relative_max_distance=16,
                               attention="split")
    tokens = jnp.asarray(np.random.default_rng(7).integers(0, 195, (2, 40)), jnp.int32)
    plain = Transformer(config, rngs=nnx.Rngs(0))(tokens)
    sharded = Transformer(config, rngs=nnx.Rngs(0), constrain=logical_constraint(mesh, rules))
    graphdef, state = nnx.split(sharded)
    logits = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, tokens)
    np.testing.assert_allclose(logits, plain, atol=1e-5, rtol=1e-5)


def test_band_logits_are_recomputed_not_kept_for_the_backward_pass():
    # 12 layers of kept band logits ran an H100 out of memory (docs/RESULTS.md): the residuals
    # of the vjp hold the operands and per-position statistics, never a [.., width, 2 width] block.
    q, k, v, table = operands(300)
    _, vjp = jax.vjp(split, q, k, v, table)
    residuals = jax.tree.leaves(vjp)
    assert residuals, "the vjp closure should carry residuals"
    band_block = WIDTH * 2 * WIDTH
    for r in residuals:
        assert not (r.ndim >= 2 and r.shape[-2] * r.shape[-1] == band_block), r.shape
    # Without the checkpoint the band's logits are among the residuals: the check can fail.
    band = jnp.take(table, relative_position_bucket(-jnp.arange(WIDTH)), axis=1)
    _, kept = jax.vjp(lambda q: band_attention(q, k, v, band, 0.25), q)
    assert any(r.ndim >= 2 and r.shape[-2] * r.shape[-1] == band_block
               for r in jax.tree.leaves(kept))
