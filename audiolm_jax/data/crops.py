"""Random fixed-length audio crops, deterministic in (seed, epoch, example id).

Every input path (the TF-free `AudioCropReader` and the SeqIO tasks in `tasks/`, through
`tf.numpy_function`) calls these same functions, so the same tree, seed and epoch give bit-identical
crops whatever the order, sharding or process the example is read in: the randomness of one crop
depends on nothing but its own (seed, epoch, id).

Clips shorter than the crop are kept whole and padded with zeros; the valid length is returned so
losses can mask the padding (`mask = arange(length) < valid_length`).
"""
from __future__ import annotations

import hashlib

import numpy as np


def crop_length(crop_seconds: float, sample_rate: int) -> int:
    """Samples in a crop of `crop_seconds` at `sample_rate` (rounded to the nearest sample)."""
    n = int(round(float(crop_seconds) * int(sample_rate)))
    if n <= 0:
        raise ValueError(f"crop_seconds={crop_seconds} at {sample_rate} Hz gives {n} samples; "
                         "use a crop of at least one sample")
    return n


def stable_seed(*parts: object) -> int:
    """A 128-bit integer from `parts`, identical across processes and platforms.

    Python's `hash()` of a str is salted per process (PYTHONHASHSEED), so it cannot key data order.
    """
    # surrogateescape: ids from file names that are not valid UTF-8 (same bytes for valid ones).
    key = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")


def crop_rng(seed: int, epoch: int, example_id: str) -> np.random.Generator:
    """The generator that places the crop of `example_id` in `epoch`."""
    return np.random.default_rng(stable_seed("crop", int(seed), int(epoch), example_id))


def crop_offset(num_samples: int, length: int, rng: np.random.Generator) -> int:
    """Uniform start in [0, num_samples - length]; 0 when the clip is not longer than the crop."""
    if num_samples <= length:
        return 0
    return int(rng.integers(0, num_samples - length + 1))


def random_crop(wav: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """`wav[samples]` -> (`crop[length]` float32, valid_length).

    valid_length is `length` unless the clip is shorter, in which case the clip is placed at the
    start and zero-padded.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"random_crop expects mono audio [samples], got shape {wav.shape}; "
                         "downmix first (audiolm_jax.audio.to_mono)")
    start = crop_offset(wav.shape[0], length, rng)
    piece = wav[start:start + length]
    out = np.zeros(length, np.float32)
    out[:piece.shape[0]] = piece
    return out, int(piece.shape[0])


def crop_example(wav: np.ndarray, length: int, seed: int, epoch: int,
                 example_id: str) -> tuple[np.ndarray, int]:
    """The crop of one example in one epoch: `random_crop` with `crop_rng(seed, epoch, id)`."""
    return random_crop(wav, length, crop_rng(seed, epoch, example_id))


def length_mask(valid_length: np.ndarray, length: int) -> np.ndarray:
    """`valid_length[...]` -> bool `mask[..., length]`, True on real samples."""
    return np.arange(length) < np.asarray(valid_length)[..., None]
