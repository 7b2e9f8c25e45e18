"""decode_attention's Pallas kernel (the interpreter on the CPU) equals `cached_attention`:
compute-dtype and int8 caches, key counts off the block size, a causal position inside the
cache, left padding; a model's decode_step and greedy sampling with attention="pallas" equal
the default path; and the kernel lowers for a GPU at the paper's decoding shape."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.lm.attention import LayerCache, cached_attention, causal_mask
from audiolm_jax.lm.decode_attention import (DecodeBlocks, pallas_cached_attention,
                                             pallas_decode_attention)
from audiolm_jax.lm.int8 import quantize_int8

BATCH, HEADS, DIM = 3, 2, 16
SMALL = DecodeBlocks(keys=16)


def make_cache(keys, dtype=jnp.float32, int8=False, seed=0):
    """(query [B, 1, H, D] builder, LayerCache over `keys` slots, bias [1, H, 1, keys])."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape) * 1.5, jnp.float32)  # noqa: E731
    key, value = normal(BATCH, HEADS, keys, DIM), normal(BATCH, HEADS, DIM, keys)
    if int8:
        (key, key_s), (value, value_s) = quantize_int8(key), quantize_int8(
            jnp.swapaxes(value, 2, 3))
        cache = LayerCache(key, jnp.swapaxes(value, 2, 3), key_s, value_s)
    else:
        cache = LayerCache(key.astype(dtype), value.astype(dtype))
    bias = normal(1, HEADS, 1, keys)
    return (lambda queries: normal(BATCH, queries, HEADS, DIM).astype(dtype)), cache, bias


def decode_mask(keys, position, queries, key_start):
    mask = causal_mask(position + jnp.arange(queries), jnp.arange(keys))
    return mask & (jnp.arange(keys)[None, :] >= key_start[:, None])[:, None, None, :]


TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("keys", [37, 64])
def test_kernel_equals_cached_attention(dtype, int8, keys):
    query_of, cache, bias = make_cache(keys, dtype, int8)
    key_start = jnp.asarray([0, 5, 17], jnp.int32)   # every query sees a key
    tol = TOLERANCE[dtype]
    for queries, position in ((1, 30), (1, keys - 1), (3, 17)):
        query = query_of(queries)
        qbias = jnp.broadcast_to(bias, (1, HEADS, queries, keys)) + 0.1 * jnp.arange(queries)[
            None, None, :, None]
        mask = decode_mask(keys, position, queries, key_start)
        want = cached_attention(query, cache, qbias, mask)
        masked = jax.jit(lambda q, c, b, m: pallas_cached_attention(q, c, b, m, blocks=SMALL))
        got = masked(query, cache, qbias, mask)
        assert got.dtype == query.dtype
        np.testing.assert_allclose(np.float32(got), np.float32(want), atol=tol, rtol=tol)
        decode = jax.jit(lambda q, c, b, p, s: pallas_decode_attention(q, c, b, p, s,
                                                                       blocks=SMALL))
        got = decode(query, cache, qbias, jnp.int32(position), key_start)
        np.testing.assert_allclose(np.float32(got), np.float32(want), atol=tol, rtol=tol)


def test_key_limit_reads_a_prefix_and_fully_masked_rows_match():
    query_of, cache, bias = make_cache(50, seed=1)
    query, limit = query_of(1), 40
    short = LayerCache(cache.key[:, :, :limit], cache.value[..., :limit])
    key_start = jnp.asarray([0, 3, 39], jnp.int32)
    mask = decode_mask(limit, 39, 1, key_start)
    want = cached_attention(query, short, bias[..., :limit], mask)
    got = pallas_decode_attention(query, cache, bias[..., :limit], 39, key_start, limit,
                                  blocks=SMALL)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # No visible key: cached_attention's uniform weights (the mask path only).
    nothing = jnp.zeros((BATCH, 1, 1, limit), bool)
    np.testing.assert_allclose(
        pallas_cached_attention(query, short, bias[..., :limit], nothing, blocks=SMALL),
        cached_attention(query, short, bias[..., :limit], nothing), atol=1e-5, rtol=1e-5)


def test_many_queries_fall_back_to_cached_attention():
    query_of, cache, bias = make_cache(32)
    query = query_of(12)
    bias = jnp.broadcast_to(bias, (1, HEADS, 12, 32))
    mask = decode_mask(32, 0, 12, jnp.zeros(BATCH, jnp.int32))
    np.testing.assert_array_equal(pallas_cached_attention(query, cache, bias, mask),
                                  cached_attention(query, cache, bias, mask))


def tiny_model():
    from flax import nnx

    from audiolm_jax.lm.config import TransformerConfig
    from audiolm_jax.lm.transformer import Transformer
    config = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                               dropout_rate=0.1)   # gin models/lm_tiny: head_dim 16
    return Transformer(config, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kv_cache", ["compute", "int8"])
def test_decode_steps_give_the_default_logits(kv_cache):
    from audiolm_jax.generate.sampling import left_pad
    model = tiny_model()
    padded, lengths = left_pad([np.array([1, 7, 9, 40, 12]), np.array([1, 5])])
    key_start = jnp.asarray(padded.shape[1] - lengths)
    caches = {a: model.decode_step(jnp.asarray(padded), model.init_cache(2, 24, kv_cache), 0,
                                   key_start)[1] for a in ("xla", "pallas")}
    step = jax.jit(lambda tokens, cache, position, attention, limit: model.decode_step(
        tokens, cache, position, key_start, key_limit=limit, attention=attention),
        static_argnames=("attention", "limit"))
    for position, token, limit in ((5, 33, None), (6, 34, 20), (7, 35, 20)):
        tokens = jnp.asarray([[token], [token + 1]])
        logits = {}
        for attention in caches:
            logits[attention], caches[attention] = step(tokens, caches[attention],
                                                        jnp.int32(position), attention, limit)
        np.testing.assert_allclose(logits["pallas"], logits["xla"], atol=1e-5, rtol=1e-5)


def test_greedy_sampling_gives_the_default_tokens():
    from audiolm_jax.generate.sampling import DecodeLoop, SamplingConfig, sample
    assert DecodeLoop().attention == "xla"
    model = tiny_model()
    prompts = [np.array([1, 5, 6, 7]), np.array([1, 9])]
    for settings in ({}, {"kv_cache": "int8", "cache_phases": 2}):
        tokens = {a: sample(model, prompts, 14, rng=jax.random.key(0),
                            config=SamplingConfig(0.0), attention=a, **settings)
                  for a in ("xla", "pallas")}
        np.testing.assert_array_equal(tokens["pallas"], tokens["xla"])
    with pytest.raises(ValueError, match="attention"):
        sample(model, prompts, 2, rng=jax.random.key(0), attention="cudnn")


@pytest.mark.skipif(not hasattr(jax.sharding, "AbstractDevice"), reason="no AbstractDevice")
@pytest.mark.parametrize("int8", [False, True])
def test_kernel_lowers_for_a_gpu_at_the_paper_shape(int8):
    """Triton lowering (the kernel's MLIR, not its compilation to PTX) from this CPU host: an
    abstract mesh of one H100 makes the target platform CUDA."""
    from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh
    batch, heads, keys, dim = 64, 16, 2251, 64
    S = jax.ShapeDtypeStruct
    stored = jnp.int8 if int8 else jnp.bfloat16
    scale = S((batch, heads, keys), jnp.float32) if int8 else None
    cache = LayerCache(S((batch, heads, keys, dim), stored), S((batch, heads, dim, keys), stored),
                       scale, scale)
    device = AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=None, platform="cuda")
    with use_abstract_mesh(AbstractMesh((1,), ("x",), abstract_device=device)):
        lowered = jax.jit(pallas_decode_attention, static_argnames="key_limit").trace(
            S((batch, 1, heads, dim), jnp.bfloat16), cache, S((1, heads, 1, 1126), jnp.bfloat16),
            S((), jnp.int32), S((batch,), jnp.int32), key_limit=1126).lower(
            lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "xla.gpu.triton" in text and "grid_x = 64 : i32, grid_y = 16 : i32" in text
    assert "stablehlo.slice" not in text            # the cache is passed whole, not copied
