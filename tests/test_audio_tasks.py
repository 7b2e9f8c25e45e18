"""The TF layer: TFDS builders over audio trees and the SeqIO crop tasks, against the TF-free reader.

All TF tests live here (TF/TFDS/SeqIO import once, ~10 s); trees and prepared datasets are
module-scoped.
"""
import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
seqio = pytest.importorskip("seqio")

from audiolm_jax.audio import load_audio  # noqa: E402
from audiolm_jax.data import AudioCropReader  # noqa: E402
from corpus_trees import speech_text, write_piano_tree, write_speech_tree  # noqa: E402
from fixtures_audio import BAD_CASES, CASES, EXPECTED_ERROR, GOOD_CASES  # noqa: E402
from fixtures_audio import librilight_layout, write_bad_audio_tree  # noqa: E402
from tasks import audio_tasks  # noqa: E402
from tasks.builders import SKIPPED_FILE  # noqa: E402

pytestmark = pytest.mark.needs_tf
SEED = 11


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_tree")
    paths = write_speech_tree(root)
    data_dir = tmp_path_factory.mktemp("tfds_speech")
    names = audio_tasks.register_audio_crop_tasks("libri_light", data_dir, manual_dir=root,
                                                  crop_seconds=(0.5, 1.0), seed=SEED)
    return root, paths, data_dir, names


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_tree")
    paths = write_bad_audio_tree(root, librilight_layout())
    data_dir = tmp_path_factory.mktemp("tfds_bad")
    names = audio_tasks.register_audio_crop_tasks("libri_light", data_dir, manual_dir=root,
                                                  crop_seconds=0.25, seed=SEED)
    return root, paths, data_dir, names


def seqio_batches(task, batch_size, num_epochs, split="train", take=None):
    ds = seqio.get_mixture_or_task(task).get_dataset(None, split=split, shuffle=False,
                                                     num_epochs=num_epochs)
    if take is not None:
        ds = ds.take(take)
    return list(ds.batch(batch_size).as_numpy_iterator())


def assert_same_batches(reader_batches, task_batches):
    assert len(reader_batches) == len(task_batches) > 0
    for r, t in zip(reader_batches, task_batches):
        assert r["audio"].dtype == t["audio"].dtype == np.float32
        assert np.array_equal(r["audio"].view(np.uint32), t["audio"].view(np.uint32))  # bitwise
        assert np.array_equal(r["length"], t["length"]) and np.array_equal(r["mask"], t["mask"])
        assert [i.decode() for i in t["id"]] == r["id"].tolist()


def test_task_names_and_unknown_dataset(speech):
    assert speech[3] == ["libri_light_audio_crops_500ms", "libri_light_audio_crops_1000ms"]
    with pytest.raises(ValueError, match="unknown audio dataset 'librivox'.*libri_light"):
        audio_tasks.register_audio_crop_tasks("librivox", "/tmp/unused")


@pytest.mark.parametrize("crop_s,batch", [(0.5, 2), (1.0, 3)])
def test_seqio_task_equals_tf_free_reader_bitwise_for_two_epochs(speech, crop_s, batch):
    root, _, _, _ = speech
    reader = AudioCropReader(root, "libri_light", "train", crop_seconds=crop_s, seed=SEED,
                             batch_size=batch, shuffle=False, num_epochs=2, drop_remainder=False)
    expected = list(reader)
    assert sum(len(b["id"]) for b in expected) == 10  # 5 utterances x 2 epochs
    task = audio_tasks.task_name("libri_light", crop_s)
    assert_same_batches(expected, seqio_batches(task, batch, num_epochs=2))
    # SeqIO's endless repeat counts epochs the same way.
    assert_same_batches(expected, seqio_batches(task, batch, num_epochs=None, take=10))


def test_tfds_audio_is_bit_identical_to_load_audio(speech):
    _, paths, data_dir, _ = speech
    builder = tfds.builder("libri_light", data_dir=os.fspath(data_dir))
    assert set(builder.info.splits) == {"train", "heldout_voices"}
    examples = list(builder.as_dataset(split="train").as_numpy_iterator())
    assert [e["id"].decode() for e in examples] == sorted(k for k in paths if k.startswith("10"))
    for e in examples:
        uid = e["id"].decode()
        wav = load_audio(paths[uid])
        assert np.array_equal(e["audio"].view(np.uint32), wav.view(np.uint32))
        assert e["speaker"].decode() == uid.split("-")[0] and e["group"].decode() == "7"
        assert e["text"].decode() == speech_text(uid)
        assert e["duration"] == np.float32(wav.size / 16000)
    assert builder.skipped == {}


def test_bad_tree_builder_skips_bad_files_with_the_readers_reasons(bad):
    root, paths, data_dir, names = bad
    builder = tfds.builder("libri_light", data_dir=os.fspath(data_dir))  # reloaded from disk
    assert set(builder.skipped) == {str(paths[n]) for n in BAD_CASES}
    for name in BAD_CASES:
        assert builder.skipped[str(paths[name])].startswith(EXPECTED_ERROR[name].kind + ":")
    with open(os.path.join(builder.data_dir, SKIPPED_FILE)) as fh:
        assert json.load(fh)["skipped"] == builder.skipped

    ids = {name: f"9000-1-{i:04d}" for i, name in enumerate(CASES)}
    examples = {e["id"].decode(): e for e in builder.as_dataset(split="train").as_numpy_iterator()}
    assert sorted(examples) == sorted(ids[n] for n in GOOD_CASES)
    assert examples[ids["one_sample"]]["audio"].tolist() == [0.25]
    assert examples[ids["stereo_44k"]]["audio"].shape == (16000,)

    reader = AudioCropReader(root, "libri_light", "train", crop_seconds=0.25, seed=SEED,
                             batch_size=2, shuffle=False, num_epochs=2, drop_remainder=False)
    assert_same_batches(list(reader), seqio_batches(names[0], 2, num_epochs=2))
    assert reader.skipped == builder.skipped


def test_librispeech_and_piano_builders(tmp_path_factory):
    speech_root = tmp_path_factory.mktemp("librispeech")
    write_speech_tree(speech_root, json_text=False)
    piano_root = tmp_path_factory.mktemp("piano")
    piano_paths = write_piano_tree(piano_root)
    data_dir = tmp_path_factory.mktemp("tfds_other")

    ls = audio_tasks.prepare_dataset("librispeech_tree", data_dir, speech_root)
    e = next(ls.as_dataset(split="heldout_voices").as_numpy_iterator())
    assert e["id"] == b"201-7-0000" and e["text"].decode() == speech_text("201-7-0000").upper()

    piano = audio_tasks.prepare_dataset("maestro_like_piano", data_dir, piano_root)
    assert set(piano.info.splits) == {"train", "heldout_pieces"}
    assert "text" not in piano.info.features
    got = {e["id"].decode(): e for e in piano.as_dataset(split="train").as_numpy_iterator()}
    assert sorted(got) == ["p1-bwv269-00", "p1-bwv269-01", "p2-bwv269-00"]
    assert got["p2-bwv269-00"]["speaker"] == b"p2" and got["p2-bwv269-00"]["group"] == b"bwv269"
    assert np.array_equal(got["p1-bwv269-01"]["audio"], load_audio(piano_paths["p1-bwv269-01"]))
