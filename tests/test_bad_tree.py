"""The TF-free reader over a tree of good and bad files: bad ones skipped with reasons, good kept.

(The TFDS builder over the same tree is checked in test_audio_tasks.py, beside the other TF tests.)
"""
import logging

import numpy as np
import pytest

from audiolm_jax.data import AudioCropReader, scan_corpus
from fixtures_audio import BAD_CASES, CASES, EXPECTED_ERROR, GOOD_CASES, librilight_layout
from fixtures_audio import write_bad_audio_tree


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    paths = write_bad_audio_tree(root, librilight_layout())
    ids = {name: f"9000-1-{i:04d}" for i, name in enumerate(CASES)}
    return root, paths, ids


def test_scan_lists_every_file_because_it_does_not_decode(bad_tree):
    root, paths, _ = bad_tree
    assert {e.path for e in scan_corpus(root)} == {str(p) for p in paths.values()}


def test_reader_skips_bad_files_with_reasons_and_keeps_every_good_one(bad_tree, caplog):
    root, paths, ids = bad_tree
    r = AudioCropReader(root, "libri_light", "train", crop_seconds=0.5, seed=0, batch_size=1,
                        shuffle=False, num_epochs=2, drop_remainder=False)
    with caplog.at_level(logging.WARNING, logger="audiolm_jax.data.audio_reader"):
        batches = {(b["id"][0], k): b for k, b in enumerate(r)}
    yielded = [i for i, _ in batches]
    good_ids = sorted(ids[n] for n in GOOD_CASES)
    assert yielded == good_ids * 2  # both epochs, every good file, in order
    assert set(r.skipped) == {str(paths[n]) for n in BAD_CASES}
    for name in BAD_CASES:
        assert r.skipped[str(paths[name])].startswith(EXPECTED_ERROR[name].kind + ":"), name
        # Warned once, naming the file, though the file came up in both epochs.
        assert sum(str(paths[name]) in m for m in caplog.messages) == 1

    by_id = {i: b for (i, k), b in batches.items() if k < len(GOOD_CASES)}
    one = by_id[ids["one_sample"]]  # one sample: a valid, padded example
    assert one["length"][0] == 1 and one["audio"][0, 0] == np.float32(0.25)
    assert not one["audio"][0, 1:].any() and one["mask"][0].sum() == 1
    stereo = by_id[ids["stereo_44k"]]  # 44.1 kHz stereo: downmixed, resampled, a full crop
    assert stereo["length"][0] == 8000 and np.abs(stereo["audio"]).max() > 0.1


def test_reader_over_only_bad_files_raises_instead_of_spinning(tmp_path):
    write_bad_audio_tree(tmp_path, librilight_layout(), cases=["corrupt", "empty"])
    r = AudioCropReader(tmp_path, "libri_light", "train", crop_seconds=0.5, seed=0, batch_size=1)
    with pytest.raises(ValueError, match="every file of split 'train'.*unusable.*corrupt"):
        next(r)
