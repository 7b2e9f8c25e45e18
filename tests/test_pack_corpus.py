"""benchmarks/pack_corpus.py: a corpus tree copied with its audio as Opus, sidecars as they were,
resumable, and readable by the corpus consumers (scan, crop reader, ABX split, pairs)."""
import json
import os
import sys

import numpy as np
import pytest

from audiolm_jax.audio import audio_info, load_audio
from audiolm_jax.data import AudioCropReader, scan_corpus
from audiolm_jax.eval import abx_corpus
from audiolm_jax.eval.codec_metrics import mel_distance
from corpus_trees import write_speech_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import pack_corpus  # noqa: E402


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


@pytest.fixture
def packed(tmp_path):
    src, dst = tmp_path / "speech", tmp_path / "packed"
    write_speech_tree(src)
    phones = [["pau", 0.0, 0.1], ["a", 0.1, 0.3], ["b", 0.3, 0.5], ["c", 0.5, 0.7],
              ["pau", 0.7, 1.0]]
    for meta in src.rglob("*.json"):  # phone timings, as the speech world writes them
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "phones": phones}))
    (src / "summary.json").write_text('{"corpus": "tiny"}\n')
    (src / "train" / "101" / "7" / ".101-7-0000.flac.tmp").write_bytes(b"leftover")
    report = pack_corpus.pack(str(src), str(dst), bitrate_kbps=24, quality_files=2)
    return src, dst, report


def test_pack_mirrors_the_tree_with_opus_audio_and_identical_sidecars(packed):
    src, dst, report = packed
    source_files = [f for f in _files(src) if not os.path.basename(f).startswith(".")]
    expected = sorted([f[:-len(".flac")] + ".opus" if f.endswith(".flac") else f
                       for f in source_files] + [pack_corpus.REPORT])
    assert _files(dst) == expected
    for rel in source_files:
        if not rel.endswith(".flac"):
            assert (dst / rel).read_bytes() == (src / rel).read_bytes(), rel
            continue
        opus = dst / (rel[:-len(".flac")] + ".opus")
        info = audio_info(opus)
        assert (info.format, info.subtype, info.sample_rate, info.channels) == \
               ("OGG", "OPUS", 16000, 1)
        ref, deg = load_audio(src / rel), load_audio(opus)
        assert len(deg) == len(ref)  # libsndfile handles Opus' pre-skip and end trim
        assert mel_distance(ref, deg) < 0.6, rel
    files, size = report["files"], report["bytes"]
    assert (files["audio"], files["transcoded"], files["skipped"], files["failed"]) == (6, 6, 0, 0)
    assert files["other"] == files["copied"] == len(source_files) - 6
    assert size["audio_after"] < size["audio_before"] / 3
    assert report["hours"] == pytest.approx(sum([1.3, 0.4, 2.0, 0.9, 1.7, 1.1]) / 3600, rel=1e-3)
    quality = report["quality"]
    assert quality["files"] == 2 and quality["max_length_difference_samples"] == 0
    assert 0 < quality["mean_mel_distance"] < 0.6
    assert json.loads((dst / pack_corpus.REPORT).read_text())["settings"]["bitrate_kbps"] == 24.0


def test_rerun_is_a_no_op_and_other_settings_are_refused(packed):
    src, dst, _ = packed
    stamps = {f: os.stat(dst / f).st_mtime_ns for f in _files(dst) if f != pack_corpus.REPORT}
    again = pack_corpus.pack(str(src), str(dst), bitrate_kbps=24, quality_files=0)
    assert (again["files"]["transcoded"], again["files"]["skipped"]) == (0, 6)
    assert again["files"]["copied"] == 0
    assert {f: os.stat(dst / f).st_mtime_ns for f in stamps} == stamps
    # An output cut short is redone; nothing else is.
    victim = next(iter(sorted(dst.rglob("*.opus"))))
    victim.write_bytes(victim.read_bytes()[:200])
    third = pack_corpus.pack(str(src), str(dst), bitrate_kbps=24, quality_files=0)
    assert (third["files"]["transcoded"], third["files"]["skipped"]) == (1, 5)
    with pytest.raises(ValueError, match="was packed with"):
        pack_corpus.pack(str(src), str(dst), bitrate_kbps=16)


def test_consumers_read_the_opus_tree(packed):
    src, dst, _ = packed
    index = scan_corpus(dst)
    assert [e.id for e in index] == [e.id for e in scan_corpus(src)]
    assert all(e.path.endswith(".opus") and e.text for e in index)
    reader = AudioCropReader(dst, "libri_light", "train", crop_seconds=0.5, seed=0, batch_size=2,
                             num_epochs=1)
    batch = next(iter(reader))
    assert batch["audio"].shape == (2, 8000) and np.abs(batch["audio"]).max() > 0.1
    utts = abx_corpus.read_split(dst, "train")
    assert len(utts) == 5 and all(u.audio.suffix == ".opus" and u.items for u in utts)


def test_pairs_directory_keeps_its_manifest_and_loads(tmp_path):
    from audiolm_jax.audio import save_audio
    from audiolm_jax.eval import pairs

    src, dst = tmp_path / "pairs", tmp_path / "pairs_opus"
    items = pairs.plan_pairs(0, 1, ["flite_awb"], [], [], min_count=1)[:2]
    for k, item in enumerate(items):
        for rel in (item.good_path, item.bad_path):
            save_audio(src / rel, 0.3 * np.sin(np.arange(8000) * (0.05 + 0.01 * k)))
    manifest = {"format": "audiolm_jax.pairs/1", "items": [vars(it) for it in items]}
    (src / pairs.MANIFEST).write_text(json.dumps(manifest))
    pack_corpus.pack(str(src), str(dst), quality_files=1)
    assert (dst / pairs.MANIFEST).read_bytes() == (src / pairs.MANIFEST).read_bytes()
    loaded = pairs.load_pairs(str(dst))
    assert [it.pair_id for it in loaded] == [it.pair_id for it in items]
    for it in loaded:
        for rel in (it.good_path, it.bad_path):
            assert rel.endswith(".opus") and len(load_audio(dst / rel)) == 8000


def test_two_sources_for_one_output_are_refused(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("a.flac", "a.wav"):
        (tmp_path / "src" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="would both be written"):
        pack_corpus.plan(str(tmp_path / "src"), str(tmp_path / "dst"), ".opus")
