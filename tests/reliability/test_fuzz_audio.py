"""Fuzzing the audio loader and the corpus readers: damaged and absurd files give a good result or
a typed `AudioError` (readers: a skip with that reason); nothing else escapes and nothing hangs.

Hypothesis draws the mutations (derandomized: the same cases every run, no example database).
The curated bad files (corrupt, truncated, empty, NaN, not audio, pipes, permissions) are tested
in tests/test_audio_io.py and tests/test_bad_tree.py; this file adds the random and absurd ones
and the regressions of the bugs the fuzzing found (see the `test_regression_*` tests).
"""
from __future__ import annotations

import json
import os
import random
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiolm_jax.audio import load_audio
from audiolm_jax.audio.errors import AudioCorrupt
from audiolm_jax.data import AudioCropReader, scan_corpus
from audiolm_jax.data.corpus import CorpusLayoutError
from reliability.audio_fuzz import (
    ABSURD_U32,
    MUTATIONS,
    SEEDS,
    call_with_timeout,
    extension,
    flac_streaminfo,
    loader_outcome,
    mutate,
    seed_bytes,
    wav_header,
)

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_contract(path: Path) -> str:
    outcome = loader_outcome(path)
    assert not outcome.broken, f"{path.name} ({path.stat().st_size} bytes): {outcome}"
    return outcome.label


def test_every_seed_file_loads(tmp_path):
    for name in SEEDS:
        path = tmp_path / f"{name}{extension(name)}"
        path.write_bytes(seed_bytes(name))
        assert assert_contract(path) == "ok", name


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), mutation=st.sampled_from(MUTATIONS),
       draw=st.integers(0, 2 ** 32 - 1))
def test_damaged_files_load_or_raise_a_typed_error(tmp_path, seed, mutation, draw):
    path = tmp_path / f"case{extension(seed)}"
    path.write_bytes(mutate(seed, mutation, random.Random(draw)))
    assert_contract(path)


@FUZZ
@given(rate=st.sampled_from(ABSURD_U32 + (999, 1000, 8000)),
       channels=st.sampled_from((0, 1, 2, 1024, 1025, 0xFFFF)),
       bits=st.sampled_from((0, 1, 7, 8, 16, 24, 32, 33, 64)),
       data_bytes=st.sampled_from((None,) + ABSURD_U32),
       format_tag=st.sampled_from((1, 3, 0xFFFE, 0)),
       block_align=st.sampled_from((None, 0, 1, 0xFFFF)))
def test_absurd_wav_headers(tmp_path, rate, channels, bits, data_bytes, format_tag, block_align):
    path = tmp_path / "absurd.wav"
    path.write_bytes(wav_header(rate, channels, bits, data_bytes, format_tag, block_align))
    if assert_contract(path) == "ok":
        assert rate >= 1000 and channels > 0


@FUZZ
@given(rate=st.sampled_from((0, 1, 999, 1000, 96000, (1 << 20) - 1)),
       channels=st.integers(1, 8), bits=st.sampled_from((1, 4, 8, 16, 24, 32)),
       total=st.sampled_from((None, 0, 1, 3199, 3201, (1 << 36) - 1)))
def test_absurd_flac_streaminfo(tmp_path, rate, channels, bits, total):
    path = tmp_path / "absurd.flac"
    path.write_bytes(flac_streaminfo(seed_bytes("flac16"), rate, channels, bits, total))
    assert_contract(path)


# ----------------------------------------------------------------------------- corpus readers

def _good_clip(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:  # a file object: soundfile cannot open non-UTF-8 str names
        sf.write(fh, (0.2 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000,
                 format="FLAC", subtype="PCM_16")


@settings(FUZZ, max_examples=12)
@given(cases=st.lists(st.tuples(st.sampled_from(sorted(SEEDS)), st.sampled_from(MUTATIONS),
                                st.integers(0, 2 ** 32 - 1)), min_size=1, max_size=6),
       shuffle=st.booleans())
def test_reader_skips_damaged_files_with_their_reason_and_keeps_the_rest(tmp_path, cases,
                                                                         shuffle):
    root = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis may replay an example
    book = root / "train" / "s1" / "b1"
    book.mkdir(parents=True)
    _good_clip(book / "good.flac", 0.3, 0)
    expected = {str(book / "good.flac"): "ok"}
    for i, (seed, mutation, draw) in enumerate(cases):
        path = book / f"fuzz{i}{extension(seed)}"
        path.write_bytes(mutate(seed, mutation, random.Random(draw)))
        expected[str(path)] = assert_contract(path)
    reader = AudioCropReader(root, "libri_light", "train", crop_seconds=0.1, seed=0, batch_size=1,
                             shuffle=shuffle, num_epochs=2, drop_remainder=False)
    seen = call_with_timeout(lambda: [str(book / f"{b['id'][0]}") for b in reader])
    ok = {p for p, label in expected.items() if label == "ok"}
    assert sorted(seen) == sorted([os.path.splitext(p)[0] for p in ok] * 2)
    assert set(reader.skipped) == set(expected) - ok
    for path, reason in reader.skipped.items():
        assert reason.startswith(expected[path] + ":"), (path, reason)


_NAME = st.one_of(st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=12),
                  st.binary(min_size=1, max_size=12).map(
                      lambda b: os.fsdecode(b.replace(b"/", b"_").replace(b"\x00", b"_"))))
DEEP = "100k nested lists"  # expanded in the test: hypothesis would print the 100 kB value
_JSON = st.one_of(st.binary(max_size=64), st.just(DEEP),
                  st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                               lambda kids: st.lists(kids, max_size=3)
                               | st.dictionaries(st.sampled_from(["text", "x"]), kids, max_size=2),
                               max_leaves=8).map(lambda v: json.dumps(v).encode()))


@settings(FUZZ, max_examples=25)
@given(names=st.lists(_NAME, min_size=1, max_size=5, unique=True), meta=_JSON,
       trans=st.binary(max_size=64), depth=st.integers(1, 5))
def test_scan_lists_odd_names_and_junk_metadata_or_reports_the_layout(tmp_path, names, meta,
                                                                      trans, depth):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    folder = root.joinpath(*[f"d{i}" for i in range(depth - 1)]) if depth > 1 else root
    folder.mkdir(parents=True, exist_ok=True)
    meta = b"[" * 100000 if meta == DEEP else meta
    written = []
    for name in names:
        if name in (".", ".."):
            continue
        stem = folder / name
        for suffix, payload in ((".flac", b"fLaC junk"), (".json", meta)):
            try:
                Path(f"{stem}{suffix}").write_bytes(payload)
            except OSError:  # a name the filesystem refuses (too long after encoding)
                break
        else:
            written.append(f"{stem}.flac")
    (folder / "s-b.trans.txt").write_bytes(trans)
    try:
        index = scan_corpus(root)
    except CorpusLayoutError as e:
        assert str(root) in str(e)
        return
    assert depth == 4 and {e.path for e in index} <= set(written)
    for example in index:
        assert example.text is None or isinstance(example.text, str)


def test_special_files_in_a_tree_are_skipped_not_waited_on(tmp_path):
    book = tmp_path / "train" / "s1" / "b1"
    book.mkdir(parents=True)
    _good_clip(book / "good.flac", 0.2, 1)
    os.mkfifo(book / "pipe.flac")                       # opening it would block forever
    (book / "zero.wav").symlink_to("/dev/zero")         # endless bytes
    (book / "dangling.ogg").symlink_to(book / "gone.ogg")
    (book / "loop.flac").symlink_to(book / "loop.flac")
    (book / "folder.flac").mkdir()
    reader = AudioCropReader(tmp_path, "libri_light", "train", crop_seconds=0.1, seed=0,
                             batch_size=1, num_epochs=1, drop_remainder=False)
    ids = call_with_timeout(lambda: [b["id"][0] for b in reader])
    assert ids == ["good"]
    kinds = {os.path.basename(p): r.split(":")[0] for p, r in reader.skipped.items()}
    assert kinds == {"pipe.flac": "not_audio", "zero.wav": "not_audio",
                     "dangling.ogg": "missing", "loop.flac": "unreadable"}


# ----------------------------------------------------------------------------- regressions

def test_regression_an_implausible_sample_rate_is_corrupt_not_a_memory_bomb(tmp_path):
    # Found by fuzzing: a 3 kB WAV claiming 1 Hz resampled to 16e6 samples per second of "audio"
    # (a 2 MB one would have needed 64 GB). Rates below MIN_FILE_RATE are refused.
    path = tmp_path / "one_hz.wav"
    path.write_bytes(wav_header(rate=1, channels=1, bits=16))
    with pytest.raises(AudioCorrupt, match="implausible 1 Hz sample rate"):
        call_with_timeout(load_audio, path)
    sf.write(tmp_path / "low.wav", np.full(1000, 0.1, np.float32), 1000)
    assert load_audio(tmp_path / "low.wav").shape == (16000,)  # 1 kHz: still accepted


def test_regression_file_names_that_are_not_utf8_load_and_crop(tmp_path):
    # Found by fuzzing: soundfile encodes str paths strictly, so a valid FLAC named with a Latin-1
    # byte was reported as corrupt (a good file lost), and its id then broke the crop seed.
    book = tmp_path / "train" / "s1" / "b1"
    book.mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.flac")
    _good_clip(book / name, 0.2, 2)
    assert load_audio(book / name).shape == (3200,)
    reader = AudioCropReader(tmp_path, "libri_light", "train", crop_seconds=0.1, seed=0,
                             batch_size=1, num_epochs=1)
    batch = next(reader)
    assert batch["id"][0] == os.fsdecode(b"caf\xe9") and not reader.skipped


def test_regression_deeply_nested_metadata_json_is_a_problem_not_a_crash(tmp_path):
    # Found by fuzzing: json raises RecursionError (not ValueError) on deep nesting.
    book = tmp_path / "train" / "s1" / "b1"
    book.mkdir(parents=True)
    _good_clip(book / "u.flac", 0.2, 3)
    (book / "u.json").write_text("[" * 100000)
    index = scan_corpus(tmp_path)
    assert [e.id for e in index] == ["u"] and index.examples[0].text is None
    assert "unreadable metadata JSON" in index.problems[str(book / "u.json")]


def test_the_fuzz_harness_can_fail(tmp_path, monkeypatch):
    """An untyped error or a hang is reported as broken, not swallowed."""
    path = tmp_path / "x.wav"
    path.write_bytes(seed_bytes("wav16"))
    import reliability.audio_fuzz as fuzz

    monkeypatch.setattr(fuzz, "load_audio", lambda p: struct.unpack("<I", b"12"))
    assert loader_outcome(path).label == "escaped"
    monkeypatch.setattr(fuzz, "load_audio", lambda p: __import__("time").sleep(5))
    assert loader_outcome(path, timeout=0.2).label == "hang"
