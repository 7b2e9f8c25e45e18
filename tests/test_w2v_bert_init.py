"""w2v-BERT at initialisation must give the pretraining something to learn from.

Regression tests for the small-world run whose every layer scored ABX ~50%: raw log-mels (around
-8, floor -11.5) made every encoder frame point the same way, so the quantiser used ~2 codes, and
lecun-initialised quantiser logits (std ~1, below the Gumbel noise's 1.28) made the sampled
contrastive targets random. Both held for any audio; these tests use a synthetic signal whose
frames differ (tones gliding across the band, noise bursts, silences).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.semantic.objective import code_usage_perplexity
from audiolm_jax.semantic.quantizer import GumbelQuantizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, normalize_utterance, valid_frames

CFG = W2vBertConfig(model_dim=64, num_heads=4, ff_dim=128, num_contrastive_layers=1,
                    num_mlm_layers=1, subsample_channels=16, codebook_entries=64,
                    codevector_dim=64, contrastive_dim=64, num_distractors=10)


def _varied_audio(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Glides, noise bursts and silences, 160 ms each: every 25 Hz frame differs from the next."""
    rng = np.random.default_rng(seed)
    seg = 2560
    parts = []
    for k in range(int(seconds * 16000) // seg):
        t = np.arange(seg) / 16000
        kind = k % 3
        if kind == 0:
            f0, f1 = rng.uniform(100, 7000, 2)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * t[-1])))
        elif kind == 1:
            x = rng.standard_normal(seg) * rng.uniform(0.05, 0.5)
        else:
            x = np.zeros(seg)
        parts.append(0.3 * x)
    return np.concatenate(parts).astype(np.float32)


def _frame_cosine(z: np.ndarray) -> float:
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)
    cos = u @ u.T
    return float(cos[~np.eye(len(u), dtype=bool)].mean())


def test_random_init_features_differ_between_frames_and_use_many_codes():
    model = W2vBert(CFG, rngs=nnx.Rngs(0))
    wav = jnp.asarray(np.stack([_varied_audio(seed=s) for s in range(2)]))
    z = model.encode(wav)
    # Raw log-mels gave a mean cosine of ~0.95 between any two frames (and ~2 codes).
    assert _frame_cosine(np.asarray(z[0])) < 0.8
    ids = model.quantizer(z).ids
    assert float(code_usage_perplexity(ids, None, CFG.codebook_entries)) > 8


def test_quantizer_logits_dominate_gumbel_noise_at_init():
    q = GumbelQuantizer(256, 1, 320, 256, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(1), (4, 100, 256))  # LayerNormed features: unit scale
    out = q(z)
    # N(0, 1) weights (fairseq): logits spread by ~sqrt(256) = 16; lecun init gave ~1.
    assert float(jnp.std(out.logits, axis=-1).mean()) > 8
    # So at the initial temperature the Gumbel-sampled code is mostly the argmax code.
    sampled = q(z, 2.0, jax.random.key(2))
    assert float(jnp.mean(sampled.sampled_ids == out.ids)) > 0.5


def test_log_mel_normalisation_uses_valid_frames_only():
    model = W2vBert(CFG, rngs=nnx.Rngs(0))
    wav = _varied_audio(2.0)
    frames = len(wav) // 640
    padded = np.concatenate([wav, 0.5 * np.ones(16000, np.float32)])  # loud padding
    valid = valid_frames(jnp.array([len(wav)]), len(padded) // 640)
    z_alone = np.asarray(model.encode(jnp.asarray(wav[None])))[0]
    z_padded = np.asarray(model.encode(jnp.asarray(padded[None]), valid))[0, :frames]
    z_unmasked = np.asarray(model.encode(jnp.asarray(padded[None])))[0, :frames]
    # The last frames' STFT windows reach into the padding (and move the statistics a little);
    # normalising over the padding as well would move every frame far more.
    close = np.abs(z_padded[:-1] - z_alone[:-1]).max()
    far = np.abs(z_unmasked[:-1] - z_alone[:-1]).max()
    assert close < 0.05 and far > 5 * close, (close, far)


def test_normalize_utterance_statistics():
    mel = jax.random.normal(jax.random.key(0), (2, 40, 8)) * 3.0 - 8.0
    valid = jnp.arange(40)[None, :] < jnp.array([[40], [25]])
    out = np.asarray(normalize_utterance(mel, valid))
    np.testing.assert_allclose(out[0].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out[0].std(0), 1, atol=1e-3)
    np.testing.assert_allclose(out[1, :25].mean(0), 0, atol=1e-5)
    assert np.all(out[1, 25:] == 0)


def test_normalisation_can_be_switched_off():
    raw = dataclasses.replace(CFG, normalize_log_mel=False)
    model = W2vBert(raw, rngs=nnx.Rngs(0))
    assert model.encode(jnp.asarray(_varied_audio(1.0)[None])).shape == (1, 24, 64)
