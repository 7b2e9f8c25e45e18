"""Log-mel spectrogram in JAX: the input features of w2v-BERT (80 bins, 25 ms window, 10 ms hop).

Jit-able and batched. The mel filterbank is a numpy constant built once per trace by librosa, so the
features match `librosa.feature.melspectrogram(center=True, pad_mode='constant')` (tested).

Framing: the signal is zero-padded by `n_fft // 2` on both sides (librosa's `center=True`), frame t
is centred on sample `t * hop`, and only the first `samples // hop` frames are kept (librosa gives
one more). Hence `frames = samples // 160` at 16 kHz, and w2v-BERT's two stride-2 convolutions give
`samples // 640` frames: the 25 Hz rate of the semantic tokens.

This module imports JAX; import it by path (`audiolm_jax.audio.features`), not through
`audiolm_jax.audio`, which stays JAX-free for corpus builders.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    """Log-mel parameters. Defaults are w2v-BERT's: 16 kHz, 25 ms Hann window, 10 ms hop, 80 bins."""

    sample_rate: int = 16000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512  # next power of two above the window; the window is zero-padded centrally
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None  # None: Nyquist
    log_floor: float = 1e-5  # log(max(mel_power, floor)): silence maps to log(1e-5) ~ -11.5, not -inf

    def __post_init__(self):
        if self.win_length > self.n_fft:
            raise ValueError(f"LogMelConfig: win_length={self.win_length} exceeds n_fft={self.n_fft}; "
                             f"set n_fft >= win_length (e.g. the next power of two)")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.log_floor <= 0:
            raise ValueError(f"LogMelConfig: hop_length, n_mels and log_floor must be positive, got "
                             f"{self.hop_length}, {self.n_mels}, {self.log_floor}")


def num_frames(num_samples: int, config: LogMelConfig = LogMelConfig()) -> int:
    """Frames of `log_mel` for a signal of `num_samples`: `num_samples // hop_length`."""
    return num_samples // config.hop_length


def mel_filterbank(config: LogMelConfig = LogMelConfig()) -> np.ndarray:
    """Slaney-style mel filterbank, float32 [n_fft // 2 + 1, n_mels] (librosa's default)."""
    import librosa  # construction time only; heavy import kept out of module import

    fb = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                             fmin=config.fmin, fmax=config.fmax)
    return np.ascontiguousarray(fb.T, dtype=np.float32)


def analysis_window(config: LogMelConfig = LogMelConfig()) -> np.ndarray:
    """Periodic Hann window of `win_length`, zero-padded centrally to `n_fft` (as librosa does)."""
    n = np.arange(config.win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.win_length)
    left = (config.n_fft - config.win_length) // 2
    padded = np.zeros(config.n_fft, np.float32)
    padded[left:left + config.win_length] = window
    return padded


def power_mel(wav: jnp.ndarray, config: LogMelConfig = LogMelConfig()) -> jnp.ndarray:
    """Mel power spectrogram (before the log).

    Args:
      wav: float [..., samples], 16 kHz (any leading batch dims).
    Returns:
      float32 [..., frames, n_mels] with frames = samples // hop_length.
    """
    wav = jnp.asarray(wav, jnp.float32)
    samples = wav.shape[-1]
    frames = num_frames(samples, config)
    if frames == 0:
        raise ValueError(f"power_mel: {samples} samples give no frame (hop {config.hop_length}); "
                         f"pass at least {config.hop_length} samples")
    half = config.n_fft // 2
    pad = [(0, 0)] * (wav.ndim - 1) + [(half, half)]
    padded = jnp.pad(wav, pad)
    # Gather frames with a static index table: [frames, n_fft] into [..., frames, n_fft].
    index = (np.arange(frames)[:, None] * config.hop_length + np.arange(config.n_fft)[None, :])
    framed = padded[..., index] * analysis_window(config)
    spectrum = jnp.fft.rfft(framed, n=config.n_fft, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    return jnp.einsum("...tf,fm->...tm", power, mel_filterbank(config),
                      precision="highest")


def log_mel(wav: jnp.ndarray, config: LogMelConfig = LogMelConfig()) -> jnp.ndarray:
    """Natural-log mel power spectrogram with a floor.

    Args:
      wav: float [..., samples], 16 kHz.
    Returns:
      float32 [..., frames, n_mels], frames = samples // hop_length (see module docstring).
    """
    return jnp.log(jnp.maximum(power_mel(wav, config), config.log_floor))
