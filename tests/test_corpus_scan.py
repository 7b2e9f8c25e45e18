"""scan_corpus: every layout, text sources, order, ids, and errors that say what is wrong."""
import io
import logging
import os

import pytest

from audiolm_jax.data import CorpusLayoutError, find_audio, is_audio_name, scan_corpus
from corpus_trees import speech_text, write_piano_tree, write_speech_tree


def test_libri_light_layout_lists_every_utterance_sorted_with_json_text(tmp_path):
    paths = write_speech_tree(tmp_path)
    index = scan_corpus(tmp_path, "libri_light")
    assert index.splits == ("heldout_voices", "train")
    assert [e.id for e in index] == ["201-7-0000", "101-7-0000", "101-7-0001", "101-7-0002",
                                     "102-7-0000", "102-7-0001"]
    assert {e.id: e.path for e in index} == {k: str(v) for k, v in paths.items()}
    e = index.split("train")[3]
    assert (e.split, e.speaker, e.group) == ("train", "102", "7")
    assert e.text == speech_text("102-7-0000")  # Libri-Light: the JSON's text (original case)
    assert e.meta_path == str(paths["102-7-0000"]).replace(".flac", ".json")


def test_libri_light_without_text_falls_back_to_trans_then_none(tmp_path):
    write_speech_tree(tmp_path / "a", json_text=False)
    assert {e.text for e in scan_corpus(tmp_path / "a")} == {
        speech_text(e.id).upper() for e in scan_corpus(tmp_path / "a")}
    write_speech_tree(tmp_path / "b", json_text=False, trans=False)  # real Libri-Light
    assert {e.text for e in scan_corpus(tmp_path / "b")} == {None}


def test_librispeech_layout_takes_trans_txt(tmp_path):
    write_speech_tree(tmp_path)
    index = scan_corpus(tmp_path, "librispeech", splits=["train"])
    assert index.splits == ("train",) and len(index) == 5
    assert all(e.text == speech_text(e.id).upper() for e in index)
    assert index.examples[0].group == "7"  # the chapter


def test_piano_layout_has_performer_piece_and_no_text(tmp_path):
    paths = write_piano_tree(tmp_path)
    index = scan_corpus(tmp_path, "piano")
    assert index.splits == ("heldout_pieces", "train")
    assert len(index) == len(paths)
    e = index.split("train")[0]
    assert (e.id, e.speaker, e.group, e.text) == ("p1-bwv269-00", "p1", "bwv269", None)
    assert e.meta_path.endswith("p1-bwv269-00.json")


def test_scan_is_pure_listing_and_deterministic(tmp_path):
    write_speech_tree(tmp_path)
    (tmp_path / "train/101/7/101-7-0000.flac").write_bytes(b"not decoded by the scan")
    (tmp_path / "train/101/7/.101-7-0009.flac.tmp").write_bytes(b"atomic-write leftover")
    a, b = scan_corpus(tmp_path), scan_corpus(tmp_path)
    assert a == b and len(a) == 6


def test_colliding_stems_get_relative_path_ids_within_a_split(tmp_path):
    write_speech_tree(tmp_path)
    src = tmp_path / "train/101/7/101-7-0000.flac"
    other = tmp_path / "train/102/8/101-7-0000.wav"
    other.parent.mkdir(parents=True)
    other.write_bytes(src.read_bytes())
    ids = [e.id for e in scan_corpus(tmp_path).split("train")]
    assert "train/101/7/101-7-0000" in ids and "train/102/8/101-7-0000" in ids
    assert len(set(ids)) == len(ids) == 6
    # The other split's ids are unaffected.
    assert [e.id for e in scan_corpus(tmp_path).split("heldout_voices")] == ["201-7-0000"]


def test_audio_at_wrong_depth_is_reported_not_listed(tmp_path):
    write_speech_tree(tmp_path)
    stray = tmp_path / "train" / "101" / "stray.flac"
    stray.write_bytes(b"x")
    index = scan_corpus(tmp_path)
    assert str(stray) not in {e.path for e in index}
    assert "wrong depth" in index.problems[str(stray)]


def test_a_stray_file_whose_name_is_not_utf8_is_still_logged(tmp_path):
    # os.walk hands such names back with surrogate escapes; a UTF-8 log stream refuses those,
    # and the logging module then drops the warning (prints "--- Logging error ---" instead).
    write_speech_tree(tmp_path)
    os.close(os.open(os.path.join(os.fsencode(tmp_path), b"train", b"101", b"stray\xff.flac"),
                     os.O_CREAT | os.O_WRONLY))
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("audiolm_jax.data.corpus")
    logger.addHandler(handler)
    try:
        scan_corpus(tmp_path)
    finally:
        logger.removeHandler(handler)
    assert b"stray\\xff.flac: " in stream.buffer.getvalue()


def test_unreadable_json_keeps_the_example_and_reports(tmp_path):
    write_speech_tree(tmp_path)
    meta = tmp_path / "train/101/7/101-7-0001.json"
    meta.write_text("{not json")
    index = scan_corpus(tmp_path)
    e = next(e for e in index if e.id == "101-7-0001")
    assert e.text == speech_text("101-7-0001").upper()  # from trans.txt
    assert "unreadable metadata JSON" in index.problems[str(meta)]


def test_errors_name_root_and_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusLayoutError, match=r"empty.*libri_light.*\{split\}/\{speaker\}"):
        scan_corpus(tmp_path / "empty")
    # Root one level too deep: the files are found, but at the wrong depth -> say so.
    write_speech_tree(tmp_path / "tree")
    with pytest.raises(CorpusLayoutError, match="other depths.*one level too high or low"):
        scan_corpus(tmp_path / "tree" / "train", "piano")
    with pytest.raises(CorpusLayoutError, match=r"split\(s\) \['test'\] not found.*'train'"):
        scan_corpus(tmp_path / "tree", splits=["test"])
    with pytest.raises(ValueError, match="unknown corpus layout 'maestro'"):
        scan_corpus(tmp_path / "tree", "maestro")
    with pytest.raises(KeyError, match="heldout_books"):
        scan_corpus(tmp_path / "tree").split("heldout_books")



def test_find_audio_takes_the_file_or_the_same_stem_in_another_codec(tmp_path):
    (tmp_path / "a.opus").write_bytes(b"x")
    (tmp_path / "b.flac").write_bytes(b"x")
    (tmp_path / "b.wav").write_bytes(b"x")
    # A name recorded as .flac finds the transcoded .opus; a bare stem finds any codec.
    assert find_audio(tmp_path / "a.flac") == str(tmp_path / "a.opus")
    assert find_audio(tmp_path / "a") == str(tmp_path / "a.opus")
    assert find_audio(tmp_path / "b.wav") == str(tmp_path / "b.wav")  # the file itself first
    assert find_audio(tmp_path / "b") == str(tmp_path / "b.flac")  # then AUDIO_EXTENSIONS order
    assert find_audio(tmp_path / "c.flac") is None
    assert is_audio_name("x.OPUS") and is_audio_name("y.flac") and not is_audio_name("x.json")


def test_opus_tree_scans_like_its_flac_original(tmp_path):
    from audiolm_jax.audio import load_audio, save_audio

    write_speech_tree(tmp_path / "flac")
    flac = scan_corpus(tmp_path / "flac")
    for e in flac:
        out = tmp_path / "opus" / e.split / e.speaker / e.group / f"{e.id}.opus"
        save_audio(out, load_audio(e.path), bitrate_kbps=16)
        out.with_suffix(".json").write_bytes(open(e.meta_path, "rb").read())
    opus = scan_corpus(tmp_path / "opus")
    assert [(e.id, e.split, e.speaker, e.group, e.text) for e in opus] == \
           [(e.id, e.split, e.speaker, e.group, e.text) for e in flac]
    assert all(e.path.endswith(".opus") for e in opus)
