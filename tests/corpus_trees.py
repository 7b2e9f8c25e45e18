"""Small synthetic audio trees in the corpus layouts, for data-layer tests (no flite, no fluidsynth).

Audio is a sine plus noise written with soundfile directly, so the trees do not depend on the
code under test. Every writer returns {utt_id: path} of what it wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
# split -> {(speaker, book): [seconds of each utterance]}
SPEECH = {
    "train": {("101", "7"): [1.3, 0.4, 2.0], ("102", "7"): [0.9, 1.7]},
    "heldout_voices": {("201", "7"): [1.1]},
}
# split -> {(performer, piece): [seconds]}
PIANO = {
    "train": {("p1", "bwv269"): [1.5, 0.8], ("p2", "bwv269"): [1.2]},
    "heldout_pieces": {("p1", "palestrina_1"): [1.0]},
}


def tone(seconds: float, seed: int, sample_rate: int = SR) -> np.ndarray:
    """float32 `[samples]`: a sine of a seed-dependent pitch plus a little noise, peak < 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wav = 0.4 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.05 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


def utt_id(speaker: str, book: str, k: int) -> str:
    return f"{speaker}-{book}-{k:04d}"


def speech_text(uid: str) -> str:
    """The JSON text of an utterance; trans.txt holds its upper-cased form."""
    return f"In the beginning was {uid}"


def write_speech_tree(root, spec=SPEECH, json_text: bool = True, trans: bool = True) -> dict:
    """Libri-Light/LibriSpeech-compatible tree: FLAC + JSON per utterance, trans.txt per book."""
    paths = {}
    for split, books in spec.items():
        for (speaker, book), durations in books.items():
            d = Path(root, split, speaker, book)
            d.mkdir(parents=True, exist_ok=True)
            lines = []
            for k, seconds in enumerate(durations):
                uid = utt_id(speaker, book, k)
                sf.write(d / f"{uid}.flac", tone(seconds, seed=len(paths)), SR, subtype="PCM_16")
                meta = {"speaker": speaker, "book": book, "duration": seconds, "sample_rate": SR}
                if json_text:
                    meta["text"] = speech_text(uid)
                (d / f"{uid}.json").write_text(json.dumps(meta))
                lines.append(f"{uid} {speech_text(uid).upper()}\n")
                paths[uid] = (d / f"{uid}.flac").resolve()
            if trans:
                (d / f"{speaker}-{book}.trans.txt").write_text("".join(lines))
    return paths


def write_piano_tree(root, spec=PIANO) -> dict:
    """MAESTRO-like tree: FLAC + (placeholder) MIDI + JSON per performance."""
    paths = {}
    for split, pieces in spec.items():
        for (performer, piece), durations in pieces.items():
            d = Path(root, split, performer, piece)
            d.mkdir(parents=True, exist_ok=True)
            for k, seconds in enumerate(durations):
                uid = f"{performer}-{piece}-{k:02d}"
                sf.write(d / f"{uid}.flac", tone(seconds, seed=100 + len(paths)), SR,
                         subtype="PCM_16")
                (d / f"{uid}.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0")
                (d / f"{uid}.json").write_text(json.dumps({"piece": piece, "performer": performer,
                                                           "duration": seconds}))
                paths[uid] = (d / f"{uid}.flac").resolve()
    return paths


def write_phone_tree(root, rng, split: str = "heldout_voices") -> None:
    """ABX-ready split: 2 speakers x 2 utterances of 1.5 s, 12 triphones p-V-t of 0.125 s phones
    (phone timings in the JSON sidecars), a tone per phone."""
    for speaker in ("s1", "s2"):
        for u in range(2):
            name = f"{speaker}-book-{u:04d}"
            folder = Path(root) / split / speaker / "book"
            folder.mkdir(parents=True, exist_ok=True)
            phones, wav, t = [["pau", 0.0, 0.0]], [], 0.0
            for k in range(4):
                for phone in ("p", str(rng.choice(["a", "e", "i"])), "t"):
                    phones.append([phone, t, t + 0.125])
                    freq = {"p": 150, "t": 3000, "a": 700, "e": 1200, "i": 2200}[phone]
                    tt = np.arange(2000) / 16000
                    wav.append(0.3 * np.sin(2 * np.pi * freq * tt) + 0.01 * rng.standard_normal(2000))
                    t += 0.125
            phones.append(["pau", t, t])
            sf.write(folder / f"{name}.flac", np.concatenate(wav).astype(np.float32), 16000)
            (folder / f"{name}.json").write_text(json.dumps({"speaker": speaker, "phones": phones}))
