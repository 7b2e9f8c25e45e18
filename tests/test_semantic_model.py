"""w2v-BERT model: shapes, the 25 Hz rate, per-layer outputs, configs, parameter annotations."""
import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax import config as gin_config
from audiolm_jax.semantic.conformer import ConformerBlock, relative_shift, sinusoid_relative_embedding
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, count_params, num_frames, valid_frames

TINY = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                     num_mlm_layers=2, subsample_channels=8, codebook_groups=2,
                     codebook_entries=16, codevector_dim=16, contrastive_dim=16,
                     num_distractors=10, dropout=0.1)


@pytest.fixture(scope="module")
def model():
    return W2vBert(TINY, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("samples", [16000, 16000 + 639, 640 * 7])
def test_frame_rate_is_25_hz(samples):
    assert num_frames(samples) == samples // 640
    assert num_frames(16000) == 25


def test_forward_shapes_and_layers(model):
    wav = 0.1 * jax.random.normal(jax.random.key(1), (2, 16000 + 300))

    @nnx.jit
    def run(m, w):
        return m(w, return_layers=True), m.mlm_layer_activations(w, 1)

    out, layer1 = run(model, wav)
    t = 25
    assert out.context.shape == out.targets.shape == (2, t, 16)
    assert out.mlm_logits.shape == (2, t, 2, 16)
    assert out.quantized.ids.shape == out.quantized.sampled_ids.shape == (2, t, 2)
    assert out.quantized.ids.dtype == jnp.int32
    # Evaluation mode: the sampled codes are the argmax codes.
    np.testing.assert_array_equal(out.quantized.ids, out.quantized.sampled_ids)
    assert len(out.mlm_layers) == 2 and all(h.shape == (2, t, 32) for h in out.mlm_layers)
    assert not np.allclose(out.mlm_layers[0], out.mlm_layers[1])
    # mlm_layer_activations stops at the requested (1-based) layer and agrees with the full pass.
    np.testing.assert_allclose(layer1, out.mlm_layers[0], atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        model.mlm_layer_activations(wav, 3)


@nnx.jit
def _masked_forward(m, z, mask, key):
    out = m.forward_features(z, mask=mask, rng=key)
    return out.context, out.mlm_logits, out.targets


def test_rng_determinism_and_masked_frames_are_hidden(model):
    frames = 20
    z = jax.random.normal(jax.random.key(5), (1, frames, 32))
    mask = jnp.zeros((1, frames), bool).at[:, 8:14].set(True)
    key = jax.random.key(3)
    a = _masked_forward(model, z, mask, key)
    b = _masked_forward(model, z, mask, key)
    np.testing.assert_array_equal(a[0], b[0])  # deterministic in the key
    other = _masked_forward(model, z, mask, jax.random.key(4))
    assert not np.allclose(a[0], other[0])  # the key drives dropout and the mask vectors
    # Change the features under the mask only: the contrastive and MLM modules cannot tell...
    z2 = z.at[:, 8:14].set(z[:, 8:14] + 3.0)
    c = _masked_forward(model, z2, mask, key)
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])
    # ...but the quantised targets (computed from unmasked features) move there, and only there.
    assert not np.allclose(a[2][:, 8:14], c[2][:, 8:14])
    np.testing.assert_array_equal(a[2][:, :8], c[2][:, :8])
    with pytest.raises(ValueError, match="rng"):
        model.forward_features(z, mask=mask)


def test_valid_frames():
    v = np.asarray(valid_frames(jnp.array([16000, 6400, 700]), 25))
    assert v.sum(-1).tolist() == [25, 10, 1]


def test_bf16_compute_keeps_f32_params():
    cfg = dataclasses.replace(TINY, num_contrastive_layers=1, num_mlm_layers=1)  # faster compile
    m = W2vBert(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(m, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    out = nnx.jit(lambda m, w: m(w, return_layers=True))(m, 0.1 * jnp.ones((1, 6400)))
    assert out.mlm_layers[0].dtype == jnp.bfloat16
    assert out.mlm_logits.dtype == jnp.float32 and np.isfinite(np.asarray(out.mlm_logits)).all()


def test_every_param_has_logical_axes(model):
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(spec_leaves) == len(leaves)
    vocabulary = {None, "embed", "mlp", "heads", "kv", "vocab"}
    named = 0
    for spec, leaf in zip(spec_leaves, leaves):
        assert len(spec) == leaf.ndim
        assert set(spec) <= vocabulary
        named += any(s is not None for s in spec)
    assert named > 0.9 * len(leaves)
    attention = model.mlm_layers[0].attention
    assert attention.query.kernel.get_metadata()["out_sharding"] == ("embed", "heads", "kv")


def test_xl_gin_config_is_about_0p6b_params():
    try:
        gin_config.parse_gin(["models/w2v_bert_xl"], [], finalize=False)
        cfg = W2vBertConfig()
        assert gin.query_parameter("%SEMANTIC_LAYER") == 7
        assert gin.query_parameter("%SEMANTIC_CLUSTERS") == 1024
    finally:
        gin.clear_config()
    assert (cfg.num_contrastive_layers, cfg.num_mlm_layers, cfg.model_dim) == (12, 12, 1024)
    # Tracing all 24 blocks costs ~10 s of CPU; count one block and the rest separately.
    shell = dataclasses.replace(cfg, num_contrastive_layers=0, num_mlm_layers=0)
    rest = count_params(nnx.eval_shape(lambda: W2vBert(shell, rngs=nnx.Rngs(0))))
    block = count_params(nnx.eval_shape(lambda: ConformerBlock(cfg.conformer, rngs=nnx.Rngs(0))))
    total = rest + 24 * block
    assert 0.55e9 < total < 0.65e9, total


def test_tiny_gin_config_builds():
    try:
        gin_config.parse_gin(["models/w2v_bert_tiny"], [], finalize=False)
        cfg = W2vBertConfig()
    finally:
        gin.clear_config()
    assert count_params(nnx.eval_shape(lambda: W2vBert(cfg, rngs=nnx.Rngs(0)))) < 200_000


def test_relative_positions():
    r = np.asarray(sinusoid_relative_embedding(5, 8))
    assert r.shape == (9, 8)
    np.testing.assert_allclose(r[4], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)  # distance 0
    np.testing.assert_allclose(r[:, :4], -r[::-1, :4], atol=1e-6)  # sin part is odd
    # relative_shift puts the score of distance i - j (column length - 1 - (i - j)) at [i, j].
    length = 6
    x = np.random.default_rng(0).normal(size=(2, length, 2 * length - 1)).astype(np.float32)
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    np.testing.assert_array_equal(jax.jit(relative_shift)(x), x[:, i, length - 1 - i + j])
