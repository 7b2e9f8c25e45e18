"""Codec losses and their spectral front end: hinge values, feature matching, spectral loss."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.codec.discriminators import DiscriminatorOutput, average_pool_by_2
from audiolm_jax.codec.losses import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    multi_scale_spectral_loss,
)
from audiolm_jax.codec.spectral import frame_signal, mel_filterbank, stft


def test_hinge_losses_on_known_logits():
    real = [jnp.array([[0.5, 2.0, -1.0]]), jnp.array([[1.0, 1.0]])]
    fake = [jnp.array([[-2.0, 0.0, 1.0]]), jnp.array([[-1.0, -3.0]])]
    # disc 1: relu(1 - real) = (0.5, 0, 2) -> 5/6; relu(1 + fake) = (0, 1, 2) -> 1.
    # disc 2: real terms 0; relu(1 + fake) = (0, 0) -> 0.
    np.testing.assert_allclose(float(hinge_discriminator_loss(real, fake)), (5 / 6 + 1 + 0) / 2,
                               rtol=1e-6)
    # generator: relu(1 - fake) = (3, 1, 0) -> 4/3 and (2, 4) -> 3.
    np.testing.assert_allclose(float(hinge_generator_loss(fake)), (4 / 3 + 3) / 2, rtol=1e-6)


def test_feature_matching_is_mean_l1_over_layers_and_discriminators():
    logits = jnp.zeros((1, 2))
    real = [DiscriminatorOutput(logits, (jnp.ones((1, 2, 3)), jnp.zeros((1, 4)))),
            DiscriminatorOutput(logits, (jnp.full((1, 5), 2.0),))]
    fake = [DiscriminatorOutput(logits, (jnp.zeros((1, 2, 3)), jnp.zeros((1, 4)))),
            DiscriminatorOutput(logits, (jnp.full((1, 5), -1.0),))]
    np.testing.assert_allclose(float(feature_matching_loss(real, fake)), (1 + 0 + 3) / 3)
    # Real activations are held fixed: no gradient flows into them.
    grad = jax.grad(lambda r: feature_matching_loss(
        [DiscriminatorOutput(logits, (r,))], [DiscriminatorOutput(logits, (jnp.zeros(3),))]))(
            jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_spectral_loss_zero_iff_identical_and_grows_with_error():
    rng = np.random.default_rng(0)
    wav = jnp.asarray(rng.normal(size=(2, 4000)).astype(np.float32) * 0.1)
    noise = jnp.asarray(rng.normal(size=(2, 4000)).astype(np.float32))

    @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
    def loss_and_grad(target, estimate):
        return jax.value_and_grad(
            lambda e: multi_scale_spectral_loss(target, e, sample_rate=16000))(estimate)

    same, grad_same = loss_and_grad(wav, wav)
    small, _ = loss_and_grad(wav, wav + 0.01 * noise)
    large, grad_large = loss_and_grad(wav, wav + 0.1 * noise)
    silent, grad_silent = loss_and_grad(wav, jnp.zeros_like(wav))
    assert float(same) == 0.0
    assert 0.0 < float(small) < float(large)
    for grad in (grad_same, grad_large, grad_silent):   # silence and equality give no NaNs
        assert np.all(np.isfinite(np.asarray(grad)))
    assert float(silent) > float(large)


def test_stft_matches_librosa_and_mel_filters_match_htk():
    librosa = __import__("librosa")
    wav = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    ours = np.asarray(stft(jnp.asarray(wav[None]), 256, 64))[0]
    theirs = librosa.stft(wav, n_fft=256, hop_length=64, window="hann", center=True,
                          pad_mode="constant").T
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, htk=True, norm=None).T
    np.testing.assert_allclose(mel_filterbank(512, 64, 16000), reference, atol=1e-5)


@pytest.mark.parametrize("samples,window,hop", [
    (1, 64, 16), (100, 64, 16), (1000, 256, 64), (999, 2048, 512), (500, 60, 16), (7, 8, 3)])
def test_frames_and_their_gradient_match_numpy_indexing(samples, window, hop):
    """Both framing paths (hop-sized blocks when the hop divides the window, else a gather)
    give numpy's centred frames, and their transpose is numpy's scatter-add of the frames."""
    rng = np.random.default_rng(samples)
    wav = rng.standard_normal((2, samples)).astype(np.float32)
    padded = np.pad(wav, ((0, 0), (window // 2, window // 2)))
    count = 1 + (padded.shape[1] - window) // hop
    index = np.arange(count)[:, None] * hop + np.arange(window)[None, :]
    frames, vjp = jax.vjp(lambda w: frame_signal(w, window, hop), jnp.asarray(wav))
    np.testing.assert_array_equal(np.asarray(frames), padded[:, index])
    cotangent = rng.standard_normal(frames.shape).astype(np.float32)
    expected = np.zeros_like(padded)
    for row in range(2):
        np.add.at(expected[row], index, cotangent[row])
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(cotangent))[0]),
                               expected[:, window // 2: window // 2 + samples], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("samples", [1, 2, 3, 5, 8, 321])
def test_average_pool_ignores_padding_like_a_masked_pool(samples):
    x = np.random.default_rng(samples).standard_normal((2, samples)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (4, 4)))
    mask = np.pad(np.ones_like(x), ((0, 0), (4, 4)))
    out = np.asarray(average_pool_by_2(jnp.asarray(x)))
    # numpy reference: mean of the real samples under each SAME window
    pad_lo = max((-(-samples // 2) - 1) * 2 + 4 - samples, 0) // 2
    for i in range(out.shape[1]):
        lo = 4 + i * 2 - pad_lo
        want = padded[:, lo:lo + 4].sum(1) / mask[:, lo:lo + 4].sum(1)
        np.testing.assert_allclose(out[:, i], want, rtol=1e-5)
