"""Random crops (pure numpy) and the TF-free AudioCropReader: determinism, order, shards, resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from audiolm_jax.audio import load_audio
from audiolm_jax.data import AudioCropReader, crops
from corpus_trees import write_speech_tree

CROP_S = 0.5
L = 8000  # CROP_S at 16 kHz


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    return root, write_speech_tree(root)


def reader(root, **kw):
    kw = {"crop_seconds": CROP_S, "seed": 5, "batch_size": 2, **kw}
    return AudioCropReader(root, "libri_light", "train", **kw)


def test_crop_is_a_slice_and_depends_only_on_seed_epoch_id():
    wav = np.arange(20000, dtype=np.float32)
    a, n = crops.crop_example(wav, L, seed=1, epoch=0, example_id="x")
    b, _ = crops.crop_example(wav, L, seed=1, epoch=0, example_id="x")
    assert n == L and np.array_equal(a, b)
    start = int(a[0])
    assert np.array_equal(a, wav[start:start + L])
    offsets = {(s, e, i): int(crops.crop_example(wav, L, s, e, i)[0][0])
               for s in (1, 2) for e in (0, 1, 2) for i in ("x", "y")}
    assert len(set(offsets.values())) == len(offsets)  # each of seed/epoch/id moves the crop


def test_short_clip_is_padded_and_length_says_so():
    crop, n = crops.random_crop(np.full(3, 0.5, np.float32), 8, crops.crop_rng(0, 0, "a"))
    assert n == 3 and crop.dtype == np.float32
    assert np.array_equal(crop, [0.5, 0.5, 0.5, 0, 0, 0, 0, 0])
    assert np.array_equal(crops.length_mask(np.array([3, 8]), 8)[0], crop != 0)
    with pytest.raises(ValueError, match="mono"):
        crops.random_crop(np.zeros((4, 2)), 2, crops.crop_rng(0, 0, "a"))
    with pytest.raises(ValueError, match="at least one sample"):
        crops.crop_length(0.00001, 16000)


def test_crop_rng_is_stable_across_processes():
    code = ("from audiolm_jax.data import crops; "
            "print(crops.crop_offset(10**6, 10, crops.crop_rng(3, 4, 'spk-book-0001')))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2")}
    assert outs == {str(crops.crop_offset(10**6, 10, crops.crop_rng(3, 4, "spk-book-0001")))}


def test_batches_are_crops_of_load_audio_in_sorted_order(tree):
    root, paths = tree
    r = reader(root, shuffle=False, num_epochs=1, drop_remainder=False)
    batches = list(r)
    assert [b["audio"].shape for b in batches] == [(2, L), (2, L), (1, L)]
    ids = [i for b in batches for i in b["id"]]
    assert ids == sorted(k for k in paths if k.startswith("10"))
    first = batches[0]
    wav = load_audio(paths[ids[0]])
    expected, n = crops.crop_example(wav, L, 5, 0, ids[0])
    assert np.array_equal(first["audio"][0], expected) and first["length"][0] == n == L
    # 101-7-0001 is 0.4 s: padded, and the mask marks its real samples.
    short = batches[0]["id"].tolist().index("101-7-0001")
    assert batches[0]["length"][short] == 6400
    assert batches[0]["mask"][short].sum() == 6400 and not batches[0]["audio"][short, 6400:].any()
    assert r.skipped == {}


def test_endless_stream_crosses_epochs_with_fresh_crops(tree):
    root, _ = tree
    r = reader(root, shuffle=False)  # 5 examples, batch 2: batch 3 spans epochs 0 and 1
    b = [next(r) for _ in range(5)]
    ids = [i for x in b for i in x["id"]]
    assert ids[:5] == ids[5:10]
    audio = np.concatenate([x["audio"] for x in b])
    long_ones = [k for k in range(5) if ids[k] != "101-7-0001"]  # the short clip is always whole
    assert all(not np.array_equal(audio[k], audio[k + 5]) for k in long_ones)
    assert (r.get_state()["epoch"], r.get_state()["position"]) == (1, 5)


def test_shuffle_permutes_each_epoch_differently(tree):
    root, _ = tree
    r = reader(root, shuffle=True)
    orders = [r.epoch_order(e).tolist() for e in range(4)]
    assert all(sorted(o) == list(range(5)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    assert reader(root, shuffle=True).epoch_order(3).tolist() == orders[3]


def test_shards_partition_each_epoch(tree):
    root, _ = tree
    seen = []
    for k in range(2):
        r = reader(root, shard_index=k, num_shards=2, num_epochs=1, drop_remainder=False)
        seen += [i for b in r for i in b["id"]]
    assert sorted(seen) == ["101-7-0000", "101-7-0001", "101-7-0002", "102-7-0000", "102-7-0001"]
    with pytest.raises(ValueError, match="fewer than num_shards"):
        reader(root, shard_index=0, num_shards=6)


def test_state_round_trips_through_json_and_resumes_exactly(tree):
    root, _ = tree
    r = reader(root, shuffle=True, batch_size=3)
    for _ in range(3):
        next(r)
    state = json.loads(json.dumps(r.get_state()))
    expected = [next(r) for _ in range(4)]
    resumed = reader(root, shuffle=True, batch_size=3)
    resumed.set_state(state)
    got = [next(resumed) for _ in range(4)]
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="different stream.*seed"):
        reader(root, shuffle=True, batch_size=3, seed=6).set_state(state)
    with pytest.raises(ValueError, match="lacks"):
        resumed.set_state({"epoch": 0})


def test_importing_the_library_and_data_layer_leaves_tensorflow_out():
    code = ("import sys, audiolm_jax, audiolm_jax.data, audiolm_jax.data.audio_reader; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', "
            "'seqio')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
