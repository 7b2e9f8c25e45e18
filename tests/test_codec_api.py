"""numpy encode/decode API: shapes, dtypes, padding, resampling, bitrates and clear errors."""
import jax
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.codec import (
    SoundStream,
    SoundStreamConfig,
    bitrate_kbps,
    decode,
    decode_batch,
    encode,
    encode_batch,
)

Q, N = 4, 32
TINY = SoundStreamConfig(channels=4, embedding_dim=16, num_quantizers=Q, codebook_size=N)


@pytest.fixture(scope="module")
def model():
    return SoundStream(TINY, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def test_bitrates_of_the_paper():
    assert bitrate_kbps(12, 1024) == 6.0
    assert bitrate_kbps(4, 1024) == 2.0
    assert bitrate_kbps(3, 1024) == 1.5
    assert bitrate_kbps(3, 2 ** 14) == pytest.approx(2.1)
    with pytest.raises(ValueError, match="num_quantizers >= 1"):
        bitrate_kbps(0, 1024)


def test_encode_pads_short_audio_and_decode_restores_length(model):
    wav = np.random.default_rng(0).normal(size=1000).astype(np.float32) * 0.1
    codes = encode(model, wav)
    assert codes.shape == (4, Q) and codes.dtype == np.int32     # ceil(1000 / 320) frames
    assert codes.min() >= 0 and codes.max() < N
    assert encode(model, np.zeros(0, np.float32)).shape == (1, Q)   # at least one frame
    audio = decode(model, codes)
    assert audio.shape == (4 * 320,) and audio.dtype == np.float32
    # Fewer quantizers: a lower-bitrate code stream, still decodable.
    coarse = encode(model, wav, num_quantizers=2)
    np.testing.assert_array_equal(coarse, codes[:, :2])
    assert decode(model, coarse).shape == (4 * 320,)


def test_other_sample_rates_are_resampled(model):
    wav = np.random.default_rng(1).normal(size=640).astype(np.float32) * 0.1  # 80 ms at 8 kHz
    assert encode(model, wav, sample_rate=8000).shape == (4, Q)                # 1280 samples
    assert encode(model, wav, sample_rate=16000).shape == (2, Q)               # taken as 16 kHz


def test_batch_versions(model):
    wavs = np.random.default_rng(2).normal(size=(3, 1000)).astype(np.float32) * 0.1
    codes = encode_batch(model, wavs)
    assert codes.shape == (3, 4, Q) and codes.dtype == np.int32
    np.testing.assert_array_equal(codes[1], encode(model, wavs[1]))
    audio = decode_batch(model, codes)
    assert audio.shape == (3, 4 * 320) and audio.dtype == np.float32
    np.testing.assert_allclose(audio[2], decode(model, codes[2]), atol=1e-5)


@pytest.mark.parametrize("codes, message", [
    (np.full((3, Q), N, np.int32), rf"code {N} at index \(0, 0\) is out of range: .*\[0, {N}\)"),
    (np.full((3, Q), -1, np.int32), r"code -1 at index \(0, 0\) is out of range"),
    (np.zeros((3, Q + 1), np.int32), rf"5 quantizer levels .* expects 1\.\.{Q}"),
    (np.zeros((3,), np.int32), r"shape \[frames, quantizers\], got shape \(3,\)"),
    (np.zeros((1, 3, Q), np.int32), r"shape \[frames, quantizers\], got shape \(1, 3, 4\)"),
    (np.zeros((3, Q), np.float32), "codes must be integers, got dtype float32"),
    (np.zeros((0, Q), np.int32), "no frames"),
])
def test_decode_rejects_bad_codes(model, codes, message):
    with pytest.raises(ValueError, match=message):
        decode(model, codes)


def test_encode_rejects_bad_audio_and_levels(model):
    with pytest.raises(ValueError, match=r"num_quantizers=5 is out of range.*use 1\.\.4"):
        encode(model, np.zeros(320, np.float32), num_quantizers=5)
    with pytest.raises(ValueError, match=r"mono audio, got shape \(320, 2\)"):
        encode(model, np.zeros((320, 2), np.float32))
    with pytest.raises(ValueError, match="float audio"):
        encode(model, np.zeros(320, np.int16))
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode(model, np.full(320, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"codes must have shape \[batch, frames, quantizers\]"):
        decode_batch(model, np.zeros((3, Q), np.int32))
