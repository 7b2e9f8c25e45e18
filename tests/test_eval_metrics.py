"""Evaluation helpers: CIs, WER on known strings, pair scoring with length normalisation, the
sWUGGY/sBLIMP generators, piano key finding and win rates, the detector's split and accuracy."""
import random

import numpy as np
import pytest

from audiolm_jax.eval import asr, detector, pairs, piano_metrics, stats, tables


# --- confidence intervals -------------------------------------------------------------------

def test_wilson_known_values_and_edges():
    lo, hi = stats.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = stats.wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    assert stats.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(np.isnan(stats.wilson_interval(0, 0)))
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    x = np.random.default_rng(0).normal(3.0, 1.0, 50)
    lo, hi = stats.bootstrap_ci(x, seed=3)
    assert lo < x.mean() < hi and (lo, hi) == stats.bootstrap_ci(x, seed=3)
    num, den = [1, 0, 3, 2], [10, 5, 10, 5]
    lo, hi = stats.bootstrap_ratio_ci(num, den)
    assert lo <= sum(num) / sum(den) <= hi
    summary = stats.accuracy_summary([1, 1, 0, 0.5])
    assert summary["value"] == pytest.approx(0.625) and summary["n"] == 4


# --- ASR / WER --------------------------------------------------------------------------------

def test_normalize_and_error_counts_on_known_strings():
    assert asr.normalize_text("And GOD said, 'Let there be light.'") == "and god said let there be light"
    c = asr.error_counts("the cat sat on the mat", "The cat SIT on mat.")
    assert (c.word_errors, c.ref_words) == (2, 6) and c.wer == pytest.approx(2 / 6)
    assert (c.char_errors, c.ref_chars) == (4, 17)
    assert asr.error_counts("in the beginning", "").word_errors == 3
    assert asr.error_counts("a b", "a b c").word_errors == 1  # an insertion
    with pytest.raises(ValueError, match="empty"):
        asr.error_counts("...", "x")
    summary = asr.wer_summary([asr.error_counts("a b c d", "a b c d"), asr.error_counts("a b", "a x")])
    assert summary["wer"] == pytest.approx(1 / 6) and summary["n"] == 2


def test_pocketsphinx_transcribes_deterministically_to_normalised_text():
    recogniser = asr.PocketsphinxASR()
    noise = np.random.default_rng(0).normal(0, 0.05, 16000).astype(np.float32)
    text = recogniser.transcribe(noise)
    assert text == asr.normalize_text(text) and text == recogniser.transcribe(noise)
    with pytest.raises(ValueError, match="16 kHz"):
        recogniser.transcribe(np.zeros(100, np.float32), sample_rate=8000)


# --- pairs --------------------------------------------------------------------------------------

def test_score_pairs_normalises_by_length():
    # Stub model: a member is a (sum log p, tokens) tuple itself.
    ident = lambda x: x  # noqa: E731
    # Raw sums favour the shorter "bad" member; per token, the good one is likelier.
    result = pairs.score_pairs(ident, [((-20.0, 10), (-9.0, 3)),    # good -2.0 vs bad -3.0: win
                                       ((-6.0, 2), (-4.0, 2)),      # good -3.0 vs bad -2.0: loss
                                       ((-4.0, 2), (-2.0, 1))])     # tie: half
    assert result["accuracy"] == pytest.approx(0.5) and result["n"] == 3
    np.testing.assert_allclose(result["margins"], [1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="tokens"):
        pairs.score_pairs(ident, [((0.0, 0), (0.0, 1))])


def test_nonwords_are_matched_legal_and_not_words():
    lexicon = ["strength", "string", "strong", "bring", "brother", "mother", "other", "blind",
               "cling", "clash", "grass", "glass", "blast", "trust", "stand", "brand", "grand",
               "grind", "print", "sprint", "strand", "crest", "chest", "brush", "crush"] * 1
    phon = pairs.Phonotactics.from_words(lexicon)
    rng = random.Random(0)
    made = [pairs.make_nonword(w, phon, rng, min_count=1) for w in lexicon]
    made = [(w, n) for w, n in zip(lexicon, made) if n]
    assert len(made) >= 10
    for word, nonword in made:
        assert nonword != word and not phon.is_word_form(nonword) and phon.legal(nonword)
        assert abs(len(nonword) - len(word)) <= 1
    assert pairs.letter_clusters("strength") == ["str", "e", "ngth"]
    assert pairs.letter_clusters("yes") == ["y", "e", "s"]


def test_syntactic_pairs_are_minimal_and_deterministic():
    made = pairs.syntactic_pairs(3, seed=1)
    assert made == pairs.syntactic_pairs(3, seed=1)
    assert len(made) == 3 * 5
    for good, bad, phenomenon in made:
        g, b = good.split(), bad.split()
        assert good != bad and len(g) == len(b)
        differ = sum(x != y for x, y in zip(g, b))
        assert differ == (2 if phenomenon == "determiner_noun_order" else 1)


def test_plan_pairs_lays_out_both_kinds_per_voice():
    items = pairs.plan_pairs(2, 1, ["flite_awb", "festival_ked"],
                             ["strength", "brother", "mother", "grass"],
                             ["strength", "brother", "mother", "grass", "string", "other",
                              "bring", "cling", "glass", "blast", "trust", "stand"], min_count=1)
    kinds = {(it.kind, it.voice) for it in items}
    assert kinds == {(k, v) for k in ("swuggy", "sblimp") for v in ("flite_awb", "festival_ked")}
    assert all(it.good_path.endswith("_good.flac") and it.kind in it.good_path for it in items)


def test_load_pairs_finds_members_transcoded_to_another_codec(tmp_path):
    import dataclasses
    import json

    items = pairs.plan_pairs(0, 1, ["flite_awb"], [], [], min_count=1)
    manifest = {"format": "audiolm_jax.pairs/1", "items": [dataclasses.asdict(it) for it in items]}
    (tmp_path / pairs.MANIFEST).write_text(json.dumps(manifest))
    first = items[0]
    # pack_corpus.py keeps pairs.json as built (.flac names) and writes {stem}.opus.
    (tmp_path / first.good_path).parent.mkdir(parents=True)
    (tmp_path / first.good_path).with_suffix(".opus").write_bytes(b"OggS")
    loaded = pairs.load_pairs(str(tmp_path))
    assert loaded[0].good_path == first.good_path[:-len(".flac")] + ".opus"
    assert loaded[0].bad_path == first.bad_path  # nothing there: the name stays, for the error
    assert loaded[1:] == items[1:]


# --- piano ----------------------------------------------------------------------------------------

def test_key_finding_and_pairwise_win():
    for tonic in (0, 7):
        assert piano_metrics.estimate_key(np.roll(piano_metrics._MAJOR, tonic))[0] == tonic
    assert piano_metrics.estimate_key(np.roll(piano_metrics._MINOR, 9))[0] == 12 + 9
    good = {m: 0.9 for m in piano_metrics.METRICS}
    bad = {m: 0.1 for m in piano_metrics.METRICS}
    mixed = dict(good, key_agreement=0.0, range_overlap=0.0, chroma_similarity=0.0)
    assert piano_metrics.pair_outcome(good, bad) == 1.0
    assert piano_metrics.pair_outcome(bad, good) == 0.0
    assert piano_metrics.pair_outcome(mixed, dict(bad, key_agreement=0.9, range_overlap=0.9,
                                                  chroma_similarity=0.9)) == 0.5
    result = piano_metrics.pairwise_win([good, good, bad, mixed], [bad, bad, good, mixed])
    assert result["win_rate"] == pytest.approx(2.5 / 4) and result["n"] == 4
    assert result["ci95"][0] < 0.625 < result["ci95"][1]
    with pytest.raises(ValueError, match="same prompts"):
        piano_metrics.pairwise_win([good], [])
    # 8 samples of each of 2 prompts: all won on one, all lost on the other. Over 16 pairs
    # Wilson's interval looks informative; resampling the 2 prompts shows it is not.
    a, b = [good] * 8 + [bad] * 8, [bad] * 8 + [good] * 8
    grouped = piano_metrics.pairwise_win(a, b, groups=["p1"] * 8 + ["p2"] * 8)
    assert grouped["win_rate"] == 0.5 and grouped["groups"] == 2
    assert grouped["ci95_by_group"] == [0.0, 1.0]
    assert 0.2 < grouped["ci95"][0] and grouped["ci95"][1] < 0.8
    mixed_groups = piano_metrics.pairwise_win(a, b, groups=["p1", "p2"] * 8)   # each 4 of 8
    assert mixed_groups["ci95_by_group"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="group labels"):
        piano_metrics.pairwise_win(a, b, groups=["p1"])


# --- detector and table plumbing ------------------------------------------------------------------

def test_detector_split_keeps_a_prompts_samples_together_and_accuracy_is_balanced():
    paths = [f"/g/utt{i}-s{k}.wav" for i in range(40) for k in range(3)]
    held = {detector.group_of(p): detector.is_heldout(p) for p in paths}
    assert all(detector.is_heldout(p) == held[detector.group_of(p)] for p in paths)
    assert 0 < sum(held.values()) < 40
    files = [detector.LabelledFile(f"o{i}", 0) for i in range(6)] + \
            [detector.LabelledFile(f"g{i}", 1) for i in range(2)]
    assert [f.label for f in detector.balanced_subset(files)].count(0) == 2
    result = detector.balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1])
    assert result["accuracy"] == 0.75 and result["balanced_accuracy"] == 0.75
    result = detector.balanced_accuracy([0, 0, 0, 0], [0, 0, 0, 1])
    assert result["accuracy"] == 0.75 and result["balanced_accuracy"] == 0.5


def test_generated_files_match_their_source_by_longest_id_prefix():
    from audiolm_jax.data.corpus import Example
    by_id = {i: Example(id=i, path="", split="s", speaker=i.split("-")[0], group="g")
             for i in ("flite_awb-luke-0003", "flite_awb-luke-00", "a-b-1")}
    assert tables.match_source("flite_awb-luke-0003-s0", by_id).id == "flite_awb-luke-0003"
    assert tables.match_source("flite_awb-luke-0003", by_id).id == "flite_awb-luke-0003"
    assert tables.match_source("a-b-12", by_id) is None
    assert tables.match_source("a-b-1_sample2", by_id).id == "a-b-1"


def test_eval_command_names_the_missing_inputs(tmp_path):
    from audiolm_jax.cli import main
    with pytest.raises(SystemExit, match="--audiolm --acoustic-only"):
        main(["eval", "piano", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--classifier"):
        main(["eval", "speaker", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", "speaker", "--classifier", str(tmp_path / "nope")])
    assert not (tmp_path / "x.json").exists()


def test_eval_detector_refuses_a_heldout_part_without_both_classes(tmp_path):
    import soundfile as sf

    from audiolm_jax.cli import main
    for folder, name in (("orig", "u-0001.wav"), ("gen", "u-0001-s0.wav")):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / name, np.zeros(16000, np.float32), 16000)
    (tmp_path / "det").mkdir()
    with pytest.raises(SystemExit, match="not both classes"):
        main(["eval", "detector", "--originals", str(tmp_path / "orig"), "--continuation",
              str(tmp_path / "gen"), "--workdir", str(tmp_path / "det"), "--heldout-fraction", "0",
              "--out", str(tmp_path / "x.json")])
    assert not list((tmp_path / "det").iterdir()) and not (tmp_path / "x.json").exists()


def test_detector_trains_without_gin_and_loads_back(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(0)
    for folder, suffix, scale in (("orig", "", 0.1), ("gen", "-s0", 0.5)):
        (tmp_path / folder).mkdir()
        for i in range(6):
            sf.write(tmp_path / folder / f"u-{i:04d}{suffix}.wav",
                     (scale * rng.standard_normal(32000)).astype(np.float32), 16000)
    detector.train_detector(str(tmp_path / "orig"), str(tmp_path / "gen"), str(tmp_path / "det"),
                            channels=(4, 8), steps=1, batch_size=8, skip_seconds=0.5,
                            heldout_fraction=0.5)
    model = detector.load_detector(str(tmp_path / "det"), channels=(4, 8))
    assert tuple(model.config.labels) == detector.LABELS
    files = detector.detector_files(str(tmp_path / "orig"), str(tmp_path / "gen"), "eval", 0.5)
    assert detector.evaluate_detector(model, files, 0.5)["n"] >= 2
