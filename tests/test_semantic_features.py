"""Log-mel features (audiolm_jax.audio.features) against librosa's numpy reference."""
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from audiolm_jax.audio.features import LogMelConfig, log_mel, mel_filterbank, num_frames


def _signal(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    return (chirp + 0.02 * rng.standard_normal(samples)).astype(np.float32)


def _librosa_log_mel(wav: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wav, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, window="hann", center=True, pad_mode="constant", power=2.0,
        n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    return np.log(np.maximum(mel, cfg.log_floor)).T  # [frames, n_mels]


@pytest.mark.parametrize("samples", [16000 + 123, 4000])
def test_log_mel_matches_librosa(samples):
    cfg = LogMelConfig()
    wav = _signal(samples)
    ours = np.asarray(jax.jit(log_mel)(wav))
    ref = _librosa_log_mel(wav, cfg)
    assert ours.shape == (samples // 160, 80) == (num_frames(samples), cfg.n_mels)
    # librosa (center=True) gives one more frame; ours are its first samples // 160.
    assert ref.shape[0] == ours.shape[0] + 1
    np.testing.assert_allclose(ours, ref[:-1], atol=2e-4, rtol=1e-4)


def test_log_mel_batched_and_floored():
    cfg = LogMelConfig()
    wav = np.stack([_signal(8000, 1), np.zeros(8000, np.float32)])
    batched = np.asarray(log_mel(jnp.asarray(wav), cfg))
    assert batched.shape == (2, 50, 80)
    np.testing.assert_allclose(batched[0], np.asarray(log_mel(wav[0], cfg)), atol=1e-5)
    np.testing.assert_allclose(batched[1], np.log(cfg.log_floor), atol=1e-6)  # silence -> floor


def test_filterbank_shape_and_errors():
    assert mel_filterbank().shape == (257, 80)
    with pytest.raises(ValueError, match="win_length"):
        LogMelConfig(win_length=600, n_fft=512)
    with pytest.raises(ValueError, match="at least 160 samples"):
        log_mel(np.zeros(100, np.float32))
