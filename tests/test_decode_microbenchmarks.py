"""benchmarks/decode_attention_layouts.py and decode_projections.py (tiny sizes, CPU): the cache
layouts and the fused products they time compute the same thing as the model's, and the JSON
has a figure per variant."""
import json
import os
import sys

import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import decode_attention_layouts as layouts  # noqa: E402
import decode_projections as projections  # noqa: E402
from audiolm_jax.lm.attention import LayerCache, causal_mask  # noqa: E402
from audiolm_jax.lm.decode_attention import DecodeBlocks  # noqa: E402


def test_every_cache_layout_attends_like_the_reference():
    rng = np.random.default_rng(0)
    b, h, k, d = 2, 3, 20, 16           # 20 keys, 16 dims: the pallas kernel applies
    keys, values = (rng.standard_normal((b, k, h, d)).astype(np.float32) for _ in range(2))
    query = jnp.asarray(rng.standard_normal((b, 1, h, d)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal((1, h, 1, k)), jnp.float32)
    mask = causal_mask(jnp.array([5]), jnp.arange(k))
    vt = ((0, 2, 1, 3), (0, 2, 3, 1))
    to = {"bkhd": ((0, 1, 2, 3), (0, 1, 2, 3)), "bhkd": ((0, 2, 1, 3), (0, 2, 1, 3)),
          "bhkd_vt": vt, "pallas": vt}
    blocks = DecodeBlocks(keys=16)
    out = {}
    for layout in layouts.LAYOUTS:
        cache = LayerCache(jnp.asarray(keys.transpose(to[layout][0])),
                           jnp.asarray(values.transpose(to[layout][1])))
        cache = layouts.write_cache(layout, cache, query, 5)
        assert cache.key.shape == layouts.cache_shape(layout, b, h, k, d, False)
        assert cache.value.shape == layouts.cache_shape(layout, b, h, k, d, True)
        out[layout] = np.asarray(layouts.attend(layout, query, cache, bias, mask, 5, blocks))
    for layout in layouts.LAYOUTS[1:]:
        np.testing.assert_allclose(out[layout], out["bkhd"], rtol=1e-5, atol=1e-6)
    # int8: the kernel equals cached_attention over the same int8 cache.
    int8 = layouts.make_cache("pallas", lambda shape, dtype: jnp.asarray(
        rng.standard_normal(shape), dtype), b, h, k, d, jnp.float32, "int8")
    int8 = layouts.write_cache("pallas", int8, query, 5)
    np.testing.assert_allclose(layouts.attend("pallas", query, int8, bias, mask, 5, blocks),
                               layouts.attend("bhkd_vt", query, int8, bias, mask, 5, blocks),
                               rtol=1e-5, atol=1e-6)


def test_fused_products_equal_the_separate_ones():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8)), jnp.float32)
    separate = projections.weights(8, 16, 1, jnp.float32, fused=False)[0]
    fused = {"qkv": jnp.concatenate([separate["q"], separate["k"], separate["v"]], axis=1),
             "o": separate["o"], "wi": jnp.concatenate([separate["wi0"], separate["wi1"]], axis=1),
             "wo": separate["wo"]}
    np.testing.assert_allclose(projections.layer(x, fused, True), projections.layer(x, separate, False),
                               rtol=1e-5, atol=1e-5)


def test_both_int8_forms_give_the_dequantised_product():
    """`Int8Weight` dequantises before the product, `ScaleAfter` scales its output: the same
    numbers (f32), both the int8 round trip of the float product."""
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 8)), jnp.float32)
    dense = projections.weights(8, 16, 1, jnp.float32, fused=False)[0]
    before = projections.weights(8, 16, 1, jnp.float32, fused=False, int8="dequant")[0]
    after = projections.weights(8, 16, 1, jnp.float32, fused=False, int8="after")[0]
    assert type(after["q"]).__name__ == "ScaleAfter" and before["q"].stored.dtype == jnp.int8
    np.testing.assert_allclose(projections.layer(x, after, False),
                               projections.layer(x, before, False), rtol=1e-5, atol=1e-5)
    error = np.abs(projections.layer(x, before, False) - projections.layer(x, dense, False)).max()
    assert 0 < error < 0.1, error


def test_tiny_runs_write_a_figure_per_variant(tmp_path):
    out = tmp_path / "layouts.json"
    assert layouts.main(["--batch-sizes", "1", "--keys", "16", "--heads", "2", "--head-dim", "8",
                         "--layers", "1", "--steps", "4", "--repeats", "1", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["us_per_step"]) == {f"{name}_b1" for name in layouts.LAYOUTS}
    assert layouts.main(["--batch-sizes", "1", "--keys", "16", "--heads", "2", "--head-dim", "16",
                         "--layers", "1", "--steps", "4", "--repeats", "1", "--kv-cache", "int8",
                         "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["us_per_step"]) == {"bhkd_vt_b1", "pallas_b1"}
    out = tmp_path / "projections.json"
    assert projections.main(["--d-model", "8", "--d-ff", "16", "--layers", "1", "--steps", "2",
                             "--repeats", "1", "--out", str(out)]) == 0
    variants = json.loads(out.read_text())["variants"]
    assert len(variants) == 9 and all(v["us_per_step"] > 0 for v in variants.values())
