"""Causal SEANet encoder/decoder of the tiny SoundStream: frame rate, lengths, causality."""
import jax
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.codec import SoundStream, SoundStreamConfig

HOP = 320
TINY = SoundStreamConfig(channels=4, embedding_dim=16, num_quantizers=4, codebook_size=32)


@pytest.fixture(scope="module")
def model():
    return SoundStream(TINY, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


@nnx.jit
def _embed(model, wav):
    return model.embed(wav)


@nnx.jit
def _decode(model, codes):
    return model.decode(codes)


def test_config_hop_and_frame_rate():
    assert TINY.hop_length == HOP
    assert TINY.frame_rate == 50.0


def test_encoder_frame_rate_and_causality(model):
    rng = np.random.default_rng(0)
    past = rng.normal(size=5 * HOP).astype(np.float32) * 0.1
    wav = np.stack([np.concatenate([past, rng.normal(size=5 * HOP).astype(np.float32)]),
                    np.concatenate([past, rng.normal(size=5 * HOP).astype(np.float32)])])
    emb = np.asarray(_embed(model, wav))
    assert emb.shape == (2, 10, TINY.embedding_dim)  # samples / 320 frames
    # Frames 0..4 only see samples < 5 * 320, which both rows share.
    np.testing.assert_allclose(emb[0, :5], emb[1, :5], rtol=1e-6, atol=1e-6)
    assert np.abs(emb[0, 5:] - emb[1, 5:]).max() > 1e-4


def test_decoder_length_and_causality(model):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, TINY.codebook_size, size=(2, 10, TINY.num_quantizers), dtype=np.int32)
    codes[1, :7] = codes[0, :7]
    wav = np.asarray(_decode(model, codes))
    assert wav.shape == (2, 10 * HOP) and wav.dtype == np.float32
    np.testing.assert_allclose(wav[0, : 7 * HOP], wav[1, : 7 * HOP], rtol=1e-6, atol=1e-6)
    assert np.abs(wav[0, 7 * HOP:] - wav[1, 7 * HOP:]).max() > 0


def test_model_rejects_unpadded_audio(model):
    with pytest.raises(ValueError, match="multiple of 320"):
        model.embed(np.zeros((1, 1000), np.float32))
