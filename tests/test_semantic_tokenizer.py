"""SemanticTokenizer: fitting from audio, ids at 25 Hz in [0, K), determinism, save/load."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.semantic.tokenizer import SemanticTokenizer, fit_semantic_tokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig

TINY = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                     num_mlm_layers=2, subsample_channels=8, codebook_groups=2,
                     codebook_entries=16, codevector_dim=16, contrastive_dim=16,
                     num_distractors=10, dropout=0.1)
K = 8
SAMPLES = 640 * 20


def _audio(batch: int, seed: int) -> np.ndarray:
    """Chirps, tones and noise bursts: varied enough for k-means to have structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / 16000.0
    f0 = rng.uniform(100, 2000, (batch, 1))
    wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + rng.uniform(0, 2, (batch, 1)) * t))
    wav += rng.uniform(0.001, 0.2, (batch, 1)) * rng.standard_normal((batch, SAMPLES))
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    model = W2vBert(TINY, rngs=nnx.Rngs(0))
    batches = [_audio(4, seed) for seed in range(3)]
    tokenizer, result = fit_semantic_tokenizer(model, 2, batches, K, jax.random.key(0), iters=5)
    return model, tokenizer, result, batches


def test_fit_standardises_and_clusters(fitted):
    _, tokenizer, result, batches = fitted
    assert tokenizer.num_clusters == K and tokenizer.layer == 2
    assert int(result.counts.sum()) == 3 * 4 * 20  # every 25 Hz frame of the data was clustered
    h = np.concatenate([np.asarray(tokenizer.features(b)).reshape(-1, 32) for b in batches])
    np.testing.assert_allclose(h.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(h.std(0), 1.0, atol=1e-3)


def test_tokenize_rate_range_and_determinism(fitted):
    _, tokenizer, _, batches = fitted
    wav = batches[0][0, :SAMPLES - 100]  # not a multiple of 640: the tail frame is dropped
    ids = np.asarray(tokenizer.tokenize(wav))
    assert ids.shape == ((SAMPLES - 100) // 640,) == (19,) and ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < K
    np.testing.assert_array_equal(ids, tokenizer.tokenize(wav))
    batch_ids = np.asarray(tokenizer.tokenize(batches[1]))
    assert batch_ids.shape == (4, 20)
    assert len(np.unique(batch_ids)) > 2
    # Ids are the nearest centroids of the standardised features.
    h = np.asarray(tokenizer.features(batches[1])).reshape(-1, 32)
    c = np.asarray(tokenizer.centroids)
    np.testing.assert_array_equal(batch_ids.reshape(-1), ((h[:, None] - c[None]) ** 2).sum(-1).argmin(1))


def test_padded_frames_get_minus_one(fitted):
    _, tokenizer, _, batches = fitted
    ids = np.asarray(tokenizer.tokenize(batches[0][:2], lengths=[SAMPLES, 640 * 7 + 5]))
    assert (ids[0] >= 0).all()
    assert (ids[1, :7] >= 0).all() and (ids[1, 7:] == -1).all()


def test_tokenizer_is_frozen(fitted):
    model, tokenizer, _, batches = fitted
    before = np.asarray(tokenizer.tokenize(batches[0]))
    layer = model.contrastive_layers[0].ff_in.up
    saved = layer.kernel[...]
    layer.kernel[...] = saved + 1.0
    try:
        np.testing.assert_array_equal(tokenizer.tokenize(batches[0]), before)
    finally:
        layer.kernel[...] = saved


def test_save_load_roundtrip(fitted, tmp_path):
    _, tokenizer, _, batches = fitted
    path = tokenizer.save(tmp_path / "semantic")
    config = json.loads((path / "config.json").read_text())
    assert config["layer"] == 2 and config["num_clusters"] == K and config["model"]["model_dim"] == 32
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "params.npz", "tokenizer.npz"]
    loaded = SemanticTokenizer.load(path)
    np.testing.assert_array_equal(loaded.tokenize(batches[2]), tokenizer.tokenize(batches[2]))
    tokenizer.save(path)  # overwriting an existing checkpoint is allowed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_load_and_construction_errors(fitted, tmp_path):
    model, tokenizer, _, _ = fitted
    with pytest.raises(FileNotFoundError, match="config.json"):
        SemanticTokenizer.load(tmp_path / "nowhere")
    path = tokenizer.save(tmp_path / "bad")
    config = json.loads((path / "config.json").read_text())
    config["model"]["model_dim"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        SemanticTokenizer.load(path)
    with pytest.raises(ValueError, match="layer=9"):
        SemanticTokenizer(model, 9, np.zeros(32), np.ones(32), np.zeros((K, 32)))
    with pytest.raises(ValueError, match="centroids"):
        SemanticTokenizer(model, 1, np.zeros(32), np.ones(32), np.zeros((K, 16)))
    with pytest.raises(ValueError, match="640 samples"):
        tokenizer.tokenize(jnp.zeros(600))
