"""Compiled KV-cached sampling: cache == recomputation, argmax, softmax frequencies, ranges,
left padding, determinism, top-k / top-p."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.generate.sampling import (SamplingConfig, filter_logits, left_pad,
                                          logit_window_width, sample)
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.transformer import Transformer

CONFIG = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                           dropout_rate=0.1)   # gin models/lm_tiny


@pytest.fixture(scope="module")
def model():
    return Transformer(CONFIG, rngs=nnx.Rngs(0))


def _is_greedy_by_recomputation(model, prompt, tokens, allowed=None):
    """True if each of `tokens` is the argmax (inside its allowed [low, high), by default every
    real id) of the full forward pass's logits at the position before it. One causal pass over
    prompt + tokens gives every position's logits as recomputing each prefix would."""
    seq = list(prompt) + list(tokens)
    logits = np.asarray(model(jnp.asarray([seq]))[0, len(prompt) - 1:-1])
    ranges = [(0, CONFIG.vocab_size)] * len(tokens) if allowed is None else allowed
    return [low + int(np.argmax(row[low:high])) for row, (low, high) in zip(logits, ranges)] \
        == list(tokens)


def test_cached_logits_equal_full_recomputation_with_left_padding(model):
    prompt = np.array([1, 7, 9, 40, 12], np.int32)
    padded, lengths = left_pad([prompt, prompt[:2]])
    assert padded[1].tolist() == [0, 0, 0, 1, 7] and lengths.tolist() == [5, 2]
    key_start = jnp.asarray(padded.shape[1] - lengths)
    cache = model.init_cache(2, 8)
    logits, cache = model.decode_step(jnp.asarray(padded), cache, 0, key_start)
    step, cache = model.decode_step(jnp.asarray([[33], [33]]), cache, 5, key_start)
    full_long = model(jnp.asarray([list(prompt) + [33]]))[0]
    full_short = model(jnp.asarray([[1, 7, 33]]))[0]
    np.testing.assert_allclose(logits[0], full_long[:5], atol=1e-4)
    np.testing.assert_allclose(step[0, 0], full_long[5], atol=1e-4)
    np.testing.assert_allclose(logits[1, 3:], full_short[:2], atol=1e-4)   # padding is invisible
    np.testing.assert_allclose(step[1, 0], full_short[2], atol=1e-4)


def test_temperature_zero_is_argmax_and_seeds_are_deterministic(model):
    prompts = [np.array([1, 5, 6, 7]), np.array([1, 9])]
    greedy = sample(model, prompts, 6, rng=jax.random.key(0), config=SamplingConfig(0.0),
                    num_samples=2)
    assert greedy.shape == (4, 6)
    assert greedy[0].tolist() == greedy[1].tolist()
    assert _is_greedy_by_recomputation(model, prompts[0], greedy[0])
    assert _is_greedy_by_recomputation(model, prompts[1], greedy[2])
    assert not _is_greedy_by_recomputation(model, prompts[1], greedy[0])   # the check can fail
    hot = SamplingConfig(1.0)
    a = sample(model, prompts, 6, rng=jax.random.key(3), config=hot, num_samples=2)
    np.testing.assert_array_equal(a, sample(model, prompts, 6, rng=jax.random.key(3), config=hot,
                                            num_samples=2))
    assert not np.array_equal(a, sample(model, prompts, 6, rng=jax.random.key(4), config=hot,
                                        num_samples=2))


def test_sampled_frequencies_match_the_softmax(model):
    """Chi-square goodness of fit of 4000 first tokens against softmax(logits / T) restricted to
    the allowed range; fails if the temperature, the range or the draw were wrong."""
    prompt, low, high, temperature, draws = np.array([1, 50, 60]), 100, 108, 0.7, 4000
    logits = model(jnp.asarray(prompt[None]))[0, -1, low:high] / temperature
    expected = np.asarray(jax.nn.softmax(logits)) * draws
    tokens = sample(model, [prompt], 1, rng=jax.random.key(1), config=SamplingConfig(temperature),
                    allowed=np.array([[low, high]]), num_samples=draws)[:, 0]
    assert tokens.min() >= low and tokens.max() < high
    observed = np.bincount(tokens - low, minlength=high - low)
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    assert chi2 < 24.3, (chi2, observed, expected.round())   # 7 dof, p = 0.001
    wrong = np.asarray(jax.nn.softmax(logits * temperature)) * draws   # temperature ignored
    assert float(np.sum((observed - wrong) ** 2 / wrong)) > 24.3 or np.allclose(wrong, expected, rtol=0.05)


def test_allowed_ranges_are_respected_per_position(model):
    allowed = np.array([[10, 20], [100, 101], [150, 195], [3, 5]] * 2)
    tokens = sample(model, [np.array([1])], 8, rng=jax.random.key(0), config=SamplingConfig(1.5),
                    allowed=allowed, num_samples=16)
    assert np.all((tokens >= allowed[:, 0]) & (tokens < allowed[:, 1]))
    assert np.all(tokens[:, 1] == 100)
    with pytest.raises(ValueError, match="allowed"):
        sample(model, [np.array([1])], 2, rng=jax.random.key(0), allowed=np.array([[5, 5], [1, 2]]))


def test_logit_window_is_the_full_logits_cut_and_greedy_decoding_is_unchanged(model):
    """A step whose ids lie in a narrow range computes only a window of logits: the window
    equals those columns of the full logits, and greedy decoding over ranges that each need a
    different window start (the last one clipped to the padded vocabulary) picks the range's
    argmax of the full recomputation."""
    assert CONFIG.padded_vocab_size == 256                        # 195 up to a multiple of 128
    assert logit_window_width(np.array([[10, 20], [150, 195]]), CONFIG) == 128
    assert logit_window_width(np.array([[0, 195]]), CONFIG) is None   # would not halve it
    prompt = np.array([[1, 7, 9, 40]], np.int32)
    full, _ = model.decode_step(jnp.asarray(prompt), model.init_cache(1, 6), 0)
    window, _ = model.decode_step(jnp.asarray(prompt), model.init_cache(1, 6), 0,
                                  logit_window=(jnp.int32(100), 128))
    assert window.shape == (1, 4, 128)
    np.testing.assert_allclose(window, full[..., 100:228], atol=1e-5)
    np.testing.assert_array_equal(window[..., 95:], -1e9)        # padded ids 195.. stay out
    allowed = np.array([[10, 20], [100, 101], [150, 195], [3, 67], [60, 70]], np.int32)
    greedy = sample(model, [prompt[0]], 5, rng=jax.random.key(0), config=SamplingConfig(0.0),
                    allowed=allowed)[0]
    assert _is_greedy_by_recomputation(model, prompt[0], greedy, allowed)


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.asarray([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    full = (jnp.asarray([0]), jnp.asarray([5]))
    kept = lambda cfg: np.isfinite(np.asarray(filter_logits(logits, cfg, *full)))[0].tolist()
    assert kept(SamplingConfig(1.0, top_k=2)) == [True, True, False, False, False]
    assert kept(SamplingConfig(1.0, top_p=0.6)) == [True, True, False, False, False]
    assert kept(SamplingConfig(1.0, top_p=0.3)) == [True, False, False, False, False]
    assert kept(SamplingConfig(1.0, top_p=0.86)) == [True, True, True, True, False]
    assert kept(SamplingConfig(1.0)) == [True] * 5
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)


def test_eos_stops_rows(model):
    greedy = sample(model, [np.array([1, 4])], 6, rng=jax.random.key(0), config=SamplingConfig(0.0))
    eos = int(greedy[0, 1])
    assert eos not in greedy[0, :1] and _is_greedy_by_recomputation(model, [1, 4], greedy[0])
    tokens = sample(model, [np.array([1, 4])], 6, rng=jax.random.key(0), config=SamplingConfig(0.0),
                    eos_id=eos)
    assert tokens[0].tolist() == greedy[0, :2].tolist() + [0, 0, 0, 0]


def test_weights_cast_before_the_loop_leave_bf16_logits_unchanged():
    """decoding_weights casts the matrices once; each matmul's own cast then does nothing, so
    the logits are bit-identical, and the bias table and norm scales stay float32."""
    from audiolm_jax.generate.sampling import decoding_weights
    config = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                               dtype="bfloat16")
    graphdef, state = nnx.split(Transformer(config, rngs=nnx.Rngs(3)))
    cast = decoding_weights(state, jnp.bfloat16)
    dtypes = {jax.tree_util.keystr(p): x.dtype for p, x in jax.tree_util.tree_leaves_with_path(cast)}
    assert dtypes["['relative_bias']['embedding'].value"] == jnp.float32
    assert dtypes["['final_norm']['scale'].value"] == jnp.float32
    assert dtypes["['blocks'][0]['feed_forward']['wi_0'].value"] == jnp.bfloat16
    tokens = jnp.asarray([[1, 7, 9, 40, 12, 3]])

    def decode(state):
        model = nnx.merge(graphdef, state)
        return model.decode_step(tokens, model.init_cache(1, 8), 0)[0]
    np.testing.assert_array_equal(jax.jit(decode)(state), jax.jit(decode)(cast))


def test_fixed_length_loop_equals_the_eos_loop(model):
    """eos_id=None takes the fori_loop (known trip count); an EOS id that can never be sampled
    takes the while_loop: the same tokens."""
    allowed = np.tile(np.array([[3, 150]], np.int32), (16, 1))
    run = lambda eos: sample(model, [np.array([1, 5, 7]), np.array([1, 9])], 16,
                             rng=jax.random.key(5), config=SamplingConfig(temperature=0.9),
                             allowed=allowed, num_samples=2, eos_id=eos)
    np.testing.assert_array_equal(run(None), run(190))


def test_bucketed_shapes_give_the_same_tokens_and_share_programs(model):
    """Prompt widths and token counts rounded up to buckets: the same tokens as exact shapes
    (greedy and seeded sampling, ranges per position), and nearby lengths reuse one program."""
    from audiolm_jax.generate import sampling

    prompts = [np.array([1, 5, 6, 7, 8]), np.array([1, 9])]
    allowed = np.array([[3, 67], [67, 99], [99, 131], [3, 195], [67, 99]] * 2, np.int32)[:9]
    for config in (SamplingConfig(0.0), SamplingConfig(1.0, top_k=20)):
        exact = sample(model, prompts, 9, rng=jax.random.key(5), config=config, allowed=allowed,
                       num_samples=2)
        bucketed = sample(model, prompts, 9, rng=jax.random.key(5), config=config,
                          allowed=allowed, num_samples=2, shape_buckets=4)
        np.testing.assert_array_equal(bucketed, exact)
    hot = SamplingConfig(0.7)
    sample(model, [np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])], 17, rng=jax.random.key(0), config=hot,
           shape_buckets=4)                                   # width 10, 20 steps
    programs = sampling._sample._cache_size()
    for width, steps in ((9, 18), (10, 19), (10, 20)):        # the same buckets: no compile
        sample(model, [np.arange(1, width + 1)], steps, rng=jax.random.key(0), config=hot,
               shape_buckets=4)
    assert sampling._sample._cache_size() == programs
    sample(model, [np.arange(1, 12)], 17, rng=jax.random.key(0), config=hot, shape_buckets=4)
    assert sampling._sample._cache_size() == programs + 1      # width 11 -> bucket 12


def test_cache_phases_read_less_of_the_cache_and_give_the_same_tokens(model):
    """The loop cut into phases that attend only to the filled cache slots: same logits for a
    key_limit covering the filled part, same tokens for greedy, seeded and EOS sampling."""
    from audiolm_jax.generate.sampling import cache_phase_bounds

    assert cache_phase_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert cache_phase_bounds(2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="cache_phases"):
        cache_phase_bounds(4, 0)
    padded, lengths = left_pad([np.array([1, 7, 9, 40]), np.array([1, 5])])
    key_start = jnp.asarray(padded.shape[1] - lengths)
    full = model.init_cache(2, 12)
    logits, full = model.decode_step(jnp.asarray(padded), full, 0, key_start)
    step_full, _ = model.decode_step(jnp.asarray([[33], [34]]), full, 4, key_start)
    step_cut, _ = model.decode_step(jnp.asarray([[33], [34]]), full, 4, key_start, key_limit=5)
    np.testing.assert_allclose(step_cut, step_full, atol=1e-5)
    with pytest.raises(ValueError, match="key_limit"):
        model.decode_step(jnp.asarray([[33], [34]]), full, 4, key_start, key_limit=13)
    prompts = [np.array([1, 5, 6, 7]), np.array([1, 9])]
    for config, eos in ((SamplingConfig(0.0), None), (SamplingConfig(1.0), None),
                        (SamplingConfig(1.0), 40)):
        one = sample(model, prompts, 11, rng=jax.random.key(2), config=config, num_samples=2,
                     eos_id=eos)
        three = sample(model, prompts, 11, rng=jax.random.key(2), config=config, num_samples=2,
                       eos_id=eos, cache_phases=3)
        np.testing.assert_array_equal(three, one)
        # Unrolled loop bodies (4 steps per iteration; phases of 4, 3 and 4 steps): same tokens.
        unrolled = sample(model, prompts, 11, rng=jax.random.key(2), config=config,
                          num_samples=2, eos_id=eos, cache_phases=3, unroll=4)
        np.testing.assert_array_equal(unrolled, one)


def test_int8_quantizer_round_trip_and_attention_over_the_dequantized_cache():
    from audiolm_jax.lm.attention import (LayerCache, cached_attention, causal_mask,
                                          scales_to_cache_layout, to_cache_layout,
                                          reference_attention)
    from audiolm_jax.lm.int8 import quantize_int8

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 16)).astype(np.float32) * rng.uniform(0.1, 10, (2, 5, 3, 1))
    x[0, 0, 0] = 0.0                                       # an all-zero vector: scale 1, no NaN
    stored, scale = quantize_int8(jnp.asarray(x))
    assert stored.dtype == jnp.int8 and scale.shape == (2, 5, 3) and float(scale[0, 0, 0]) == 1.0
    back = np.asarray(stored, np.float32) * np.asarray(scale)[..., None]
    assert np.all(np.abs(back - x) <= np.asarray(scale)[..., None] / 2 + 1e-6)
    assert np.abs(np.asarray(stored)).max() == 127
    # Scales applied to the logits and the softmax weights == attention over the dequantized
    # cache (f32 query: no rounding of the products' inputs).
    key_q, key_s = quantize_int8(jnp.asarray(x))
    value_q, value_s = quantize_int8(jnp.asarray(x[:, ::-1]))
    query = jnp.asarray(rng.normal(size=(2, 1, 3, 16)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(1, 3, 1, 5)), jnp.float32)
    mask = causal_mask(jnp.array([3]), jnp.arange(5))
    dequant = lambda q, s: q.astype(jnp.float32) * s[..., None]
    exact = reference_attention(query, dequant(key_q, key_s), dequant(value_q, value_s), bias, mask)
    int8 = LayerCache(*to_cache_layout(key_q, value_q), scales_to_cache_layout(key_s),
                      scales_to_cache_layout(value_s))
    np.testing.assert_allclose(cached_attention(query, int8, bias, mask), exact, rtol=1e-5, atol=1e-6)
    # The exact cache in the same layout gives reference_attention too.
    plain = LayerCache(*to_cache_layout(dequant(key_q, key_s), dequant(value_q, value_s)))
    np.testing.assert_allclose(cached_attention(query, plain, bias, mask), exact, rtol=1e-5, atol=1e-6)


def test_int8_kv_cache_stays_close_to_the_exact_cache(model):
    # One attention layer, prefill then a step, exact cache vs int8 (this tiny model's logits
    # hardly depend on attention, so the comparison is made where it shows).
    attention = model.blocks[0].attention
    x = jax.random.normal(jax.random.key(1), (2, 7, CONFIG.d_model))
    bias = model.relative_bias(jnp.arange(7), jnp.arange(9))[None]
    key_start = jnp.array([0, 3])
    out = {}
    for kv in ("compute", "int8"):
        cache = attention.init_cache(2, 9, jnp.float32, kv)
        first, cache = attention.decode(x[:, :6], bias[:, :, :6], cache, jnp.int32(0),
                                        constrain=lambda a, names: a, key_start=key_start)
        step, _ = attention.decode(x[:, 6:], bias[:, :, 6:], cache, jnp.int32(6),
                                   constrain=lambda a, names: a, key_start=key_start)
        out[kv] = np.concatenate([first, step], axis=1)
    error = np.abs(out["int8"] - out["compute"]).max() / out["compute"].std()
    assert 0 < error < 0.05, error                 # int8 rounding: ~1/254 of each vector's max
    # Through `sample`: the int8 cache is what the loop builds (greedy tokens agree here).
    prompts = [np.array([1, 5, 6, 7, 30, 2]), np.array([1, 9, 4])]
    greedy = {kv: sample(model, prompts, 12, rng=jax.random.key(0), config=SamplingConfig(0.0),
                         kv_cache=kv) for kv in ("compute", "int8")}
    np.testing.assert_array_equal(greedy["int8"], greedy["compute"])
    phased = sample(model, prompts, 12, rng=jax.random.key(0), config=SamplingConfig(0.0),
                    kv_cache="int8", cache_phases=3)          # the scales sliced with the cache
    np.testing.assert_array_equal(phased, greedy["int8"])
    assert model.init_cache(2, 10, "int8")[0].key.dtype == jnp.int8
    with pytest.raises(ValueError, match="kv_cache 'fp4' is not one of"):
        sample(model, prompts, 2, rng=jax.random.key(0), kv_cache="fp4")


def test_int8_weight_dequantises_within_half_a_step_per_output_entry():
    from audiolm_jax.lm.int8 import Int8Weight
    rng = np.random.default_rng(4)
    w = rng.normal(size=(16, 3, 5)).astype(np.float32) * rng.uniform(0.01, 10, (1, 3, 5))
    w[:, 0, 0] = 0.0                                        # an all-zero column: scale 1, no NaN
    q = Int8Weight.quantize(jnp.asarray(w))
    assert q.stored.dtype == jnp.int8 and q.stored.shape == (16, 3, 5) and q.scale.shape == (3, 5)
    assert q[...] is q and q.shape == (16, 3, 5)
    back = np.asarray(q.astype(jnp.float32))
    assert np.all(np.abs(back - w) <= np.asarray(q.scale)[None] / 2 + 1e-6)
    assert np.all(np.abs(np.asarray(q.stored, np.int32))[:, 1:].max(axis=0) == 127)
    with pytest.raises(TypeError, match="only w"):
        q[0]


def test_int8_weights_decode_as_the_model_with_dequantised_weights(model):
    """weights="int8" is exactly decoding with every product's matrix replaced by its int8
    round trip (f32 compute: the dequantised product is the same arithmetic), embedding and
    relative bias untouched; and it stays close to the exact model."""
    from audiolm_jax.generate.sampling import decoding_weights
    from audiolm_jax.lm.int8 import Int8Weight
    graphdef, state = nnx.split(model)
    quantised = decoding_weights(state, jnp.float32, "int8")
    kinds = {jax.tree_util.keystr(p): type(x).__name__ for p, x in jax.tree_util.tree_leaves_with_path(
        quantised, is_leaf=lambda x: isinstance(x, Int8Weight))}
    assert kinds["['blocks'][0]['feed_forward']['wi_0'].value"] == "Int8Weight"
    assert kinds["['blocks'][1]['attention']['out'].value"] == "Int8Weight"
    assert kinds["['logits_kernel'].value"] == "Int8Weight"
    assert kinds["['embedding'].value"] == kinds["['relative_bias']['embedding'].value"] != "Int8Weight"
    round_trip = jax.tree.map(lambda x: x.astype(jnp.float32) if isinstance(x, Int8Weight) else x,
                              quantised, is_leaf=lambda x: isinstance(x, Int8Weight))
    dequantised = nnx.merge(graphdef, round_trip)
    prompts = [np.array([1, 5, 6, 7, 30, 2]), np.array([1, 9, 4])]
    run = lambda m, **kw: sample(m, prompts, 12, rng=jax.random.key(0),  # noqa: E731
                                 config=SamplingConfig(0.9), **kw)
    np.testing.assert_array_equal(run(model, weights="int8"), run(dequantised))
    tokens = jnp.asarray([[1, 7, 9, 40, 12, 3]])
    exact, near = model(tokens)[..., :CONFIG.vocab_size], dequantised(tokens)[..., :CONFIG.vocab_size]
    error = float(jnp.abs(near - exact).max() / exact.std())
    assert 0 < error < 0.05, error
    with pytest.raises(ValueError, match="weights 'int4' is not one of"):
        run(model, weights="int4")


def test_min_rows_pads_a_lone_row_and_drops_the_copies(model):
    prompt = [np.array([1, 5, 6, 7])]
    greedy = lambda **kw: sample(model, prompt, 9, rng=jax.random.key(3),
                                 config=SamplingConfig(0.0), **kw)
    alone = greedy()
    for min_rows in (2, 3):
        padded = greedy(min_rows=min_rows)
        assert padded.shape == alone.shape == (1, 9)
        np.testing.assert_array_equal(padded, alone)            # greedy: the same tokens
    sampled = sample(model, prompt, 9, rng=jax.random.key(3), num_samples=2, min_rows=2)
    assert sampled.shape == (2, 9)                                 # already two rows: no copy
    np.testing.assert_array_equal(
        sampled, sample(model, prompt, 9, rng=jax.random.key(3), num_samples=2))
    with pytest.raises(ValueError, match="min_rows=0"):
        greedy(min_rows=0)
