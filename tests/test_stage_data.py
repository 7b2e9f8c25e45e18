"""Stage data over a token cache: crops, alignment, layouts, padding, resume, sharding, training."""
import json

import gin
import numpy as np
import pytest

from audiolm_jax import config
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.layouts import BOS, PAD, SEP, AudioVocabulary
from audiolm_jax.tokens.cache import TokenCache, Utterance
from audiolm_jax.tokens.stage_data import (
    aligned_crop,
    covered_frames,
    make_layout,
    stage_batches,
)
from audiolm_jax.training.trainer import train
from stage_caches import rule_cache, rule_utterance, write_cache

# Hand-checkable vocabulary: specials 0-2, semantic 3..6, level-0 codes 7..9, level-1 10..12.
SMALL = AudioVocabulary(4, 2, 3)
SPEECH = AudioVocabulary(1024, 12, 1024)


class FixedStart:
    """A stand-in generator whose crop start is `start`; checks the range it is asked for."""

    def __init__(self, start, expect_high=None):
        self.start, self.expect_high = start, expect_high

    def integers(self, low, high):
        assert low == 0 and (self.expect_high is None or high == self.expect_high)
        return self.start


def test_aligned_crop_takes_the_same_time_from_both_streams():
    semantic = np.arange(10)
    acoustic = np.arange(20)[:, None] * np.ones((1, 3), int)
    # T = 10 frames, L = 4: start uniform in [0, 6] (integers' high is exclusive: 7).
    s, a = aligned_crop(semantic, acoustic, 4, 2, FixedStart(3, expect_high=7))
    assert s.tolist() == [3, 4, 5, 6]
    assert a[:, 0].tolist() == list(range(6, 14)) and a.shape == (8, 3)


@pytest.mark.parametrize("num_semantic,num_acoustic,frames,acoustic_rows", [
    (3, 5, 3, 5),    # shorter than the crop, one acoustic frame short: all of both
    (5, 8, 4, 8),    # one semantic frame beyond the acoustic: only the time both cover
    (4, 9, 4, 8),    # one acoustic frame beyond the semantic: dropped
    (4, 8, 4, 8),    # exactly the crop: whole
])
def test_short_utterances_are_taken_whole_up_to_the_covered_time(num_semantic, num_acoustic,
                                                                 frames, acoustic_rows):
    assert covered_frames(num_semantic, num_acoustic) == min(num_semantic, -(-num_acoustic // 2))
    s, a = aligned_crop(np.arange(num_semantic), np.zeros((num_acoustic, 2)), 4, 2,
                        FixedStart(None))  # must not draw
    assert len(s) == frames and len(a) == acoustic_rows


def layout_example(stage, semantic, acoustic, num_coarse=None):
    layout = make_layout(stage, SMALL, crop_seconds=0.08, num_coarse=num_coarse)  # L = 2 frames
    return layout, layout.example("u", np.asarray(semantic), np.asarray(acoustic), seed=0, epoch=0)


ACOUSTIC = [[0, 2], [1, 0], [2, 1], [0, 0]]


def test_semantic_example_dedups_and_pads():
    layout, ex = layout_example("semantic", [1, 1], ACOUSTIC)
    assert layout.length == 2
    assert ex.targets.tolist() == [4, PAD] and ex.inputs.tolist() == [BOS, PAD]
    assert ex.loss_mask.tolist() == [1, 0]


def test_coarse_example_by_hand():
    layout, ex = layout_example("coarse", [1, 1], ACOUSTIC, num_coarse=1)
    assert layout.length == 2 + 1 + 4 * 1
    assert ex.targets.tolist() == [4, SEP, 7, 8, 9, 7, PAD]
    assert ex.inputs.tolist() == [BOS, 4, SEP, 7, 8, 9, PAD]  # shifted before padding
    assert ex.loss_mask.tolist() == [0, 0, 1, 1, 1, 1, 0]
    assert ex.inputs.dtype == ex.targets.dtype == np.int32 and ex.loss_mask.dtype == np.float32


def test_fine_example_by_hand():
    layout, ex = layout_example("fine", [1, 1], ACOUSTIC, num_coarse=1)
    assert layout.length == 4 * 2 + 1
    assert ex.targets.tolist() == [7, 8, 9, 7, SEP, 12, 10, 11, 10]
    assert ex.inputs.tolist() == [BOS, 7, 8, 9, 7, SEP, 12, 10, 11]
    assert ex.loss_mask.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_acoustic_only_example_by_hand():
    # The coarse example's acoustic part alone (same crop), every token predicted.
    layout, ex = layout_example("acoustic", [1, 1], ACOUSTIC, num_coarse=1)
    assert layout.length == 4 * 1
    assert ex.targets.tolist() == [7, 8, 9, 7]
    assert ex.inputs.tolist() == [BOS, 7, 8, 9]
    assert ex.loss_mask.tolist() == [1, 1, 1, 1]
    layout, ex = layout_example("acoustic", [1, 2, 3], ACOUSTIC[:3], num_coarse=2)
    assert layout.length == 4 * 2   # L = 2 frames: acoustic frames 0..3, two levels each
    assert ex.targets.tolist() == [7, 12, 8, 10, 9, 11, PAD, PAD]
    assert ex.inputs.tolist() == [BOS, 7, 12, 8, 10, 9, PAD, PAD]
    assert ex.loss_mask.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    _, coarse = layout_example("coarse", [1, 1], ACOUSTIC, num_coarse=1)
    _, acoustic = layout_example("acoustic", [1, 1], ACOUSTIC, num_coarse=1)
    np.testing.assert_array_equal(coarse.targets[coarse.loss_mask == 1], acoustic.targets)


def test_paper_lengths_and_bad_stage_settings():
    assert make_layout("semantic", SPEECH).length == 750
    assert make_layout("coarse", SPEECH, num_coarse=4).length == 250 + 1 + 500 * 4
    assert make_layout("fine", SPEECH, num_coarse=4).length == 150 * 4 + 1 + 150 * 8
    piano = AudioVocabulary(512, 3, 2 ** 14)
    assert make_layout("coarse", piano, num_coarse=3).length == 250 + 1 + 500 * 3
    with pytest.raises(ValueError, match="no fine stage"):
        make_layout("fine", piano, num_coarse=3)
    with pytest.raises(ValueError, match="num_coarse=None"):
        make_layout("coarse", SPEECH)
    assert make_layout("acoustic", SPEECH, num_coarse=4).length == 500 * 4
    assert make_layout("acoustic", piano, num_coarse=3).length == 500 * 3
    with pytest.raises(ValueError, match="num_coarse=None"):
        make_layout("acoustic", SPEECH)
    with pytest.raises(ValueError, match="stage 'semantics' is unknown"):
        make_layout("semantics", SPEECH)
    with pytest.raises(ValueError, match="shorter than one semantic frame"):
        make_layout("semantic", SPEECH, crop_seconds=0.01)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return rule_cache(tmp_path_factory.mktemp("tokens"), num_utterances=12, num_shards=4)


def reader(cache_dir, stage="coarse", **kw):
    kw = {"batch_size": 3, "crop_seconds": 0.4, "num_coarse": 2, "seed": 7, **kw}
    return stage_batches(cache_dir=cache_dir, stage=stage, **kw)


@pytest.mark.parametrize("stage,length", [("semantic", 10), ("coarse", 51), ("fine", 81),
                                          ("acoustic", 40)])
def test_batches_have_fixed_shapes_and_mask_only_predicted_tokens(cache_dir, stage, length):
    vocab = TokenCache(cache_dir).vocabulary()
    batch = next(reader(cache_dir, stage))
    assert set(batch) == {"inputs", "targets", "loss_mask"}
    assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
        "inputs": ((3, length), "int32"), "targets": ((3, length), "int32"),
        "loss_mask": ((3, length), "float32")}
    predicted = batch["targets"][batch["loss_mask"] == 1]
    assert np.all(batch["loss_mask"][batch["targets"] == PAD] == 0)
    assert np.all(batch["inputs"][:, 0] == BOS)
    low = {"semantic": vocab.semantic_offset, "coarse": vocab.acoustic_range(0)[0],
           "fine": vocab.acoustic_range(2)[0], "acoustic": vocab.acoustic_range(0)[0]}[stage]
    high = {"semantic": vocab.acoustic_offset, "coarse": vocab.acoustic_range(1)[1],
            "fine": vocab.size, "acoustic": vocab.acoustic_range(1)[1]}[stage]
    assert predicted.size and predicted.min() >= low and predicted.max() < high


def test_crops_are_deterministic_per_seed_epoch_and_utterance(cache_dir):
    a, b = reader(cache_dir), reader(cache_dir)
    for _ in range(9):  # more than two epochs of 12 utterances in batches of 3
        x, y = next(a), next(b)
        np.testing.assert_array_equal(x["targets"], y["targets"])
    other = next(reader(cache_dir, seed=8))
    assert not np.array_equal(other["targets"], next(reader(cache_dir))["targets"])
    # The same utterance gets another crop in another epoch (order aside).
    plain = reader(cache_dir, shuffle=False, batch_size=12)
    first, second = next(plain), next(plain)
    assert plain.last_ids == sorted(plain.last_ids)
    assert not np.array_equal(first["targets"], second["targets"])


def test_exact_resume_and_json_state(cache_dir):
    data = reader(cache_dir)
    for _ in range(3):
        next(data)
    state = json.loads(json.dumps(data.get_state()))
    expected = [next(data) for _ in range(6)]
    resumed = reader(cache_dir)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError, match="different stream.*seed"):
        reader(cache_dir, seed=8).set_state(state)
    with pytest.raises(ValueError, match="lacks"):
        reader(cache_dir).set_state({"epoch": 0})


def test_hosts_read_disjoint_shards_covering_the_cache(cache_dir):
    ids = [set(reader(cache_dir, shard_index=i, shard_count=2).ids) for i in range(2)]
    assert ids[0].isdisjoint(ids[1]) and len(ids[0] | ids[1]) == 12
    host = reader(cache_dir, shard_index=1, shard_count=2, shuffle=False, batch_size=1)
    seen = []
    for _ in range(len(ids[1])):
        next(host)
        seen.extend(host.last_ids)
    assert sorted(seen) == sorted(ids[1])
    with pytest.raises(ValueError, match="only 4 shards"):
        reader(cache_dir, shard_index=0, shard_count=5)


def test_epochs_end_and_batches_run_across_epoch_boundaries(cache_dir):
    data = reader(cache_dir, batch_size=5, num_epochs=2)
    assert [len(b["inputs"]) for b in data] == [5] * 4  # 24 examples, the last 4 dropped
    assert data.get_state()["epoch"] == 2


def test_empty_utterances_are_skipped_and_bad_options_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    empty = Utterance("empty", np.zeros([0], np.int32), np.zeros([0, 4], np.int32), 0.0)
    path = write_cache(tmp_path, [rule_utterance("a", 8, rng), empty], num_shards=1)
    data = reader(path, batch_size=1)
    assert data.ids == ["a"] and "no time-aligned frame" in data.skipped["empty"]
    with pytest.raises(ValueError, match="segment mask"):
        reader(path, pack=True)
    with pytest.raises(ValueError, match="VOCAB_SIZE=195"):
        reader(path, model_vocab_size=100)


def test_tiny_transformer_learns_a_tiny_cache_through_the_trainer(tmp_path):
    train_cache = rule_cache(tmp_path / "train", num_utterances=24, seed=0, num_shards=2)
    eval_cache = rule_cache(tmp_path / "heldout", num_utterances=8, seed=1, num_shards=1)
    losses = []
    try:
        config.parse_gin(["experiments/stage_tiny_cpu"], [
            f"CACHE = '{train_cache}'", f"EVAL_CACHE = '{eval_cache}'",
            f"train.workdir = '{tmp_path / 'run'}'", "train.num_train_steps = 100",
            "train.eval_every = 100"])
        result = train(on_step=lambda step, m: losses.append(float(m["model/loss"])),
                       progress=lambda _: None)
    finally:
        gin.clear_config()
    assert result.step == 100
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.4 * first, (first, last)
    assert result.eval_metrics["eval/loss"] < 0.5 * first


@pytest.mark.parametrize("experiment,stage,length", [
    ("stage_semantic_speech_small_world", "semantic", 750),
    ("stage_coarse_speech_small_world", "coarse", 2251),
    ("stage_fine_speech_small_world", "fine", 1801),
    ("stage_semantic_piano_small_world", "semantic", 750),
    ("stage_coarse_piano_small_world", "coarse", 1751),
    ("stage_acoustic_speech_small_world", "acoustic", 2000),
    ("stage_acoustic_piano_small_world", "acoustic", 1500),
])
def test_small_world_experiments_feed_their_stage(tmp_path, experiment, stage, length):
    # The small worlds' tokenizers: piano K=512, Q=3, N=2^14; speech K=1024 (as the paper), 12 x 1024.
    k, q, n = (512, 3, 2 ** 14) if "piano" in experiment else (1024, 12, 1024)
    rng = np.random.default_rng(0)
    cache = write_cache(tmp_path, [rule_utterance(f"u{i}", 800, rng, k=k, q=q, n=n)
                                   for i in range(2)], num_shards=1, k=k, q=q, n=n)
    try:
        config.parse_gin([f"experiments/{experiment}"], [f"CACHE = '{cache}'",
                                                         f"EVAL_CACHE = '{cache}'"])
        data = gin.get_configurable(stage_batches)(shard_index=0, shard_count=1)
        assert data.layout.stage == stage and data.layout.length == length
        assert data.layout.vocab.size == gin.get_configurable(TransformerConfig)().vocab_size
        batch = next(gin.get_configurable(stage_batches)(shard_index=0, shard_count=1))
        assert batch["inputs"].shape[1] == length
    finally:
        gin.clear_config()
