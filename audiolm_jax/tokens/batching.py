"""Batches for the tokenize job: utterances grouped by length, padded to a few bucket lengths.

Every compiled program has a fixed [batch, samples] shape, so the job pads each batch to a bucket
length and keeps the batch size constant (short batches get filler rows). Buckets grow
geometrically, `steps_per_octave` per octave (default 4), which bounds both the padding
(< 1/steps_per_octave of the length, plus a frame or two) and the number of compiled shapes
(about steps_per_octave per doubling of the longest utterance). 1 gives power-of-two lengths:
fewest programs, up to ~2x padding (the right trade when compiling dominates, e.g. a small job
on GPU where each shape costs tens of seconds of XLA autotuning).

Frame counts of an utterance of `samples` samples at 16 kHz:
    semantic  samples // 640   (25 Hz; w2v-BERT drops a partial last frame)
    acoustic  samples // 320   (50 Hz; the causal codec's frames that see only real audio)
so acoustic = 2 * semantic or 2 * semantic + 1. Buckets leave at least one 40 ms frame of zeros
after the longest utterance, as `audiolm-jax semantic tokenize` does: the last real w2v-BERT frames
then see the same (zero) context whatever the bucket, so ids do not depend on the batching.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from audiolm_jax.shape_buckets import geometric_bucket

SEMANTIC_HOP = 640   # samples per 25 Hz semantic frame
ACOUSTIC_HOP = 320   # samples per 50 Hz codec frame
STEPS_PER_OCTAVE = 4


def semantic_frames(samples: int) -> int:
    return samples // SEMANTIC_HOP


def acoustic_frames(samples: int) -> int:
    return samples // ACOUSTIC_HOP


def check_steps_per_octave(steps_per_octave: int) -> int:
    if isinstance(steps_per_octave, bool) or not isinstance(steps_per_octave, (int, np.integer)) \
            or steps_per_octave < 1:
        raise ValueError(f"buckets per octave must be an integer >= 1, got {steps_per_octave!r}")
    return int(steps_per_octave)


def bucket_length(samples: int, steps_per_octave: int = STEPS_PER_OCTAVE) -> int:
    """Padded length (samples, a multiple of 640) for a batch whose longest row has `samples`:
    at least one frame of padding, rounded up to a step of 1/steps_per_octave of its
    power-of-two octave (1: the next power of two of 640-sample frames)."""
    steps_per_octave = check_steps_per_octave(steps_per_octave)
    units = samples // SEMANTIC_HOP + 1 + (samples % SEMANTIC_HOP > 0)  # >= 1 frame of zeros
    return geometric_bucket(units, steps_per_octave) * SEMANTIC_HOP


class Batch(NamedTuple):
    """rows: indices into the caller's utterance list (-1 for filler rows);
    wav float32 [batch, padded]; lengths int32 [batch] true samples (filler rows: padded)."""
    rows: np.ndarray
    wav: np.ndarray
    lengths: np.ndarray


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of up to `batch_size`, sorted by length (ties by index), so
    rows of one batch have similar lengths. Deterministic in `lengths` and `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(rows: Sequence[int], wavs: Sequence[np.ndarray], batch_size: int,
              steps_per_octave: int = STEPS_PER_OCTAVE) -> Batch:
    """Stack the `rows` of `wavs` (each float [samples]) into one zero-padded [batch_size, bucket]
    batch (`bucket_length(longest, steps_per_octave)`); missing rows are filled with silence of
    the full bucket length."""
    if not 0 < len(rows) <= batch_size:
        raise ValueError(f"a batch holds 1..{batch_size} rows, got {len(rows)}")
    padded = bucket_length(max(len(wavs[r]) for r in rows), steps_per_octave)
    wav = np.zeros([batch_size, padded], np.float32)
    lengths = np.full([batch_size], padded, np.int32)
    for slot, r in enumerate(rows):
        wav[slot, :len(wavs[r])] = wavs[r]
        lengths[slot] = len(wavs[r])
    index = np.full([batch_size], -1, np.int64)
    index[:len(rows)] = rows
    return Batch(index, wav, lengths)
