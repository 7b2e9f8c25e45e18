"""The gin-bindable trainer input pipeline over an audio tree."""
import gin
import numpy as np

from audiolm_jax.data.pipelines import audio_crop_batches
from corpus_trees import write_speech_tree


def test_numeric_batches_drop_ids_and_resume_exactly(tmp_path):
    write_speech_tree(tmp_path)
    make = lambda: audio_crop_batches(root=str(tmp_path), crop_seconds=0.5, batch_size=2, seed=3)
    data = make()
    first = next(data)
    assert set(first) == {"audio", "audio_length"}
    assert first["audio"].shape == (2, 8000) and first["audio"].dtype == np.float32
    state = data.get_state()
    expected = [next(data) for _ in range(3)]
    resumed = make()
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["audio"], want["audio"])


def test_hosts_read_disjoint_shards(tmp_path):
    write_speech_tree(tmp_path)
    ids = []
    for i in range(2):
        reader = audio_crop_batches(root=str(tmp_path), crop_seconds=0.5, batch_size=1, seed=0,
                                    shuffle=False, shard_index=i, shard_count=2).reader
        ids.append({reader.examples[j].id for j in reader.epoch_order(0)})
    assert ids[0].isdisjoint(ids[1]) and len(ids[0] | ids[1]) == 5


def test_bindable_from_gin(tmp_path):
    write_speech_tree(tmp_path)
    with gin.unlock_config():
        gin.parse_config([f"audio_crop_batches.root = '{tmp_path}'", "audio_crop_batches.batch_size = 3"])
    try:
        assert next(gin.get_configurable(audio_crop_batches)(shard_index=0, shard_count=1))["audio"].shape[0] == 3
    finally:
        gin.clear_config()


def test_cached_audio_gives_the_same_batches(tmp_path):
    write_speech_tree(tmp_path)
    plain = audio_crop_batches(root=str(tmp_path), crop_seconds=0.5, batch_size=2, seed=5)
    cached = audio_crop_batches(root=str(tmp_path), crop_seconds=0.5, batch_size=2, seed=5,
                                cache_audio=True)
    for _ in range(6):  # more than one epoch of the 5-utterance train split
        np.testing.assert_array_equal(next(plain)["audio"], next(cached)["audio"])
    assert len(cached.reader._cache) == 5
