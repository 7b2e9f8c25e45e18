"""Frames <-> seconds accounting, sliding windows, fine-stage chunk boundaries, bad prompts."""
import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.generate.prompt import PromptError, check_prompt, load_prompt
from audiolm_jax.generate.timing import (
    TokenRates,
    Window,
    fine_chunks,
    semantic_span,
    sliding_windows,
)

RATES = TokenRates()


def test_frames_and_seconds():
    assert (RATES.frames_per_semantic, RATES.samples_per_frame, RATES.samples_per_semantic) == (2, 320, 640)
    assert RATES.acoustic_frames(3.0) == 150 and RATES.acoustic_frames(7.0) == 350
    assert RATES.seconds(500) == 10.0
    assert RATES.whole_semantic_samples(48000 + 639) == 48000
    assert RATES.semantic_tokens(7.0, 17.3) == 122 and RATES.semantic_tokens(0.01, 5.0) == 1
    with pytest.raises(ValueError, match="multiple"):
        TokenRates(16000, 30.0, 50.0)


def test_fine_chunks_tile_without_overlap():
    assert fine_chunks(150, 500, 150) == [(150, 300), (300, 450), (450, 500)]
    assert fine_chunks(0, 150, 150) == [(0, 150)]
    assert fine_chunks(0, 0, 150) == []
    chunks = fine_chunks(37, 1000, 150)
    assert chunks[0][0] == 37 and chunks[-1][1] == 1000
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(chunks, chunks[1:]))
    assert max(b - a for a, b in chunks) == 150


def test_sliding_windows():
    # Fits in one window: all context kept.
    assert sliding_windows(150, 500, 500) == [Window(0, 150, 500)]
    # 3 s prompt + 17 s at a 10 s window: slide by half a window, context = the last 5 s.
    calls = sliding_windows(150, 1000, 500)
    assert calls == [Window(0, 150, 500), Window(250, 500, 750), Window(500, 750, 1000)]
    assert all(c.stop - c.start <= 500 for c in calls)
    # A prompt longer than the window keeps its last `keep` positions.
    assert sliding_windows(800, 900, 500)[0] == Window(550, 800, 900)
    assert sliding_windows(0, 10, 4, keep=1) == [Window(0, 0, 4), Window(3, 4, 7), Window(6, 7, 10)]
    assert sliding_windows(10, 10, 4) == []


def test_semantic_span_is_proportional():
    assert semantic_span(250, 500, 0, 500) == (0, 250)
    assert semantic_span(100, 1000, 500, 1000) == (50, 100)
    assert semantic_span(3, 500, 499, 500) == (2, 3)       # never empty
    with pytest.raises(ValueError):
        semantic_span(10, 100, 50, 120)


def _tone(seconds, rate=16000, channels=1, level=0.3):
    t = np.arange(int(seconds * rate)) / rate
    wav = level * np.sin(2 * np.pi * 220 * t)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def test_bad_prompts_are_refused_with_the_file_named(tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, _tone(0.5), 16000)
    with pytest.raises(PromptError, match="short.wav.*0.50 s"):
        load_prompt(short)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000), 16000)
    with pytest.raises(PromptError, match="silent.wav.*silent"):
        load_prompt(silent)
    with pytest.raises(PromptError, match="missing.wav"):
        load_prompt(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(PromptError, match="notes.wav"):
        load_prompt(text)
    with pytest.raises(PromptError, match="NaN"):
        check_prompt(np.full(32000, np.nan), "x")


def test_stereo_and_other_rates_are_converted_with_notes(tmp_path):
    stereo = tmp_path / "stereo44.wav"
    sf.write(stereo, _tone(2.01, rate=44100, channels=2), 44100)
    prompt = load_prompt(stereo)
    assert any("2 channels" in n for n in prompt.notes)
    assert any("44100 Hz" in n for n in prompt.notes)
    assert prompt.wav.ndim == 1 and prompt.num_samples % 640 == 0
    assert abs(prompt.num_samples - 2.01 * 16000) < 640
    long = check_prompt(_tone(5.0), "long.wav", max_seconds=3.0)
    assert long.num_samples == 48000 and "last 3 s" in long.notes[0]
