"""Differentiable STFT and mel spectrogram in JAX, shared by the STFT discriminator and the losses.

Kept separate from `audiolm_jax.audio` (numpy, IO side) because these run inside the jitted
training step and must be differentiable.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def frame_signal(wav: jnp.ndarray, window: int, hop: int) -> jnp.ndarray:
    """Centred framing: `[batch, samples] -> [batch, frames, window]`.

    Zero-pads `window // 2` on both sides (librosa's `center=True` with constant padding), so
    frame `t` is centred on sample `t * hop` and `frames = 1 + samples // hop`.
    """
    if wav.ndim != 2:
        raise ValueError(f"frame_signal expects [batch, samples], got shape {wav.shape}")
    padded = jnp.pad(wav, ((0, 0), (window // 2, window // 2)))
    num_frames = 1 + (padded.shape[1] - window) // hop
    if window % hop == 0:
        # Hop-sized blocks side by side instead of a gather: the same frames, but the backward
        # pass is pads and adds where a gather's is a scatter-add (atomics on a GPU), and every
        # spectral loss and the STFT discriminator use hops that divide their windows.
        overlap = window // hop
        blocks = padded[:, : (num_frames + overlap - 1) * hop].reshape(
            wav.shape[0], num_frames + overlap - 1, hop)
        return jnp.concatenate([blocks[:, i: i + num_frames] for i in range(overlap)], axis=-1)
    index = np.arange(num_frames)[:, None] * hop + np.arange(window)[None, :]
    return padded[:, index]


@functools.lru_cache(maxsize=None)
def _hann(window: int) -> np.ndarray:
    """Periodic Hann window (the STFT convention), float32 `[window]`."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window) / window)).astype(np.float32)


def stft(wav: jnp.ndarray, window: int, hop: int) -> jnp.ndarray:
    """Complex STFT with a Hann window and FFT size = window.

    `[batch, samples] -> complex64 [batch, frames, window // 2 + 1]`.
    """
    frames = frame_signal(wav.astype(jnp.float32), window, hop) * _hann(window)
    return jnp.fft.rfft(frames, n=window, axis=-1)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=None)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """HTK-scale triangular filters, 0 Hz to Nyquist, peak 1: float32 `[n_fft // 2 + 1, n_mels]`.

    At small FFT sizes (the 64-sample window of the spectral loss) some narrow low filters fall
    between FFT bins and are all zero; they then contribute identical values for both signals
    of a loss and so nothing to it, which is the behaviour of the SoundStream recipe.
    """
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (fft_hz[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - fft_hz[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def mel_spectrogram(wav: jnp.ndarray, window: int, hop: int, n_mels: int,
                    sample_rate: int) -> jnp.ndarray:
    """Magnitude mel spectrogram: `[batch, samples] -> [batch, frames, n_mels]`."""
    return safe_magnitude(stft(wav, window, hop)) @ mel_filterbank(window, n_mels, sample_rate)


def safe_magnitude(z: jnp.ndarray) -> jnp.ndarray:
    """|z| with a zero (not NaN) gradient at z = 0, which silent or zero-padded frames hit."""
    power = jnp.real(z) ** 2 + jnp.imag(z) ** 2
    positive = power > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, power, 1.0)), 0.0)
