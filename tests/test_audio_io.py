"""audiolm_jax.audio: decoding, conversion, typed errors for bad files, atomic writes."""
import os
import pickle
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from audiolm_jax.audio import (
    AudioCorrupt,
    AudioEmpty,
    AudioError,
    AudioFileMissing,
    AudioNonFinite,
    AudioUnreadable,
    NotAudio,
    audio_info,
    load_audio,
    resample,
    save_audio,
)
from audiolm_jax.audio import io as audio_io
from fixtures_audio import (
    BAD_CASES,
    CASES,
    EXPECTED_ERROR,
    EXPECTED_SAMPLES_16K,
    GOOD_CASES,
    flac_metadata_end,
    librilight_layout,
    speech_like,
    stereo_tones,
    truncate_file,
    write_bad_audio_tree,
)

PCM16_STEP = 1.0 / 32768


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_bad_audio_tree(tmp_path_factory.mktemp("audio"))


def _sine(freq, seconds, rate, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _peak_hz(wav, rate):
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.fft.rfftfreq(len(wav), 1 / rate)[np.argmax(spectrum)]


# ----------------------------------------------------------------------------- the fixture tree

@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_files_raise_their_typed_error_naming_the_path(tree, name):
    with pytest.raises(EXPECTED_ERROR[name]) as caught:
        load_audio(tree[name])
    err = caught.value
    assert str(tree[name]) in str(err) and err.path == str(tree[name])
    assert err.reason and err.fix and "Fix:" in str(err)
    assert isinstance(err, AudioError) and isinstance(err, ValueError)


@pytest.mark.parametrize("name", GOOD_CASES)
def test_good_files_load_as_float32_mono_16k(tree, name):
    wav = load_audio(tree[name])
    assert wav.dtype == np.float32 and wav.ndim == 1 and wav.flags.c_contiguous
    assert abs(len(wav) - EXPECTED_SAMPLES_16K[name]) <= 1
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0


def test_good_flac_is_the_written_signal(tree):
    expected = speech_like(1.0, 16000, seed=0)
    np.testing.assert_allclose(load_audio(tree["good"]), expected, atol=PCM16_STEP)


def test_one_sample_flac_loads_to_one_sample(tree):
    np.testing.assert_allclose(load_audio(tree["one_sample"]), [0.25], atol=PCM16_STEP)


def test_stereo_44k_matches_mean_of_channels_then_soxr(tree):
    wav = load_audio(tree["stereo_44k"])
    data, rate = sf.read(tree["stereo_44k"], dtype="float32")
    assert data.shape == (44100, 2) and rate == 44100
    reference = soxr.resample(data.mean(axis=1), 44100, 16000, quality="HQ")
    assert abs(len(wav) - 16000) <= 1
    np.testing.assert_allclose(wav, reference, atol=1e-6)
    # Independent of soxr: the two tones' mean evaluated directly at 16 kHz (edges excluded,
    # where the resampling filter sees the signal's start and end).
    analytic = stereo_tones(1.0, 16000).mean(axis=1)
    np.testing.assert_allclose(wav[200:-200], analytic[200:-200], atol=2e-3)


def test_fixture_tree_is_deterministic_and_follows_the_layout(tmp_path):
    a = write_bad_audio_tree(tmp_path / "a", layout=librilight_layout("train", "7", "3"))
    b = write_bad_audio_tree(tmp_path / "b", layout=librilight_layout("train", "7", "3"))
    assert list(a) == list(CASES)
    assert a["good"] == (tmp_path / "a/train/7/3/7-3-0000.flac").resolve()
    for name in CASES:
        # Samples equal within one 16-bit step (numpy's SIMD sin may differ by an ulp with memory
        # alignment, which can flip one PCM rounding); bad files stay bad the same way.
        if name in GOOD_CASES:
            np.testing.assert_allclose(sf.read(a[name])[0], sf.read(b[name])[0], atol=1.5 / 32768)
        else:
            assert a[name].stat().st_size > 0 or b[name].stat().st_size == 0
    subset = write_bad_audio_tree(tmp_path / "c", cases=["empty", "good"])
    assert sorted(subset) == ["empty", "good"]
    with pytest.raises(ValueError, match="unknown fixture case"):
        write_bad_audio_tree(tmp_path / "d", cases=["nope"])


# ----------------------------------------------------------------------------- more bad inputs

@pytest.mark.parametrize("fmt,subtype,ext", [
    ("WAV", "PCM_16", ".wav"), ("WAV", "FLOAT", ".wav"), ("OGG", "VORBIS", ".ogg"),
    ("OGG", "OPUS", ".opus"), ("MP3", "MPEG_LAYER_III", ".mp3"),
])
def test_truncated_files_are_corrupt(tmp_path, fmt, subtype, ext):
    good = tmp_path / f"good{ext}"
    sf.write(good, speech_like(2.0, 16000, seed=3), 16000, format=fmt, subtype=subtype)
    assert len(load_audio(good)) == 32000
    cut = truncate_file(good, tmp_path / f"cut{ext}", 0.5)
    with pytest.raises(AudioCorrupt, match="truncated") as caught:
        load_audio(cut)
    assert str(cut) in str(caught.value)


def test_flac_cut_at_a_frame_boundary_is_corrupt(tmp_path):
    # libsndfile decodes such a file without error, just short: only the header count tells.
    good = tmp_path / "good.flac"
    sf.write(good, speech_like(2.0, 16000, seed=4), 16000, subtype="PCM_16")
    data = good.read_bytes()
    start = flac_metadata_end(data)
    syncs = [i for i in range(start + 1, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xF8]
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[:syncs[len(syncs) // 2]])
    with pytest.raises(AudioCorrupt, match=r"decoded \d+ of the 32000 frames"):
        load_audio(cut)


def test_flac_without_length_in_header_loads_fully(tmp_path):
    # Streaming encoders leave STREAMINFO's 36-bit total-samples field at 0 ("unknown").
    wav = speech_like(1.5, 16000, seed=5)
    path = tmp_path / "stream.flac"
    sf.write(path, wav, 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    info = int.from_bytes(data[8:42], "big")
    info &= ~(((1 << 36) - 1) << (34 * 8 - 144))  # total samples: bits 108..143 of STREAMINFO.
    data[8:42] = info.to_bytes(34, "big")
    path.write_bytes(bytes(data))
    assert sf.info(path).frames > 1 << 62  # libsndfile: unknown length.
    np.testing.assert_allclose(load_audio(path), wav, atol=PCM16_STEP)
    assert audio_info(path).frames == len(wav)


def test_valid_header_with_zero_frames_is_empty(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioEmpty):
        load_audio(path)
    with pytest.raises(AudioEmpty):
        audio_info(path)


def test_too_short_to_resample_is_empty(tmp_path):
    path = tmp_path / "one.wav"
    sf.write(path, np.array([0.5], np.float32), 44100, subtype="PCM_16")
    with pytest.raises(AudioEmpty, match="nothing at 16000 Hz"):
        load_audio(path)
    assert len(load_audio(path, sample_rate=44100)) == 1


def test_missing_directory_pipe_and_unreadable(tmp_path, monkeypatch):
    with pytest.raises(AudioFileMissing, match="no such file"):
        load_audio(tmp_path / "nope.flac")
    with pytest.raises(AudioFileMissing):
        audio_info(tmp_path / "nope.flac")
    with pytest.raises(NotAudio, match="directory"):
        load_audio(tmp_path)
    fifo = tmp_path / "pipe.flac"
    os.mkfifo(fifo)
    with pytest.raises(NotAudio, match="not a regular file"):  # Must not block waiting for a writer.
        load_audio(fifo)
    good = tmp_path / "good.flac"
    sf.write(good, speech_like(0.1, 16000), 16000)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audio_io, "open", refuse, raising=False)  # Root ignores chmod 000.
    with pytest.raises(AudioUnreadable, match="Permission denied"):
        load_audio(good)


def test_errors_survive_pickling():
    # Corpus readers run in worker processes and send errors back.
    err = pickle.loads(pickle.dumps(AudioCorrupt("/x/a.flac", "truncated: 3 of 9")))
    assert type(err) is AudioCorrupt
    assert (err.path, err.reason, err.kind) == ("/x/a.flac", "truncated: 3 of 9", "corrupt")
    assert str(err) == str(AudioCorrupt("/x/a.flac", "truncated: 3 of 9"))


# ----------------------------------------------------------------------------- audio_info

def test_audio_info_reads_the_header_only(tree):
    info = audio_info(tree["stereo_44k"])
    assert (info.sample_rate, info.channels, info.frames, info.format) == (44100, 2, 44100, "WAV")
    assert info.duration_s == pytest.approx(1.0) and info.path == str(tree["stereo_44k"])
    # The corrupt FLAC's header is intact: info succeeds where decoding fails.
    assert audio_info(tree["corrupt"]).frames == 16000
    with pytest.raises(NotAudio):
        audio_info(tree["not_audio"])
    with pytest.raises(AudioEmpty):
        audio_info(tree["empty"])


# ----------------------------------------------------------------------------- writing

@pytest.mark.parametrize("name,subtype,atol", [
    ("a.flac", None, PCM16_STEP), ("a.wav", None, PCM16_STEP), ("a.wav", "FLOAT", 0.0),
])
def test_lossless_round_trips(tmp_path, name, subtype, atol):
    wav = speech_like(0.5, 16000, seed=6)
    save_audio(tmp_path / name, wav, subtype=subtype)
    np.testing.assert_allclose(load_audio(tmp_path / name), wav, atol=atol)
    assert audio_info(tmp_path / name).subtype == (subtype or "PCM_16")


@pytest.mark.parametrize("name,subtype", [("a.ogg", None), ("a.ogg", "OPUS"), ("a.opus", None)])
def test_lossy_round_trips(tmp_path, name, subtype):
    wav = _sine(440.0, 1.0, 16000, amplitude=0.4) + 0.5 * _sine(1250.0, 1.0, 16000, amplitude=0.4)
    save_audio(tmp_path / name, wav, subtype=subtype)
    info = audio_info(tmp_path / name)
    assert (info.format, info.subtype) == ("OGG", subtype or ("VORBIS" if name.endswith(".ogg") else "OPUS"))
    back = load_audio(tmp_path / name)
    assert len(back) == len(wav)
    snr_db = 10 * np.log10(np.sum(wav ** 2) / np.sum((back - wav) ** 2))
    assert snr_db > 15, snr_db


def test_opus_bitrate_sets_the_size_and_keeps_the_length(tmp_path):
    wav = speech_like(4.0, 16000, seed=8)
    sizes = {}
    for kbps in (12, 32):
        save_audio(tmp_path / f"{kbps}.opus", wav, bitrate_kbps=kbps)
        back = load_audio(tmp_path / f"{kbps}.opus")
        assert len(back) == len(wav)  # pre-skip and end trim applied by libsndfile
        sizes[kbps] = os.path.getsize(tmp_path / f"{kbps}.opus") * 8 / 4.0 / 1000  # kbit/s
    # Variable bitrate around the target, plus the Ogg pages' ~1.5 kbit/s.
    assert 6 < sizes[12] < 16 and 24 < sizes[32] < 38, sizes
    with pytest.raises(ValueError, match="Opus only"):
        save_audio(tmp_path / "a.flac", wav, bitrate_kbps=24)
    with pytest.raises(ValueError, match="outside"):
        save_audio(tmp_path / "a.opus", wav, bitrate_kbps=300)
    assert audio_io._opus_compression_level("a.opus", "OPUS", None) is None


def test_mp3_decodes(tmp_path):
    wav = speech_like(1.0, 16000, seed=7)
    sf.write(tmp_path / "a.mp3", wav, 16000, format="MP3", subtype="MPEG_LAYER_III")
    back = load_audio(tmp_path / "a.mp3")
    assert len(back) == len(wav)
    assert np.corrcoef(back, wav)[0, 1] > 0.9


def test_save_clips_and_refuses_bad_input(tmp_path):
    save_audio(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.5], np.float64), subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "loud.wav"), [1.0, -1.0, 0.5])
    bad = np.array([0.1, np.nan, 0.2], np.float32)
    with pytest.raises(AudioNonFinite, match="refusing"):
        save_audio(tmp_path / "nan.flac", bad)
    with pytest.raises(AudioEmpty):
        save_audio(tmp_path / "empty.flac", np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="float samples"):
        save_audio(tmp_path / "int.flac", np.zeros(10, np.int16))
    with pytest.raises(ValueError, match=r"\.mp4"):
        save_audio(tmp_path / "a.mp4", np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="Opus cannot store 44100 Hz"):
        save_audio(tmp_path / "a.opus", np.zeros(10, np.float32), sample_rate=44100)
    with pytest.raises(ValueError, match="subtype 'FLOAT'"):
        save_audio(tmp_path / "a.flac", np.zeros(10, np.float32), subtype="float")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loud.wav"]  # Nothing half-written left.


def test_save_is_atomic_and_keeps_mode(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "a.flac"
    save_audio(path, speech_like(0.2, 16000))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    first = path.read_bytes()
    path.chmod(0o640)

    def fail_after_writing_the_temp_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(audio_io, "_target_mode", fail_after_writing_the_temp_file)
    with pytest.raises(OSError, match="disk full"):
        save_audio(path, speech_like(0.3, 16000, seed=9))
    assert path.read_bytes() == first  # The old file is untouched ...
    assert [p.name for p in path.parent.iterdir()] == ["a.flac"]  # ... and no temp file is left.
    monkeypatch.undo()
    save_audio(path, speech_like(0.3, 16000, seed=9))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and len(load_audio(path)) == 4800


# ----------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("freq,from_rate", [(1000.0, 44100), (3000.0, 48000), (440.0, 8000), (2500.0, 22050)])
def test_resampling_preserves_frequency(tmp_path, freq, from_rate):
    path = tmp_path / "tone.wav"
    sf.write(path, _sine(freq, 1.0, from_rate), from_rate, subtype="FLOAT")
    wav = load_audio(path)
    assert abs(len(wav) - 16000) <= 1
    assert abs(_peak_hz(wav, 16000) - freq) <= 1.0
    assert np.sqrt(np.mean(wav[500:-500] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resampling_removes_what_16k_cannot_hold():
    # A 10 kHz tone is above the 8 kHz Nyquist limit: it must be filtered, not aliased to 6 kHz.
    wav = resample(_sine(10000.0, 1.0, 44100), 44100, 16000)
    assert np.sqrt(np.mean(wav[200:-200] ** 2)) < 1e-4  # Edges excluded: the tone starts abruptly.


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive integer"):
        resample(np.zeros(10, np.float32), 0, 16000)
    with pytest.raises(ValueError, match="positive integer"):
        load_audio("x.flac", sample_rate=16000.0)


# ----------------------------------------------------------------------------- dependencies

def test_audio_package_does_not_import_tensorflow():
    code = ("import sys, audiolm_jax.audio; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'tensorflow']; "
            "assert not bad, bad")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)
