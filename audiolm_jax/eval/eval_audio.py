"""The generated audio the evaluation tables score, written as `audiolm-jax eval` matches it.

From held-out prompts (speech: eval-role utterances of `heldout_voices`, `speaker_data`; piano:
the pieces of `heldout_pieces`, each prompted with its opening), under `out`:

    continuation/<id>-s<k>.wav         AudioLM: the first `prompt_seconds` of <id>, then `seconds`
                                       generated (Table III continuation row, detector, ablation)
    acoustic_only/<id>-s<k>.wav        the same prompts continued by the acoustic-only baseline
                                       (ablation; `eval piano --acoustic-only` for piano)
    reconstruction/<id>.wav            <id> through the codec (Table II/III reconstruction row;
                                       the detector's "originals": codec artifacts are no cue)
    acoustic_generation/<id>-s<k>.wav  stages 2-3 from <id>'s semantic tokens (Table II/III;
                                       `acoustic_generation_samples` each, 3 in the paper)

File stems start with the source utterance's id, so `eval/tables.py` finds the speaker and the
transcript; continuations of one prompt by the two systems share a name (`eval piano` pairs them
so). Sources are cut to `max_seconds`. Batches: the continuations of all prompts in one call per
system (prompts cut to one duration), reconstructions in one zero-padded batch; acoustic
generation per utterance (its own duration) between one batched tokenization and one batched
decoding, with bucketed sampling shapes, so utterances of nearby durations share compiled
programs (it compiled once per utterance: 155 s of 251 s for 8 prompts on an H200, session 8).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from audiolm_jax.data.corpus import CorpusIndex, Example

KIND_DIRS = ("continuation", "acoustic_only", "reconstruction", "acoustic_generation")
HELDOUT_PIECES = "heldout_pieces"   # the piano prompts' split (data/piano_world.py)


def choose_prompts(index: CorpusIndex, count: int, min_seconds: float,
                   max_seconds: float = 10.0) -> list[Example]:
    """`count` held-out prompts, taken round-robin over the voices (performers for piano; sorted
    ids within each), so every held-out voice is prompted. Speech (libri_light, librispeech):
    eval-role held-out-voice utterances of [min_seconds, max_seconds]. Piano: held-out pieces of
    at least min_seconds, whatever their length (pieces last minutes; `write_eval_audio` cuts
    the sources and the prompt is a piece's opening)."""
    from audiolm_jax.audio import audio_info  # noqa: PLC0415
    from audiolm_jax.eval.speaker_data import eval_prompts  # noqa: PLC0415

    if index.layout == "piano":
        pool = [e for e in index.examples if e.split == HELDOUT_PIECES
                and audio_info(e.path).duration_s >= min_seconds]
        need = f"a held-out piece (split {HELDOUT_PIECES}) of {min_seconds:g} s or more"
    else:
        pool = eval_prompts(index, min_seconds=min_seconds, max_seconds=max_seconds)
        need = (f"an eval-role held-out-voice utterance (split heldout_voices) of "
                f"{min_seconds:g}-{max_seconds:g} s")
    by_voice: dict[str, list[Example]] = {}
    for e in pool:
        by_voice.setdefault(e.speaker, []).append(e)
    chosen: list[Example] = []
    queues = [list(v) for _, v in sorted(by_voice.items())]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    if not chosen:
        raise ValueError(f"{index.root} ({index.layout} layout) has no {need}")
    return chosen


def write_eval_audio(out: str, examples: Sequence[Example], *, audiolm=None, acoustic_only=None,
                     codec=None, prompt_seconds: float = 3.0, seconds: float = 7.0,
                     max_seconds: float = 10.0, num_samples: int = 1, seed: int = 0,
                     acoustic_generation: bool = True,
                     acoustic_generation_prompts: int | None = None,
                     acoustic_generation_samples: int = 1,
                     progress: Callable[[str], None] = print) -> dict:
    """Writes the directories above for `examples` (those whose system is given: `audiolm`, an
    `AudioLM`; `acoustic_only`, one with acoustic_only=True; `codec` for reconstructions,
    default audiolm's); acoustic generations of the first `acoustic_generation_prompts` examples
    only (None: all; each runs stages 2-3 alone, where continuations share one batch),
    `acoustic_generation_samples` of each. Returns {kind: {"dir", "files", "seconds"}} plus the
    prompt ids."""
    from audiolm_jax.audio import load_audio, save_audio  # noqa: PLC0415
    from audiolm_jax.codec.api import resynthesize_clips  # noqa: PLC0415

    codec = codec if codec is not None else getattr(audiolm or acoustic_only, "codec", None)
    if codec is None:
        raise ValueError("write_eval_audio needs a system or a codec")
    rate = int(codec.sample_rate)
    sources = {e.id: load_audio(e.path, sample_rate=rate)[:int(max_seconds * rate)]
               for e in examples}
    prompt_len = int(round(prompt_seconds * rate))
    short = [i for i, wav in sources.items() if wav.size < prompt_len]
    if short:
        raise ValueError(f"utterances {short} are shorter than the {prompt_seconds:g} s prompt; "
                         "choose longer ones (choose_prompts(min_seconds=...))")
    summary: dict = {"prompts": [e.id for e in examples], "prompt_seconds": prompt_seconds,
                     "continuation_seconds": seconds}

    def record(kind: str, files: list[str], start: float, **extra) -> None:
        summary[kind] = {"dir": os.path.join(out, kind), "files": len(files),
                         "seconds": round(time.perf_counter() - start, 2), **extra}
        progress(f"eval audio: {kind}: {len(files)} files in {summary[kind]['seconds']} s")

    prompts = [sources[e.id][:prompt_len] for e in examples]
    for kind, system in (("continuation", audiolm), ("acoustic_only", acoustic_only)):
        if system is None:
            continue
        start = time.perf_counter()
        generation = system.continuation(prompts, seconds, num_samples=num_samples, seed=seed)
        files = []
        for row, wav in enumerate(generation.wavs):
            e, k = examples[row // num_samples], row % num_samples
            files.append(os.path.join(out, kind, f"{e.id}-s{k}.wav"))
            save_audio(files[-1], wav, sample_rate=rate)
        record(kind, files, start, prompt_seconds_kept=generation.prompt_samples / rate,
               stage_seconds={k: round(float(v), 2) for k, v in generation.seconds.items()})

    start = time.perf_counter()
    files = []
    decoded = resynthesize_clips(codec, [sources[e.id] for e in examples],    # one batch
                                 batch_size=len(examples))
    for e, wav in zip(examples, decoded):
        files.append(os.path.join(out, "reconstruction", f"{e.id}.wav"))
        save_audio(files[-1], wav, sample_rate=rate)
    record("reconstruction", files, start)

    if acoustic_generation and audiolm is not None:
        start = time.perf_counter()
        files = []
        if acoustic_generation_prompts is not None and acoustic_generation_prompts < 1:
            raise ValueError(f"acoustic_generation_prompts={acoustic_generation_prompts}: give "
                             ">= 1, or acoustic_generation=False for none")
        chosen = list(examples)[:acoustic_generation_prompts]
        wavs = acoustic_generations(audiolm, [sources[e.id] for e in chosen], seed=seed,
                                    num_samples=acoustic_generation_samples)
        for e, samples in zip(chosen, wavs):
            for k, wav in enumerate(samples):
                files.append(os.path.join(out, "acoustic_generation", f"{e.id}-s{k}.wav"))
                save_audio(files[-1], wav, sample_rate=rate)
        record("acoustic_generation", files, start)
    return summary


def semantic_batch(wavs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [rows, width] zero-padded batch, int32 [rows] lengths) of each wav's whole 40 ms
    frames, leaving at least one frame of zeros after the longest, as the token caches' batches
    do (`tokens.batching.bucket_length`). Why the frame: w2v-BERT's subsampling convs see past
    a row's end, so a row's features depend on what follows it; with a frame of zeros after
    every row they equal those of the wav tokenized alone with such padding (and the caches')."""
    from audiolm_jax.tokens.batching import SEMANTIC_HOP, pad_batch  # noqa: PLC0415

    whole = [np.asarray(w, np.float32)[:np.asarray(w).size // SEMANTIC_HOP * SEMANTIC_HOP]
             for w in wavs]
    if not whole or min(w.size for w in whole) == 0:
        raise ValueError(f"semantic ids need at least {SEMANTIC_HOP} samples per wav")
    batch = pad_batch(range(len(whole)), whole, len(whole))
    return batch.wav, batch.lengths


def padded_semantic_ids(tokenizer, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Semantic ids of each wav's whole frames, tokenized in one `semantic_batch`."""
    from audiolm_jax.tokens.batching import SEMANTIC_HOP  # noqa: PLC0415

    batch, lengths = semantic_batch(wavs)
    ids = np.asarray(tokenizer.tokenize(batch, lengths), np.int32)
    return [row[:n // SEMANTIC_HOP] for row, n in zip(ids, lengths)]


def acoustic_generations(audiolm, wavs: Sequence[np.ndarray], *, seed: int = 0,
                         num_samples: int = 1, shape_buckets: int = 4) -> list[np.ndarray]:
    """Stages 2-3 from each wav's semantic ids (`AudioLM.acoustic` of each on its own with
    `num_samples`, row i seeded `seed + i`; ids from `padded_semantic_ids`, i.e. as in the token
    caches), with the batching that changes no computation: one tokenization batch, sampling shapes bucketed
    (`shape_buckets` per octave: nearby durations share compiled programs), and the codes
    decoded in one zero-padded batch (the causal decoder's real frames do not see the padding).
    Returns per wav float32 [num_samples, samples], 640 samples per semantic id."""
    import copy  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415

    from audiolm_jax.codec.api import decode_batch  # noqa: PLC0415

    ids = padded_semantic_ids(audiolm.tokenizer, wavs)
    bucketed = copy.copy(audiolm)
    bucketed.config = dataclasses.replace(
        audiolm.config, loop=dataclasses.replace(audiolm.config.loop, shape_buckets=shape_buckets))
    codes = [bucketed.acoustic_codes([row], num_samples=num_samples, seed=seed + i)[0]
             for i, row in enumerate(ids)]                      # each [num_samples, frames, Q]
    frames = max(c.shape[1] for c in codes)
    decoded = decode_batch(audiolm.codec, np.concatenate(
        [np.pad(c, ((0, 0), (0, frames - c.shape[1]), (0, 0))) for c in codes]))
    per_frame = audiolm.rates.samples_per_frame
    rows = np.cumsum([0] + [c.shape[0] for c in codes])
    return [decoded[a:b, :c.shape[1] * per_frame] for a, b, c in zip(rows, rows[1:], codes)]


__all__ = ["KIND_DIRS", "acoustic_generations", "choose_prompts", "padded_semantic_ids",
           "semantic_batch", "write_eval_audio"]
