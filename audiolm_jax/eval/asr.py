"""ASR of 16 kHz speech with pocketsphinx (its bundled en-us acoustic model, 3-gram LM and
dictionary: nothing is downloaded), and WER/CER with jiwer after one text normaliser.

pocketsphinx is a weak recogniser (about 20-30% WER on flite voices reading ordinary text), so
its figures are for relative comparisons (original vs codec reconstruction vs generation), as
Table II of the paper uses its ASR. Corpus-level rates sum errors over utterances and divide by
the reference length; `wer_summary` adds a bootstrap CI over utterances.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from audiolm_jax.eval.stats import bootstrap_ratio_ci

SAMPLE_RATE = 16000
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces (apostrophes kept inside words), one space between
    words: "And GOD said, 'Let there be light.'" -> "and god said let there be light"."""
    text = _NOT_WORD.sub(" ", text.lower())
    words = [w.strip("'") for w in text.split()]
    return _SPACES.sub(" ", " ".join(w for w in words if w)).strip()


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of one (reference, hypothesis) pair, at word and character level.
    Character counts ignore spaces between words (as jiwer's CER on the normalised text does)."""

    word_errors: int
    ref_words: int
    char_errors: int
    ref_chars: int

    @property
    def wer(self) -> float:
        return self.word_errors / self.ref_words if self.ref_words else float("nan")

    @property
    def cer(self) -> float:
        return self.char_errors / self.ref_chars if self.ref_chars else float("nan")


def error_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """Word and character edit counts after `normalize_text` (an empty hypothesis is all
    deletions; an empty reference is an error the caller should not make)."""
    import jiwer  # noqa: PLC0415

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise ValueError(f"error_counts: the reference {reference!r} is empty after normalisation; "
                         "score only utterances with a transcript")
    words = jiwer.process_words(ref, hyp if hyp else "")
    ref_chars, hyp_chars = ref.replace(" ", ""), (hyp or "").replace(" ", "")
    chars = jiwer.process_characters(ref_chars, hyp_chars if hyp_chars else "")
    return ErrorCounts(word_errors=words.substitutions + words.deletions + words.insertions,
                       ref_words=len(ref.split()),
                       char_errors=chars.substitutions + chars.deletions + chars.insertions,
                       ref_chars=len(ref_chars))


def wer_summary(counts: Sequence[ErrorCounts], seed: int = 0) -> dict:
    """Corpus WER and CER with 95% bootstrap CIs over utterances."""
    we = [c.word_errors for c in counts]
    rw = [c.ref_words for c in counts]
    ce = [c.char_errors for c in counts]
    rc = [c.ref_chars for c in counts]
    return {
        "wer": sum(we) / sum(rw) if sum(rw) else float("nan"),
        "wer_ci95": list(bootstrap_ratio_ci(we, rw, seed=seed)),
        "cer": sum(ce) / sum(rc) if sum(rc) else float("nan"),
        "cer_ci95": list(bootstrap_ratio_ci(ce, rc, seed=seed)),
        "n": len(counts), "ref_words": sum(rw),
    }


class PocketsphinxASR:
    """One pocketsphinx decoder (en-us), reused across utterances. `transcribe(wav)` takes float
    mono 16 kHz audio in [-1, 1] and returns lower-case words ("" when nothing is recognised)."""

    def __init__(self, **config):
        try:
            from pocketsphinx import Decoder  # noqa: PLC0415
        except ImportError as e:
            raise ImportError(f"pocketsphinx is not importable ({e}); `pip install pocketsphinx` "
                              "(its wheel ships the en-us model)") from e
        self._decoder = Decoder(loglevel="ERROR", **config)

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        wav = np.asarray(wav)
        if wav.ndim != 1:
            raise ValueError(f"transcribe expects mono audio [samples], got shape {wav.shape}")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"pocketsphinx's en-us model needs 16 kHz audio, got {sample_rate} Hz; "
                             "resample first (audiolm_jax.audio.resample)")
        pcm = (np.clip(np.nan_to_num(wav.astype(np.float64)), -1.0, 1.0) * 32767.0).astype(np.int16)
        dec = self._decoder
        dec.start_utt()
        dec.process_raw(pcm.tobytes(), full_utt=True)
        dec.end_utt()
        hyp = dec.hyp()
        return normalize_text(hyp.hypstr) if hyp is not None else ""
