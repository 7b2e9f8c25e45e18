"""How much a continuation's transcript reads like the training text: the paper's "babbling"
comparison (sec. IV-F: without semantic tokens the model keeps the voice but loses the words)
made measurable without a reference transcript.

A generated continuation has no reference text, so WER is undefined. Instead its ASR transcript
is scored by a word bigram model of the training split's transcripts (interpolated absolute
discounting, Ney et al. 1994, with an add-one unigram that keeps unseen words finite):
- `bits_per_word`: mean -log2 p(word | previous word) over the transcript's words;
- `in_vocabulary_rate`: fraction of recognised words that occur in the training text.
Speech built from the training language (the held-out originals, AudioLM's continuations) should
score fewer bits and more in-vocabulary words than babbling, whose recognised words are whatever
the recogniser's own lexicon and LM make of it.
"""
from __future__ import annotations

import collections
import math
from typing import Iterable, Sequence

import numpy as np

from audiolm_jax.eval.asr import normalize_text
from audiolm_jax.eval.stats import bootstrap_ci, bootstrap_ratio_ci

BOS = "<s>"


class WordBigramLM:
    """Interpolated absolute-discount bigram over normalised words.

    p(w | v) = max(c(v, w) - D, 0) / c(v) + D * n1+(v) / c(v) * p_uni(w), and p_uni(w) =
    (c(w) + 1) / (N + V + 1) where V is the vocabulary and the +1 slot holds every unseen word.
    A history never seen falls back to p_uni.
    """

    def __init__(self, texts: Iterable[str], discount: float = 0.75):
        if not 0.0 < discount < 1.0:
            raise ValueError(f"WordBigramLM: discount={discount}; use a value in (0, 1)")
        self.discount = discount
        self.unigrams: collections.Counter = collections.Counter()
        self.bigrams: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for text in texts:
            words = normalize_text(text).split()
            self.unigrams.update(words)
            for prev, word in zip([BOS] + words, words):
                self.bigrams[prev][word] += 1
        if not self.unigrams:
            raise ValueError("WordBigramLM: no words in the training texts (does the corpus's "
                             "train split carry transcripts?)")
        self._total = sum(self.unigrams.values())
        self._history_totals = {v: sum(c.values()) for v, c in self.bigrams.items()}

    @property
    def vocabulary(self) -> set[str]:
        return set(self.unigrams)

    def unigram_prob(self, word: str) -> float:
        return (self.unigrams.get(word, 0) + 1) / (self._total + len(self.unigrams) + 1)

    def prob(self, word: str, prev: str) -> float:
        following = self.bigrams.get(prev)
        if not following:
            return self.unigram_prob(word)
        total = self._history_totals[prev]
        discounted = max(following.get(word, 0) - self.discount, 0.0) / total
        backoff = self.discount * len(following) / total
        return discounted + backoff * self.unigram_prob(word)

    def score(self, text: str) -> tuple[float, int, int]:
        """(total -log2 probability, words, words outside the vocabulary) of a text."""
        words = normalize_text(text).split()
        bits = -sum(math.log2(self.prob(w, v)) for v, w in zip([BOS] + words, words))
        return bits, len(words), sum(w not in self.unigrams for w in words)


def transcript_summary(lm: WordBigramLM, transcripts: Sequence[str], seed: int = 0) -> dict:
    """Corpus bits per word and in-vocabulary rate (bootstrap CIs over transcripts) and the mean
    number of recognised words per transcript."""
    scored = [lm.score(t) for t in transcripts]
    bits = [s[0] for s in scored]
    words = [s[1] for s in scored]
    inside = [s[1] - s[2] for s in scored]
    total = sum(words)
    return {
        "bits_per_word": sum(bits) / total if total else math.nan,
        "bits_per_word_ci95": list(bootstrap_ratio_ci(bits, words, seed=seed)),
        "in_vocabulary_rate": sum(inside) / total if total else math.nan,
        "in_vocabulary_rate_ci95": list(bootstrap_ratio_ci(inside, words, seed=seed)),
        "words_per_transcript": float(np.mean(words)) if words else math.nan,
        "words_per_transcript_ci95": list(bootstrap_ci(words, seed=seed)),
        "n": len(transcripts), "words": total,
    }
