"""Damaged audio files for fuzzing the loader and the corpus readers, and the verdict on each.

Shared by tests/reliability/test_fuzz_audio.py (hypothesis draws the mutations) and
benchmarks/reliability.py (a seeded `random.Random` draws many more). A case is a valid seed file
(FLAC, WAV, OGG/Vorbis, OGG/Opus written by soundfile directly, not by the code under test) put
through one mutation: truncation, bit flips, overwritten header bytes, absurd header fields
(rates, channels, bit depths, lengths), random bytes behind a real magic number, or pure noise.

`loader_outcome(path)` runs `load_audio` and `audio_info` in a worker thread with a time limit:
the contract is a good result or a typed `AudioError`; anything else is an escape, and running
past the limit is a hang (a thread, unlike SIGALRM, also catches a hang inside libsndfile's C code).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import random
import struct
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from audiolm_jax.audio import audio_info, load_audio
from audiolm_jax.audio.errors import AudioError

TIMEOUT_S = 10.0  # A 0.2 s seed file decodes in ~1 ms; ten seconds is a hang, not a slow disk.

# name -> (libsndfile format, subtype, extension, rate, channels)
SEEDS = {
    "flac16": ("FLAC", "PCM_16", ".flac", 16000, 1),
    "flac24_stereo": ("FLAC", "PCM_24", ".flac", 22050, 2),
    "wav16": ("WAV", "PCM_16", ".wav", 16000, 1),
    "wav_float_stereo": ("WAV", "FLOAT", ".wav", 44100, 2),
    "ogg_vorbis": ("OGG", "VORBIS", ".ogg", 16000, 1),
    "ogg_opus": ("OGG", "OPUS", ".opus", 48000, 1),
}
MUTATIONS = ("truncate", "bit_flips", "header_bytes", "header_field", "absurd_header",
             "magic_then_noise", "noise", "none")
# Values a lying header field takes: zero, one, sign-bit and all-ones patterns, huge counts.
ABSURD_U32 = (0, 1, 2, 3, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_MAGICS = (b"fLaC", b"RIFF\xff\xff\xff\x7fWAVEfmt ", b"OggS\x00\x02", b"RF64", b"ID3\x03",
           b"\xff\xfb\x90\x00")


@functools.lru_cache(maxsize=None)
def seed_bytes(name: str) -> bytes:
    """The valid seed file `name` of SEEDS: 0.2 s of two tones (deterministic)."""
    fmt, subtype, _, rate, channels = SEEDS[name]
    t = np.arange(int(0.2 * rate)) / rate
    wav = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], 1)
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def extension(seed: str) -> str:
    return SEEDS[seed][2]


# ----------------------------------------------------------------------------- mutations

def truncate(data: bytes, fraction: float) -> bytes:
    return data[:int(len(data) * fraction)]


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    """Flip bit (p % 8) of byte (p // 8) % len for each p."""
    out = bytearray(data)
    for p in positions:
        out[(p // 8) % len(out)] ^= 1 << (p % 8)
    return bytes(out)


def overwrite(data: bytes, offset: int, payload: bytes) -> bytes:
    out = bytearray(data)
    offset %= max(len(out) - len(payload), 1)
    out[offset:offset + len(payload)] = payload
    return bytes(out)


def wav_header(rate: int, channels: int, bits: int, data_bytes: int | None = None,
               format_tag: int = 1, block_align: int | None = None, body: int = 3200) -> bytes:
    """A WAV whose `fmt ` and `data` chunks say what we like; `body` zero bytes of samples."""
    block = (channels * bits // 8 if block_align is None else block_align) & 0xFFFF
    fmt = struct.pack("<HHIIHH", format_tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF,
                      (rate * block) & 0xFFFFFFFF, block, bits & 0xFFFF)
    size = body if data_bytes is None else data_bytes & 0xFFFFFFFF
    riff = 4 + 8 + len(fmt) + 8 + body
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt))
            + fmt + b"data" + struct.pack("<I", size) + bytes(body))


def flac_streaminfo(data: bytes, rate: int | None = None, channels: int | None = None,
                    bits: int | None = None, total: int | None = None,
                    max_block: int | None = None) -> bytes:
    """A FLAC with STREAMINFO fields replaced (rate 20 bits, channels 3, bits 5, total 36)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO must be the first block"
    info = int.from_bytes(data[8:42], "big")
    # (value, bit offset from the left of the 272-bit block, width)
    fields = [(max_block, 16, 16), (rate, 80, 20), (None if channels is None else channels - 1, 100, 3),
              (None if bits is None else bits - 1, 103, 5), (total, 108, 36)]
    for value, offset, width in fields:
        if value is None:
            continue
        shift = 272 - offset - width
        mask = ((1 << width) - 1) << shift
        info = (info & ~mask) | ((value & ((1 << width) - 1)) << shift)
    return data[:8] + info.to_bytes(34, "big") + data[42:]


def absurd_header(seed: str, rng: random.Random) -> bytes:
    """A structurally valid file whose header fields are absurd (WAV and FLAC seeds)."""
    data = seed_bytes(seed)
    if data.startswith(b"fLaC"):
        field = rng.choice(("rate", "channels", "bits", "total", "max_block"))
        value = {"rate": rng.choice((0, 1, 7, 999, 1000, 655350, (1 << 20) - 1)),
                 "channels": rng.randint(1, 8), "bits": rng.choice((1, 3, 4, 20, 31, 32)),
                 "total": rng.choice((0, 1, 2, 3199, 3201, (1 << 36) - 1)),
                 "max_block": rng.choice((0, 1, 15, 16, 65535))}[field]
        return flac_streaminfo(data, **{field: value})
    return wav_header(rate=rng.choice(ABSURD_U32 + (8000, 16000)),
                      channels=rng.choice((0, 1, 2, 3, 255, 1024, 1025, 0xFFFF)),
                      bits=rng.choice((0, 1, 7, 8, 12, 16, 24, 32, 33, 64, 0xFFFF)),
                      data_bytes=rng.choice((None,) + ABSURD_U32),
                      format_tag=rng.choice((1, 1, 3, 0xFFFE, 0, 0x55, 0xFFFF)),
                      block_align=rng.choice((None, None, 0, 1, 3, 0xFFFF)),
                      body=rng.choice((0, 1, 3200)))


def mutate(seed: str, mutation: str, rng: random.Random) -> bytes:
    """One damaged file: `mutation` of MUTATIONS applied to seed file `seed`, drawn from `rng`."""
    data = seed_bytes(seed)
    if mutation == "truncate":
        return truncate(data, rng.random())
    if mutation == "bit_flips":
        return flip_bits(data, [rng.randrange(len(data) * 8) for _ in range(rng.randint(1, 64))])
    if mutation == "header_bytes":
        return overwrite(data, rng.randrange(64), rng.randbytes(rng.randint(1, 8)))
    if mutation == "header_field":
        width = rng.choice((2, 4))
        value = rng.choice(ABSURD_U32) & ((1 << 8 * width) - 1)
        return overwrite(data, rng.randrange(4, 64), value.to_bytes(width, rng.choice(("little", "big"))))
    if mutation == "absurd_header":
        return absurd_header(seed, rng)
    if mutation == "magic_then_noise":
        return rng.choice(_MAGICS) + rng.randbytes(rng.randint(0, 4096))
    if mutation == "noise":
        return rng.randbytes(rng.randint(1, 4096))
    if mutation == "none":
        return data
    raise ValueError(f"unknown mutation {mutation!r}; use one of {MUTATIONS}")


# ----------------------------------------------------------------------------- verdicts

@dataclasses.dataclass(frozen=True)
class Outcome:
    """ok: loaded (samples > 0); kind: the AudioError kind; escaped / hang: contract broken."""

    label: str          # "ok", an AudioError kind ("corrupt", ...), "escaped" or "hang"
    detail: str = ""

    @property
    def broken(self) -> bool:
        return self.label in ("escaped", "hang")


class Hang(Exception):
    """The call did not return in time (its daemon thread is abandoned)."""


def call_with_timeout(fn, *args, timeout: float = TIMEOUT_S):
    """fn(*args) in a daemon thread (one stuck in C code cannot block the interpreter's exit)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller
            box["error"] = e

    thread = threading.Thread(target=run, name="audio-fuzz", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise Hang(f"no answer in {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _checked_load(path: str) -> str:
    wav = load_audio(path)
    problems = []
    if wav.dtype != np.float32 or wav.ndim != 1 or wav.size == 0:
        problems.append(f"dtype {wav.dtype}, shape {wav.shape}")
    if not np.isfinite(wav).all():
        problems.append("non-finite samples returned")
    if problems:
        raise AssertionError(f"load_audio returned bad audio: {'; '.join(problems)}")
    info = audio_info(path)
    if info.frames <= 0 or info.sample_rate <= 0 or info.channels <= 0:
        raise AssertionError(f"audio_info returned {info}")
    return f"{wav.size} samples"


def loader_outcome(path: str | Path, timeout: float = TIMEOUT_S) -> Outcome:
    """Run load_audio (then audio_info) on `path`: ok, a typed error, an escape or a hang."""
    path = str(path)
    try:
        return Outcome("ok", call_with_timeout(_checked_load, path, timeout=timeout))
    except Hang as e:
        return Outcome("hang", str(e))
    except AudioError as e:
        # audio_info may refuse a file load_audio took only if it is typed too (checked above).
        return Outcome(e.kind, e.reason)
    except Exception as e:  # noqa: BLE001 -- exactly what the contract forbids
        return Outcome("escaped", f"{type(e).__name__}: {e}")
