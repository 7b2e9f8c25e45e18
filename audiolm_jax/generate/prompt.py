"""Prompt audio for continuation and resynthesis: loaded, checked, made usable or refused.

Handled with a note: several channels (averaged to mono), another sample rate (resampled with
soxr), audio longer than `max_seconds` (its last `max_seconds` kept). Refused with a
`PromptError` naming the file and the fix: unreadable files (the `AudioError`s of
`audiolm_jax.audio`), prompts shorter than `min_seconds`, and silence (peak below -60 dBFS):
a silent prompt gives the semantic tokenizer nothing to continue.
The waveform is cut to whole semantic frames (640 samples) so semantic and acoustic tokens
cover the same time.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from audiolm_jax.audio import audio_info, load_audio
from audiolm_jax.generate.timing import TokenRates

SILENCE_PEAK = 1e-3   # -60 dBFS


class PromptError(ValueError):
    """A prompt that cannot be used; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    """wav: float32 [samples] mono at the model rate, samples a multiple of 640."""
    wav: np.ndarray
    source: str
    notes: tuple[str, ...]

    @property
    def num_samples(self) -> int:
        return int(self.wav.shape[0])


def check_prompt(wav: np.ndarray, source: str, *, rates: TokenRates = TokenRates(),
                 min_seconds: float = 1.0, max_seconds: float | None = None,
                 notes: tuple[str, ...] = ()) -> Prompt:
    """A mono float waveform at `rates.sample_rate` -> a checked `Prompt` (see module doc)."""
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise PromptError(f"{source}: prompt audio must be mono [samples], got shape {wav.shape}; "
                          "average the channels first (audiolm_jax.audio.to_mono)")
    if not np.all(np.isfinite(wav)):
        raise PromptError(f"{source}: the prompt has NaN/Inf samples; re-export the audio")
    seconds = wav.shape[0] / rates.sample_rate
    if seconds < min_seconds:
        raise PromptError(f"{source}: the prompt is {seconds:.2f} s long; continuation needs at "
                          f"least {min_seconds:g} s (AudioLM uses 3 s). Fix: give a longer "
                          "prompt or lower --min-prompt-seconds")
    notes = list(notes)
    if max_seconds is not None and seconds > max_seconds:
        wav = wav[-int(round(max_seconds * rates.sample_rate)):]
        notes.append(f"kept the last {max_seconds:g} s of the {seconds:.2f} s prompt")
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak < SILENCE_PEAK:
        raise PromptError(f"{source}: the prompt is silent (peak {peak:.1e}, below -60 dBFS); "
                          "there is nothing to continue. Fix: pick audio with speech or music "
                          "in it, or normalise its level")
    wav = wav[:rates.whole_semantic_samples(wav.shape[0])]
    return Prompt(np.ascontiguousarray(wav), source, tuple(notes))


def load_prompt(path: str | os.PathLike, *, rates: TokenRates = TokenRates(),
                min_seconds: float = 1.0, max_seconds: float | None = None) -> Prompt:
    """Reads an audio file as a prompt: downmix and resample with a note, refuse what cannot
    be used (PromptError, which includes the audio reader's own errors)."""
    path = os.fspath(path)
    try:
        info = audio_info(path)
        wav = load_audio(path, sample_rate=rates.sample_rate)
    except ValueError as e:          # AudioError subclasses: missing, corrupt, empty, not audio
        raise PromptError(str(e)) from e
    notes = []
    if info.channels > 1:
        notes.append(f"mixed {info.channels} channels down to mono")
    if info.sample_rate != rates.sample_rate:
        notes.append(f"resampled {info.sample_rate} Hz to {rates.sample_rate} Hz")
    return check_prompt(wav, path, rates=rates, min_seconds=min_seconds, max_seconds=max_seconds,
                        notes=tuple(notes))
