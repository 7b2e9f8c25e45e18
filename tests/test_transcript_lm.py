"""eval/transcript_lm.py and tables.babble_table: the babbling comparison's transcript scores."""
import math

import numpy as np
import pytest

from audiolm_jax.eval import tables
from audiolm_jax.eval.transcript_lm import WordBigramLM, transcript_summary

TEXTS = ["And God said let there be light", "and there was light",
         "And God saw the light that it was good"]


def test_probabilities_sum_to_one_with_the_unseen_slot():
    lm = WordBigramLM(TEXTS)
    unseen = "zebra"
    assert unseen not in lm.vocabulary
    for prev in ("<s>", "god", "light", "never-seen-history"):
        total = sum(lm.prob(w, prev) for w in lm.vocabulary) + lm.prob(unseen, prev)
        assert total == pytest.approx(1.0, abs=1e-12)
    # every unseen word gets the same (one-slot) probability
    assert lm.prob("zebra", "god") == lm.prob("quark", "god")


def test_known_counts_give_the_hand_computed_bigram():
    lm = WordBigramLM(["a b", "a b", "a c"])     # c(a)=3 as history, n1+(a)=2; N=6, V=3
    p_uni_b = (2 + 1) / (6 + 3 + 1)
    expected = (2 - 0.75) / 3 + 0.75 * 2 / 3 * p_uni_b
    assert lm.prob("b", "a") == pytest.approx(expected)
    bits, words, oov = lm.score("A, b!")
    assert (words, oov) == (2, 0)
    assert bits == pytest.approx(-math.log2(lm.prob("a", "<s>")) - math.log2(expected))


def test_training_like_text_scores_fewer_bits_than_babble():
    lm = WordBigramLM(TEXTS)
    fluent = transcript_summary(lm, ["and god said let there be light", "and there was light"])
    babble = transcript_summary(lm, ["piano quickly seven", "light zebra said car"])
    assert fluent["bits_per_word"] < babble["bits_per_word"] - 3
    assert fluent["in_vocabulary_rate"] == 1.0
    assert babble["in_vocabulary_rate"] == pytest.approx(2 / 7)
    assert (fluent["n"], fluent["words"]) == (2, 11)
    empty = transcript_summary(lm, [""])
    assert math.isnan(empty["bits_per_word"]) and empty["words"] == 0


def test_an_lm_without_text_is_refused():
    with pytest.raises(ValueError, match="no words"):
        WordBigramLM(["", "  ,. "])


def test_babble_table_scores_each_directory_and_the_originals(tmp_path, monkeypatch):
    import soundfile as sf
    from audiolm_jax.data.corpus import scan_corpus
    from audiolm_jax.eval import asr
    from corpus_trees import write_speech_tree

    spec = {"train": {("101", "7"): [1.3, 0.4, 2.0], ("102", "7"): [0.9, 1.7]},
            "heldout_voices": {("201", "7"): [4.0]}}
    paths = write_speech_tree(tmp_path / "c", spec)   # texts: "In the beginning was <id>"
    held = [u for u, p in paths.items() if "heldout_voices" in str(p)][0]
    dirs = {"fluent": tmp_path / "fluent", "babble": tmp_path / "babble"}
    for level, d in zip((0.25, 0.5), dirs.values()):
        d.mkdir()
        sf.write(d / f"{held}-s0.wav", np.full(16000 * 4, level, np.float32), 16000)
        sf.write(d / "nobody-s0.wav", np.zeros(16000, np.float32), 16000)
    seen = []

    class FakeASR:  # stands in for pocketsphinx: the text depends on which audio it hears
        def transcribe(self, wav):
            seen.append(wav.size)
            level = float(np.max(np.abs(wav)))
            return {0.25: "in the beginning was", 0.5: "zebra quark"}.get(
                round(level, 2), "the beginning")

    monkeypatch.setattr(asr, "PocketsphinxASR", FakeASR)
    index = scan_corpus(str(tmp_path / "c"), "libri_light")
    out = tables.babble_table(index, {k: str(v) for k, v in dirs.items()}, skip_seconds=3.0)
    assert seen == [16000, 16000, 16000]                  # the first 3 s (the prompt) are skipped
    assert out["fluent"]["n"] == out["babble"]["n"] == out["original"]["n"] == 1
    assert out["fluent"]["unmatched"] == 1
    assert out["fluent"]["in_vocabulary_rate"] == 1.0
    assert out["babble"]["in_vocabulary_rate"] == 0.0
    assert out["fluent"]["bits_per_word"] < out["babble"]["bits_per_word"]
    assert out["original"]["transcripts"] == {held: "the beginning"}
    # in, the, beginning, was, and the ids' parts 101 102 7 0000 0001 0002
    assert out["lm"]["vocabulary"] == 10
