"""The three AudioLM stages as token-array functions over `sampling.sample`.

    stage 1  semantic ids (deduplicated) -> more semantic ids           generate_semantic
    stage 2  semantic ids + known coarse frames -> coarse codes          generate_coarse
    stage 3  coarse codes -> fine codes, on non-overlapping chunks       generate_fine
    baseline known coarse frames -> coarse codes, no semantic tokens     generate_coarse(None, ...)
             (the acoustic-only model: stage 2's layout without its semantic prefix and SEP)

Sequences follow `audiolm_jax.lm.layouts` exactly as in training (BOS, semantic tokens, SEP,
row-major acoustic tokens with per-level offsets), and every generated position is restricted to
the id range its layout implies. Stages 1 and 2 slide a window over sequences longer than the
training crops (`timing.sliding_windows`): each call's prompt is BOS plus the last part of what
exists, as a training crop taken mid-utterance would be. Stage 3 batches every chunk of every
row in one sampling call (split into `max_batch` rows where memory asks for it). `loop` (a
`sampling.DecodeLoop`) says how the sampling loops compile: bucketed shapes, cache phases,
unrolling, the KV cache's storage.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from audiolm_jax.generate.sampling import DecodeLoop, SamplingConfig, sample
from audiolm_jax.generate.timing import fine_chunks, semantic_span, sliding_windows
from audiolm_jax.lm.layouts import (
    SEP,
    AudioVocabulary,
    acoustic_target_ranges,
    codes_from_tokens,
    flatten_acoustic,
    prompt_tokens,
)
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.shape_buckets import geometric_bucket


def _repeat_rows(rows: list, times: int) -> list:
    return [row for row in rows for _ in range(times)]


def generate_semantic(model: Transformer, vocab: AudioVocabulary, prompts: Sequence[np.ndarray],
                      num_new: int, *, rng: jax.Array, config: SamplingConfig, window: int,
                      num_samples: int = 1, loop: DecodeLoop = DecodeLoop()
                      ) -> list[np.ndarray]:
    """Stage 1: continues each prompt of semantic ids ([0, K), already deduplicated; may be
    empty) by `num_new` ids. `window`: the most semantic tokens the model saw (crop tokens).

    Returns `len(prompts) * num_samples` int32 arrays (prompt-major): prompt + new ids.
    """
    rows = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
    low, high = vocab.semantic_range()
    # Rows of different lengths take the same calls (those of the longest): each row gets
    # `num_new` tokens and at most the context the longest row has.
    longest = max(row.size for row in rows)
    calls = sliding_windows(longest, longest + num_new, window)
    samples = num_samples
    for index, call in enumerate(calls):
        count = call.stop - call.known
        context = call.known - call.start
        prompts_now = [prompt_tokens(row[row.size - min(context, row.size):] + low) for row in rows]
        new = sample(model, prompts_now, count, rng=jax.random.fold_in(rng, index), config=config,
                     allowed=np.tile([[low, high]], (count, 1)), num_samples=samples,
                     **dataclasses.asdict(loop))
        rows = [np.concatenate([row, tokens - low]).astype(np.int32)
                for row, tokens in zip(_repeat_rows(rows, samples), new)]
        samples = 1
    return rows if calls else _repeat_rows(rows, num_samples)


def generate_coarse(model: Transformer, vocab: AudioVocabulary,
                    semantic: Sequence[np.ndarray] | None, known: np.ndarray, total_frames: int, num_coarse: int, *, rng: jax.Array,
                    config: SamplingConfig, window_frames: int,
                    num_samples: int = 1, loop: DecodeLoop = DecodeLoop()) -> np.ndarray:
    """Stage 2: coarse codes of `total_frames` frames per row.

    Args:
      semantic: per row, the (deduplicated) semantic ids of the whole duration; None for the
        acoustic-only model (`layouts.acoustic_sequence`: no semantic prefix, no SEP).
      known: int [rows, known_frames, >= num_coarse] codes already known (the prompt's); 0
        frames for unconditional or acoustic generation.
      window_frames: the most acoustic frames the model saw (crop seconds x 50).
    Returns:
      int32 [rows * num_samples, total_frames, num_coarse] (prompt-major).
    """
    frames = np.asarray(known, np.int32)[:, :, :num_coarse]
    acoustic_only = semantic is None
    rows = ([np.zeros(0, np.int32)] * frames.shape[0] if acoustic_only
            else [np.asarray(s, np.int32).reshape(-1) for s in semantic])
    if frames.shape[0] != len(rows):
        raise ValueError(f"generate_coarse: {len(rows)} semantic rows but {frames.shape[0]} rows of "
                         "known codes; give one of each per prompt")
    low_sem = vocab.semantic_offset
    samples = num_samples
    for index, call in enumerate(sliding_windows(frames.shape[1], total_frames, window_frames)):
        prompts = []
        for row, codes in zip(rows, frames):
            acoustic = flatten_acoustic(codes[call.start:call.known], vocab.codebook_size, 0,
                                        num_coarse) if call.known > call.start else np.zeros(0)
            acoustic = acoustic + vocab.acoustic_offset
            if acoustic_only:
                prompts.append(prompt_tokens(acoustic))
                continue
            a, b = semantic_span(row.size, total_frames, call.start, call.stop)
            prompts.append(prompt_tokens(np.concatenate([row[a:b] + low_sem, [SEP], acoustic])))
        count = (call.stop - call.known) * num_coarse
        tokens = sample(model, prompts, count, rng=jax.random.fold_in(rng, index), config=config,
                        allowed=acoustic_target_ranges(vocab, 0, num_coarse, count),
                        num_samples=samples, **dataclasses.asdict(loop))
        new = np.stack([codes_from_tokens(t, vocab, 0, num_coarse) for t in tokens])
        frames = np.concatenate([np.repeat(frames, samples, axis=0), new], axis=1)
        rows, samples = _repeat_rows(rows, samples), 1
    return np.repeat(frames, samples, axis=0)


def generate_fine(model: Transformer, vocab: AudioVocabulary, coarse: np.ndarray, num_coarse: int,
                  *, rng: jax.Array, config: SamplingConfig, chunk_frames: int,
                  max_batch: int | None = None, loop: DecodeLoop = DecodeLoop()) -> np.ndarray:
    """Stage 3: fine codes (levels num_coarse..Q-1) for coarse codes int [rows, frames, Q'].

    The frames are cut into non-overlapping chunks of `chunk_frames` (3 s in the paper); every
    chunk of every row is one row of the sampling batch (padded up to a bucket of rows when
    `loop.shape_buckets` is set). Returns int32 [rows, frames, Q - Q'].
    """
    coarse = np.asarray(coarse, np.int32)
    rows, frames = coarse.shape[:2]
    num_fine = vocab.num_quantizers - num_coarse
    if num_fine < 1:
        raise ValueError(f"generate_fine: no fine levels (Q={vocab.num_quantizers}, "
                         f"Q'={num_coarse}); skip stage 3 (piano two-stage mode)")
    chunks = fine_chunks(0, frames, chunk_frames)
    jobs = [(r, a, b) for r in range(rows) for a, b in chunks]
    prompts = [prompt_tokens(np.concatenate([
        flatten_acoustic(coarse[r, a:b], vocab.codebook_size, 0, num_coarse)
        + vocab.acoustic_offset, [SEP]])) for r, a, b in jobs]
    longest = max(b - a for _, a, b in jobs)
    count = longest * num_fine
    allowed = acoustic_target_ranges(vocab, num_coarse, vocab.num_quantizers, count)
    batch = len(jobs)
    if loop.shape_buckets is not None:   # the row count too: few programs for many durations
        batch = geometric_bucket(batch, loop.shape_buckets)
    batch = min(max_batch, batch) if max_batch else batch
    out = np.zeros((rows, frames, num_fine), np.int32)
    for index, first in enumerate(range(0, len(jobs), batch)):
        part = prompts[first:first + batch]
        part = part + [part[-1]] * (batch - len(part))   # one shape: one compiled program
        tokens = sample(model, part, count, rng=jax.random.fold_in(rng, index), config=config,
                        allowed=allowed, **dataclasses.asdict(loop))
        for (r, a, b), row_tokens in zip(jobs[first:first + batch], tokens):
            out[r, a:b] = codes_from_tokens(row_tokens[:(b - a) * num_fine], vocab, num_coarse,
                                            vocab.num_quantizers)
    return out
