"""Audio test fixtures: a deterministic tree of good and bad audio files.

`write_bad_audio_tree(root)` writes one file per case in `CASES`; tests of corpus readers use it to
check that the bad files are skipped with their reason (`EXPECTED_ERROR[name].kind`) and that the
good ones are kept. Files are written with soundfile directly, not with `audiolm_jax.audio`, so
the fixtures do not depend on the code they test.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import soundfile as sf

from audiolm_jax.audio.errors import AudioCorrupt, AudioEmpty, AudioNonFinite, NotAudio

# name -> file suffix. Order is fixed: `index` in layouts is the position here.
CASES = {
    "good": ".flac",        # 16 kHz mono FLAC, ~1 s speech-like signal
    "stereo_44k": ".wav",   # 44.1 kHz stereo PCM_16 WAV of two tones: good, must be converted
    "one_sample": ".flac",  # valid FLAC holding exactly one sample (0.25)
    "corrupt": ".flac",     # valid FLAC header, garbage body
    "truncated": ".flac",   # the good FLAC cut to half its bytes
    "empty": ".flac",       # 0 bytes
    "not_audio": ".flac",   # a text file
    "nan": ".wav",          # float WAV with NaN and Inf samples
}
# Expected `load_audio` outcome: None for the files that load, else the error type.
EXPECTED_ERROR = {
    "good": None,
    "stereo_44k": None,
    "one_sample": None,
    "corrupt": AudioCorrupt,
    "truncated": AudioCorrupt,
    "empty": AudioEmpty,
    "not_audio": NotAudio,
    "nan": AudioNonFinite,
}
GOOD_CASES = tuple(n for n, e in EXPECTED_ERROR.items() if e is None)
BAD_CASES = tuple(n for n, e in EXPECTED_ERROR.items() if e is not None)
# Samples each good case has after `load_audio(path)` at 16 kHz.
EXPECTED_SAMPLES_16K = {"good": 16000, "stereo_44k": 16000, "one_sample": 1}

GOOD_SECONDS = 1.0
STEREO_RATE = 44100
# (frequency Hz, amplitude, phase rad) of the left and right channel of `stereo_44k`.
STEREO_TONES = ((440.0, 0.4, 0.0), (1000.0, 0.3, 0.5))

# (case name, index in CASES, suffix) -> path relative to the root.
Layout = Callable[[str, int, str], str]


def flat_layout(name: str, index: int, suffix: str) -> str:
    """`{root}/{name}{suffix}`."""
    return f"{name}{suffix}"


def librilight_layout(split: str = "train", speaker: str = "9000", book: str = "1") -> Layout:
    """`{root}/{split}/{speaker}/{book}/{speaker}-{book}-{NNNN}{suffix}`, NNNN = case index."""

    def layout(name: str, index: int, suffix: str) -> str:
        return f"{split}/{speaker}/{book}/{speaker}-{book}-{index:04d}{suffix}"

    return layout


def write_bad_audio_tree(root: str | os.PathLike, layout: Layout | None = None,
                         cases: Iterable[str] | None = None) -> dict[str, Path]:
    """Write the fixture files under `root` (all of `CASES`, or the named subset).

    Returns {case name: absolute path}. Deterministic: the same bytes on every call.
    """
    root = Path(root)
    layout = layout or flat_layout
    wanted = list(CASES) if cases is None else list(cases)
    unknown = sorted(set(wanted) - set(CASES))
    if unknown:
        raise ValueError(f"unknown fixture case(s) {unknown}; known: {list(CASES)}")
    good_flac = _flac_bytes(speech_like(GOOD_SECONDS, 16000, seed=0), 16000)
    paths = {}
    for index, (name, suffix) in enumerate(CASES.items()):
        if name not in wanted:
            continue
        path = (root / layout(name, index, suffix)).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        _WRITERS[name](path, good_flac)
        paths[name] = path
    return paths


def speech_like(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like float32 `[samples]` signal, peak 0.5.

    Voiced harmonics of a gliding f0 (100-150 Hz) shaped by three formants that move per syllable,
    a ~4 Hz syllabic envelope with pauses, and a little breath noise.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 125.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    syllable = np.floor(t * 4.0).astype(int)
    formants = rng.uniform([300, 900, 2400], [800, 2200, 2900], size=(syllable.max() + 1, 3))[syllable]
    harmonics = np.arange(1, int(0.45 * sample_rate / 100.0) + 1)
    freqs = f0[:, None] * harmonics[None, :]  # [samples, harmonics]
    gain = sum(g * np.exp(-0.5 * ((freqs - formants[:, i:i + 1]) / 120.0) ** 2)
               for i, g in enumerate((1.0, 0.6, 0.3)))
    gain = np.where(freqs < 0.45 * sample_rate, gain / harmonics, 0.0)
    voiced = (gain * np.sin(phase[:, None] * harmonics[None, :])).sum(axis=1)
    envelope = np.abs(np.sin(np.pi * 4.0 * t)) ** 0.6 * (rng.uniform(size=syllable.max() + 1) > 0.15)[syllable]
    wav = envelope * voiced + 0.01 * rng.standard_normal(n)
    return (0.5 * wav / max(np.abs(wav).max(), 1e-9)).astype(np.float32)


def stereo_tones(seconds: float, sample_rate: int) -> np.ndarray:
    """The `stereo_44k` content as float64 `[samples, 2]`, evaluated at any rate."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return np.stack([a * np.sin(2 * np.pi * f * t + p) for f, a, p in STEREO_TONES], axis=1)


def truncate_file(src: str | os.PathLike, dst: str | os.PathLike, fraction: float) -> Path:
    """Copy the first `fraction` of `src`'s bytes to `dst`."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:int(len(data) * fraction)])
    return Path(dst)


def flac_metadata_end(data: bytes) -> int:
    """Byte offset where a FLAC file's audio frames begin (after the last metadata block)."""
    if data[:4] != b"fLaC":
        raise ValueError("not a FLAC stream")
    pos = 4
    while True:
        is_last = data[pos] & 0x80
        pos += 4 + int.from_bytes(data[pos + 1:pos + 4], "big")
        if is_last:
            return pos


def _flac_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _write_good(path: Path, good_flac: bytes) -> None:
    path.write_bytes(good_flac)


def _write_stereo(path: Path, good_flac: bytes) -> None:
    sf.write(path, stereo_tones(GOOD_SECONDS, STEREO_RATE), STEREO_RATE, format="WAV", subtype="PCM_16")


def _write_one_sample(path: Path, good_flac: bytes) -> None:
    sf.write(path, np.array([0.25], np.float32), 16000, format="FLAC", subtype="PCM_16")


def _write_corrupt(path: Path, good_flac: bytes) -> None:
    start = flac_metadata_end(good_flac)
    body = np.frombuffer(good_flac[start:], np.uint8)
    noise = np.random.default_rng(1).integers(1, 256, size=body.size, dtype=np.uint8)
    path.write_bytes(good_flac[:start] + (body ^ noise).tobytes())


def _write_truncated(path: Path, good_flac: bytes) -> None:
    path.write_bytes(good_flac[:len(good_flac) // 2])


def _write_empty(path: Path, good_flac: bytes) -> None:
    path.write_bytes(b"")


def _write_not_audio(path: Path, good_flac: bytes) -> None:
    path.write_text("This is a transcript, not audio.\nIN THE BEGINNING GOD CREATED THE HEAVEN\n")


def _write_nan(path: Path, good_flac: bytes) -> None:
    wav = speech_like(0.25, 16000, seed=2)
    wav[[100, 2000]] = np.nan
    wav[3000] = np.inf
    sf.write(path, wav, 16000, format="WAV", subtype="FLOAT")


_WRITERS = {
    "good": _write_good,
    "stereo_44k": _write_stereo,
    "one_sample": _write_one_sample,
    "corrupt": _write_corrupt,
    "truncated": _write_truncated,
    "empty": _write_empty,
    "not_audio": _write_not_audio,
    "nan": _write_nan,
}
