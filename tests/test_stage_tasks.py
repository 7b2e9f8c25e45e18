"""SeqIO stage tasks over a token cache against the TF-free `stage_batches` reader."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from audiolm_jax.tokens.cache import Utterance  # noqa: E402
from audiolm_jax.tokens.stage_data import stage_batches  # noqa: E402
from stage_caches import rule_cache, rule_utterance, write_cache  # noqa: E402
from tasks import stage_tasks  # noqa: E402

pytestmark = pytest.mark.needs_tf
SEED = 5
CROPS = {"semantic": 0.4, "coarse": 0.4, "fine": 0.2, "acoustic": 0.4}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    train = rule_cache(tmp_path_factory.mktemp("train"), num_utterances=7, seed=0, num_shards=2)
    rng = np.random.default_rng(3)
    empty = Utterance("zz-empty", np.zeros([0], np.int32), np.zeros([0, 4], np.int32), 0.0)
    heldout = write_cache(tmp_path_factory.mktemp("heldout"),
                          [rule_utterance("h0", 15, rng), empty, rule_utterance("h1", 4, rng)],
                          num_shards=1, split="heldout")
    names = stage_tasks.register_stage_tasks("tiny", {"train": train, "heldout": heldout},
                                             num_coarse=2, crop_seconds=CROPS, seed=SEED,
                                             stages=stage_tasks.ALL_STAGES)
    return train, heldout, names


def seqio_batches(task, batch_size, num_epochs, split="train", shard_info=None, take=None):
    ds = seqio.get_mixture_or_task(task).get_dataset(None, split=split, shuffle=False,
                                                     num_epochs=num_epochs, shard_info=shard_info)
    if take is not None:
        ds = ds.take(take)
    return list(ds.batch(batch_size).as_numpy_iterator())


def reader_batches(cache, stage, batch_size, **kw):
    data = stage_batches(cache_dir=cache, stage=stage, batch_size=batch_size, num_coarse=2,
                         crop_seconds=CROPS[stage], seed=SEED, shuffle=False, **kw)
    data.drop_remainder = False
    batches = []
    for batch in data:
        batches.append({**batch, "id": list(data.last_ids)})
    return batches


def assert_same(reader, task):
    assert len(reader) == len(task) > 0
    for r, t in zip(reader, task):
        assert [i.decode() for i in t["id"]] == r["id"]
        for key in ("inputs", "targets", "loss_mask"):
            assert r[key].dtype == t[key].dtype
            np.testing.assert_array_equal(r[key], t[key])


def test_task_names_and_piano_has_no_fine_stage(caches, tmp_path):
    assert caches[2] == ["tiny_semantic", "tiny_coarse", "tiny_fine", "tiny_acoustic"]
    piano = write_cache(tmp_path, [rule_utterance("p", 9, np.random.default_rng(0), q=3)],
                        num_shards=1, q=3)
    assert stage_tasks.register_stage_tasks("tiny_piano", piano, num_coarse=3) == [
        "tiny_piano_semantic", "tiny_piano_coarse"]


@pytest.mark.parametrize("stage,batch", [("semantic", 2), ("coarse", 3), ("fine", 4),
                                         ("acoustic", 3)])
def test_seqio_task_equals_tf_free_reader_for_two_epochs(caches, stage, batch):
    train, _, _ = caches
    expected = reader_batches(train, stage, batch, num_epochs=2)
    assert sum(len(b["id"]) for b in expected) == 14  # 7 utterances x 2 epochs
    task = stage_tasks.task_name("tiny", stage)
    assert_same(expected, seqio_batches(task, batch, num_epochs=2))
    # SeqIO's endless repeat counts epochs the same way.
    assert_same(expected, seqio_batches(task, batch, num_epochs=None, take=14))


def test_sharded_split_with_an_empty_utterance(caches):
    train, heldout, _ = caches
    assert_same(reader_batches(heldout, "coarse", 2, num_epochs=2),
                seqio_batches("tiny_coarse", 2, num_epochs=2, split="heldout"))
    for index in range(2):
        assert_same(reader_batches(train, "fine", 2, num_epochs=1, shard_index=index, shard_count=2),
                    seqio_batches("tiny_fine", 2, num_epochs=1,
                                  shard_info=seqio.ShardInfo(index, 2)))
