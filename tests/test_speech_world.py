"""The speech small world: layout, timings, transcripts, splits, determinism, resume, lexicon."""
import json
import os
import shutil

import numpy as np
import pytest

from audiolm_jax.audio import audio_info, load_audio
from audiolm_jax.data import bible_text, speech_voices
from audiolm_jax.data.bible_text import Verse
from audiolm_jax.data.speech_world import SPLITS, build_speech_world, plan_speech_world

TOOLS = ("bible", "flite", "t2p", "festival", "sox")
tools_missing = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                   reason=f"needs {', '.join(TOOLS)} (make tools)")


def _files(root, ext):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(ext):
                out[os.path.relpath(os.path.join(dirpath, f), root)] = os.path.join(dirpath, f)
    return out


def _tree_bytes(root):
    out = {}
    for ext in (".flac", ".json", ".trans.txt"):
        for rel, path in _files(root, ext).items():
            if rel != "summary.json":
                with open(path, "rb") as fh:
                    out[rel] = fh.read()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("speech") / "world")
    summary = build_speech_world(root, hours=0.01, seed=3, workers=2, progress=False)
    return root, summary


# ----------------------------------------------------------------------------- pure parts

def test_parse_bible_output_reads_headers_and_verses():
    lines = ["", "1 Samuel 3", "", "  1 And the child Samuel ministered.", "  2 And it came to pass,",
             "Song of Solomon 2", "  7 I charge you, O ye daughters of Jerusalem."]
    verses = bible_text.parse_bible_output(lines)
    assert [(v.book, v.book_id, v.chapter, v.verse) for v in verses] == [
        ("1 Samuel", "1samuel", 3, 1), ("1 Samuel", "1samuel", 3, 2),
        ("Song of Solomon", "songofsolomon", 2, 7)]
    assert verses[1].text == "And it came to pass,"


def test_text_forms():
    text = "And the LORD said, Am I my brother's keeper? Go to Beth-el; the judges' (seat)."
    assert bible_text.transcript(text) == ("AND THE LORD SAID AM I MY BROTHER'S KEEPER GO TO BETH EL "
                                           "THE JUDGES SEAT")
    assert bible_text.tts_text("I AM THAT I AM, saith the LORD of Beth-el") == \
        "I Am That I Am, saith the Lord of Beth el"


def test_lexicon_drops_a_verse_with_an_out_of_lexicon_name(tmp_path):
    lexicon = bible_text.load_lexicon()
    name_list = "And unto Enoch was born Irad: and Irad begat Mehujael."
    assert bible_text.out_of_lexicon(bible_text.transcript_words(name_list), lexicon) == ["IRAD", "MEHUJAEL"]
    assert bible_text.out_of_lexicon(bible_text.transcript_words("And God saw the light."), lexicon) == []
    # In a plan, the name list is skipped with its reason and the verses around it are read.
    verses = [Verse("Genesis", "genesis", 4, 17, "And Cain knew his wife."),
              Verse("Genesis", "genesis", 4, 18, name_list),
              Verse("Genesis", "genesis", 4, 19, "And the light was good.")]
    verses += [Verse(b, b.lower(), 1, 1, "And God saw the light.") for b in ("Exodus", "Ruth", "Jude")]
    plan = plan_speech_world(str(tmp_path), verses, lexicon, hours=1.0, seed=0)
    read = {t.verse.ref for t in plan.tasks}
    assert "Genesis 4:18" not in read
    assert {"Genesis 4:17", "Genesis 4:19"} <= read
    drops = [s for s in plan.skipped if "Genesis 4:18" in s.item]
    assert drops and all(s.kind == "out_of_lexicon" and "IRAD MEHUJAEL" in s.reason for s in drops)
    assert plan.verses_in_lexicon == len(verses) - 1


def test_plan_is_a_function_of_the_seed(tmp_path):
    verses = bible_text.parse_bible_output(
        [f"{b} {c}" if i == 0 else f"  {i} And God saw the light, and it was good."
         for b in ("Genesis", "Exodus", "Ruth", "Jude") for c in (1, 2) for i in range(6)])
    lexicon = bible_text.load_lexicon()
    a, b, c = (plan_speech_world(str(tmp_path), verses, lexicon, 0.02, seed=s) for s in (1, 1, 2))
    assert a == b
    assert [t.utt_id for t in a.tasks] != [t.utt_id for t in c.tasks] or a.heldout_books != c.heldout_books


def test_psdur_and_word_alignment():
    phones = speech_voices.parse_psdur("pau:0.200 ae:0.300 n:0.350 d:0.400 g:0.500 aa:0.600 d:0.700 pau:0.900\n")
    assert phones[0] == ("pau", 0.0, 0.2) and phones[-1] == ("pau", 0.7, 0.9)
    words = speech_voices.align_words(phones, [["ae1", "n", "d"], ["g", "aa1", "d"]], ["AND", "GOD"])
    assert words == [("AND", 0.2, 0.4), ("GOD", 0.4, 0.7)]
    # A phone count that does not add up gives no word timings rather than wrong ones.
    assert speech_voices.align_words(phones, [["ae1", "n"], ["g", "aa1", "d"]], ["AND", "GOD"]) is None
    # Festival's "king's" is "king" plus a segment-less "'s" word.
    festival = [("KING", 0.1, 0.5), ("'S", 0.0, 0.0), ("SON", 0.5, 0.9)]
    assert speech_voices.relabel_words(festival, ["KING'S", "SON"]) == [("KING'S", 0.1, 0.5), ("SON", 0.5, 0.9)]
    assert speech_voices.relabel_words(festival, ["KING'S", "SON", "CAME"]) is None
    assert speech_voices.clip_timings([("t", 0.5, 1.0), ("pau", 1.0, 1.3)], 1.1) == [("t", 0.5, 1.0),
                                                                                      ("pau", 1.0, 1.1)]


def test_voice_inventory_is_honest():
    counts = speech_voices.voice_counts(speech_voices.VOICES)
    assert counts["voices"] >= 10 and counts["base_voices"] >= 7
    assert counts["source_speakers"] < counts["base_voices"]  # kal and slt each behind two engines
    train = [v for v in speech_voices.VOICES if not v.heldout]
    heldout = [v for v in speech_voices.VOICES if v.heldout]
    assert len(heldout) == 2 and {v.engine for v in heldout} == {"flite", "festival"}
    # Held-out voices are whole base voices of people never heard in train.
    assert not {v.source_speaker for v in heldout} & {v.source_speaker for v in train}
    assert all("-" not in v.name for v in speech_voices.VOICES)


# ----------------------------------------------------------------------------- builds

@pytest.mark.needs_tools
@tools_missing
def test_synthesis_failure_is_a_skip_with_reason(tmp_path):
    voice = speech_voices.Voice("festival_nobody", "festival", "no_such_voice_diphone", "nobody")
    with pytest.raises(speech_voices.SynthesisError) as err:
        speech_voices.synthesize(voice, "And God saw the light.", ["AND", "GOD", "SAW", "THE", "LIGHT"],
                                 str(tmp_path))
    assert err.value.kind == "synthesis_failed" and "no_such_voice_diphone" in err.value.reason


@pytest.mark.needs_tools
@tools_missing
def test_layout_audio_timings_and_transcripts(world):
    root, summary = world
    flacs = _files(root, ".flac")
    assert flacs and summary["utterances"]["total"] == len(flacs)
    for split in SPLITS:
        assert summary["utterances"][split] == sum(rel.startswith(split + os.sep) for rel in flacs) > 0
    with_words = 0
    for rel, path in flacs.items():
        split, speaker, book, name = rel.split(os.sep)
        assert name == f"{speaker}-{book}-{name.split('-')[-1]}" and name.split("-")[-1][:4].isdigit()
        info = audio_info(path)
        assert (info.sample_rate, info.channels, info.format) == (16000, 1, "FLAC")
        with open(path[:-5] + ".json", encoding="utf-8") as fh:
            meta = json.load(fh)
        assert (meta["speaker"], meta["voice"], meta["book"]) == (speaker, speaker, book)
        assert meta["duration"] == pytest.approx(info.frames / 16000)
        assert meta["sample_rate"] == 16000 and meta["text"] and isinstance(meta["verse"], int)
        starts, ends = zip(*[(p[1], p[2]) for p in meta["phones"]])
        assert all(s < e for s, e in zip(starts, ends)) and list(starts[1:]) == list(ends[:-1])
        assert abs(ends[-1] - meta["duration"]) <= 0.15, (rel, ends[-1], meta["duration"])
        if "words" in meta:
            assert [w[0] for w in meta["words"]] == meta["transcript"].split()
            with_words += 1
        trans = os.path.join(os.path.dirname(path), f"{speaker}-{book}.trans.txt")
        with open(trans, encoding="utf-8") as fh:
            lines = dict(line.rstrip("\n").split(" ", 1) for line in fh)
        assert lines[name[:-5]] == bible_text.transcript(meta["text"]) == meta["transcript"]
        assert np.abs(load_audio(path)).max() > 0.1  # not silence
    assert with_words >= 0.9 * len(flacs)  # word timings are stored only where they align
    # Every voice said something, and the summary counts voices honestly.
    assert {rel.split(os.sep)[1] for rel in flacs} == {v.name for v in speech_voices.VOICES}
    assert summary["voices"]["voices"] == 12 and summary["voices"]["base_voices"] == 7
    assert summary["voices"]["source_speakers"] == 5
    assert summary["lexicon"]["verses"] == 31102 and 0 < summary["lexicon"]["verses_in_lexicon"] < 31102
    assert summary["skipped"]["counts"].get("out_of_lexicon", 0) == summary["skipped"]["total"]
    with open(os.path.join(root, "summary.json"), encoding="utf-8") as fh:
        assert json.load(fh) == summary


@pytest.mark.needs_tools
@tools_missing
def test_splits_are_disjoint(world):
    root, summary = world
    speakers = {s: set(os.listdir(os.path.join(root, s))) for s in SPLITS}
    books = {s: {b for spk in speakers[s] for b in os.listdir(os.path.join(root, s, spk))} for s in SPLITS}
    assert not speakers["heldout_voices"] & (speakers["train"] | speakers["heldout_books"])
    assert not books["heldout_books"] & (books["train"] | books["heldout_voices"])
    assert books["heldout_books"] <= set(summary["books"]["heldout"])
    assert speakers["heldout_voices"] == {"flite_awb", "festival_ked"}


@pytest.mark.needs_tools
@tools_missing
def test_same_seed_same_bytes_any_workers_and_resume_rebuilds_only_the_missing(world, tmp_path):
    root, summary = world
    again = str(tmp_path / "again")
    summary1 = build_speech_world(again, hours=0.01, seed=3, workers=1, progress=False)
    assert _tree_bytes(again) == _tree_bytes(root)
    assert {k: v for k, v in summary1.items() if k != "build"} == \
        {k: v for k, v in summary.items() if k != "build"}

    victim = sorted(_files(again, ".flac").values())[1]
    before = {p: os.stat(p).st_mtime_ns for p in _files(again, ".flac").values()}
    os.remove(victim)
    os.remove(victim[:-5] + ".json")
    leftover = os.path.join(os.path.dirname(victim), "." + os.path.basename(victim) + ".x1y2.tmp")
    open(leftover, "wb").close()  # what a build killed mid-write leaves
    resumed = build_speech_world(again, hours=0.01, seed=3, workers=1, progress=False)
    assert resumed["build"]["built"] == 1
    assert resumed["build"]["reused"] == summary["utterances"]["total"] - 1
    assert all(os.stat(p).st_mtime_ns == t for p, t in before.items() if p != victim)
    assert _tree_bytes(again) == _tree_bytes(root)
    assert not os.path.exists(leftover)
