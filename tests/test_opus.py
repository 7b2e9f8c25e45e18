"""Opus baseline: round trip length and rate, real and payload bitrates, Ogg packets, errors."""
import os
import shutil
import struct

import numpy as np
import pytest

from audiolm_jax.eval import opus

needs_opus = pytest.mark.skipif(shutil.which("opusenc") is None or shutil.which("opusdec") is None,
                                reason="opus-tools not installed")


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced harmonic complex with a gliding pitch and a syllable-rate envelope."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.7 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.sin(2 * np.pi * 3.0 * t) ** 2
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.1 * envelope * voiced + 0.002 * noise).astype(np.float32)


def ogg_page(segments: list[int], continued: bool = False) -> bytes:
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, 1 if continued else 0, 0, 1, 0, 0, len(segments))
    return header + bytes(segments) + b"\0" * sum(segments)


def test_ogg_packet_sizes_joins_lacing_and_pages():
    # packets of 19, 300 (255 + 45) and 600 bytes, the last one spanning two pages
    data = ogg_page([19, 255, 45, 255, 255]) + ogg_page([90], continued=True)
    assert opus.ogg_packet_sizes(data) == [19, 300, 600]


def test_ogg_packet_sizes_rejects_truncated_or_foreign_data():
    page = ogg_page([19, 100])
    with pytest.raises(opus.OpusError, match="runs past the end"):
        opus.ogg_packet_sizes(page[:-10])
    with pytest.raises(opus.OpusError, match="no Ogg page at byte 0"):
        opus.ogg_packet_sizes(b"RIFF" + page)


@pytest.mark.needs_tools
@needs_opus
@pytest.mark.parametrize("mode", ["hard-cbr", "vbr"])
def test_round_trip_returns_16k_audio_of_the_input_length_at_about_the_target_rate(mode):
    wav = speech_like(10.0)
    result = opus.opus_round_trip(wav, 6.0, mode=mode)
    assert result.audio.dtype == np.float32 and result.audio.shape == wav.shape
    assert result.sample_rate == 16000 and result.duration_s == pytest.approx(10.0)
    assert result.packets in (500, 501)  # 20 ms frames (+1 for the encoder lookahead)
    # What the coder spent is near the target; the Ogg container costs under 1.5 kbit/s more.
    tolerance = 0.05 if mode == "hard-cbr" else 0.25
    assert result.payload_kbps == pytest.approx(6.0, rel=tolerance)
    assert result.payload_kbps < result.real_kbps < result.payload_kbps + 1.5
    assert result.real_kbps == pytest.approx(result.file_bytes * 8 / 10.0 / 1000)
    # Decoded audio resembles the input (Opus at 6 kbps keeps the waveform's envelope).
    corr = np.corrcoef(np.abs(wav[::160]), np.abs(result.audio[::160]))[0, 1]
    assert corr > 0.5
    # Deterministic: same input, same bytes, same audio.
    again = opus.opus_round_trip(wav, 6.0, mode=mode)
    assert again.file_bytes == result.file_bytes
    np.testing.assert_array_equal(again.audio, result.audio)


@pytest.mark.needs_tools
@needs_opus
def test_lower_cbr_target_spends_fewer_bits_and_keeps_resampled_length():
    wav = speech_like(3.0)
    low = opus.opus_round_trip(wav, 3.0, mode="hard-cbr")
    high = opus.opus_round_trip(wav, 12.0, mode="hard-cbr", output_rate=8000)
    assert low.payload_bytes < high.payload_bytes
    assert high.audio.shape == (24000,) and high.sample_rate == 8000


def test_bad_arguments_and_missing_tools_name_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="unknown Opus mode 'cbr'"):
        opus.opus_round_trip(np.zeros(160, np.float32), 6.0, mode="cbr")
    with pytest.raises(ValueError, match="float mono"):
        opus.opus_round_trip(np.zeros((2, 160), np.float32), 6.0)
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(opus.OpusToolsMissing, match="apt-get install opus-tools"):
        opus.opus_round_trip(np.zeros(16000, np.float32), 6.0)
