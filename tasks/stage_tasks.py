"""SeqIO tasks of the three stage LMs over token caches: `{dataset}_{semantic,coarse,fine}`, and
on request `{dataset}_acoustic` (the acoustic-only baseline: stage 2 without semantic tokens).

Each task yields {"inputs": int32 [length], "targets": int32 [length], "loss_mask": float32
[length], "id": string} per utterance and epoch, built by the same numpy code as the TF-free
reader (`audiolm_jax.tokens.stage_data.StageLayout.example`, through `tf.numpy_function`): the
crop of an utterance depends only on (seed, epoch, id), so both paths give identical examples,
and with `get_dataset(shuffle=False)` identical order too (tests/test_stage_tasks.py checks
batches over two epochs). With `shard_info`, hosts read cache shards index, index + count, ...
as `TokenCache.utterances` (and so `stage_batches`) does. Shuffled, the order differs from the
TF-free reader's per-epoch permutation (SeqIO shuffles with a buffer), the examples do not.

Epochs are counted as in `tasks/audio_tasks.py`: positions numbered before SeqIO's repeat, a
scan after it (position 0 starts a pass).
"""
from __future__ import annotations

import functools
import os
from typing import Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from audiolm_jax.tokens.cache import TokenCache
from audiolm_jax.tokens.stage_data import ALL_STAGES, STAGES, StageLayout, make_layout
from tasks.audio_tasks import _POSITION, number_positions


def task_name(dataset: str, stage: str) -> str:
    return f"{dataset}_{stage}"


class TokenCacheSource(seqio.DataSource):
    """Utterances of token caches (one cache directory per split), sharded by cache files.

    Each example: {"id": string, "semantic": int32 [S], "acoustic": int32 [F, Q],
    "seconds": float32}, in `TokenCache.utterances` order.
    """

    def __init__(self, cache_dirs: Mapping[str, str | os.PathLike]):
        self.caches = {split: TokenCache(path) for split, path in cache_dirs.items()}
        vocabularies = {split: cache.vocabulary() for split, cache in self.caches.items()}
        if len(set(vocabularies.values())) != 1:
            raise ValueError(f"token caches {dict(cache_dirs)} have different vocabularies "
                             f"{vocabularies}; tokenize every split with the same codec and "
                             "semantic tokenizer")
        self.vocabulary = next(iter(vocabularies.values()))
        # Caching permitted: everything before the placeholder (utterances, positions) is
        # deterministic; the crops come after it, per epoch.
        super().__init__(splits=list(self.caches), caching_permitted=True,
                         num_input_examples={s: c.num_utterances for s, c in self.caches.items()})

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def list_shards(self, split: str) -> Sequence[str]:
        cache = self._cache(split)
        return [cache.shard_path(i) for i in range(cache.num_shards)]

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                    shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                    use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
        del shuffle, seed, sequence_length, use_cached, num_epochs  # order is the cache's
        cache = self._cache(split)
        index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)

        def generate():
            for u in cache.utterances(index, count):
                yield {"id": u.id, "semantic": u.semantic, "acoustic": u.acoustic,
                       "seconds": np.float32(u.seconds)}

        quantizers = self.vocabulary.num_quantizers
        return tf.data.Dataset.from_generator(generate, output_signature={
            "id": tf.TensorSpec([], tf.string),
            "semantic": tf.TensorSpec([None], tf.int32),
            "acoustic": tf.TensorSpec([None, quantizers], tf.int32),
            "seconds": tf.TensorSpec([], tf.float32)})

    def _cache(self, split: str) -> TokenCache:
        if split not in self.caches:
            raise ValueError(f"split {split!r} has no token cache; registered: {sorted(self.caches)}")
        return self.caches[split]


def drop_unaligned(dataset: tf.data.Dataset, *, frame_ratio: int) -> tf.data.Dataset:
    """Drops utterances without one time-aligned frame (the TF-free reader skips them too)."""
    def usable(ex):
        semantic = tf.shape(ex["semantic"])[0]
        acoustic = tf.shape(ex["acoustic"])[0]
        return tf.minimum(semantic, -(-acoustic // frame_ratio)) >= 1
    return dataset.filter(usable)


def stage_examples(dataset: tf.data.Dataset, *, layout: StageLayout, seed: int) -> tf.data.Dataset:
    """Counts epochs (each pass restarts at position 0) and lays out each crop with numpy."""

    def count_epochs(epoch, ex):
        epoch = epoch + tf.cast(tf.equal(ex[_POSITION], 0), tf.int64)
        return epoch, (epoch, ex)

    def numpy_example(example_id, semantic, acoustic, epoch):
        ex = layout.example(example_id.decode("utf-8"), semantic, acoustic, seed, int(epoch))
        return ex.inputs, ex.targets, ex.loss_mask

    def lay_out(epoch, ex):
        inputs, targets, loss_mask = tf.numpy_function(
            numpy_example, [ex["id"], ex["semantic"], ex["acoustic"], epoch],
            [tf.int32, tf.int32, tf.float32], stateful=False)
        for tensor in (inputs, targets, loss_mask):
            tensor.set_shape([layout.length])
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask, "id": ex["id"]}

    dataset = dataset.scan(tf.constant(-1, tf.int64), count_epochs)
    return dataset.map(lay_out, num_parallel_calls=tf.data.AUTOTUNE)  # order-preserving


def output_features(vocab_size: int) -> dict[str, seqio.Feature]:
    vocabulary = seqio.PassThroughVocabulary(size=vocab_size)
    return {"inputs": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
            "targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
            "loss_mask": seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False,
                                       dtype=tf.float32)}


def register_stage_tasks(dataset: str, cache_dirs: str | os.PathLike | Mapping[str, str],
                         num_coarse: int | None = 4,
                         crop_seconds: Mapping[str, float] | None = None, seed: int = 0,
                         stages: Sequence[str] = STAGES) -> list[str]:
    """Registers `{dataset}_{stage}` for each stage over token caches; returns the names.

    cache_dirs: one cache directory (its manifest's split names the split) or {split: dir}.
    num_coarse: Q'; the fine stage is left out when Q' covers every level (piano: Q' = Q = 3).
    crop_seconds: per-stage crops, default 30 / 10 / 3 s (acoustic: 10 s).
    stages: which to register, of ALL_STAGES (default AudioLM's three; add "acoustic" for the
    acoustic-only baseline). A task of the same name registered
    earlier is replaced.
    """
    if isinstance(cache_dirs, (str, os.PathLike)):
        cache_dirs = {TokenCache(cache_dirs).manifest["split"]: os.fspath(cache_dirs)}
    source = TokenCacheSource(cache_dirs)
    vocab = source.vocabulary
    manifest = next(iter(source.caches.values())).manifest
    crop_seconds = dict(crop_seconds or {})
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise ValueError(f"stages {unknown} are unknown; use some of {ALL_STAGES}")
    names = []
    for stage in stages:
        if stage == "fine" and num_coarse == vocab.num_quantizers:
            continue
        layout = make_layout(stage, vocab, crop_seconds.get(stage), num_coarse, manifest)
        name = task_name(dataset, stage)
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(name, source=source, output_features=output_features(vocab.size),
                               preprocessors=[
                                   functools.partial(drop_unaligned, frame_ratio=layout.frame_ratio),
                                   number_positions,
                                   seqio.CacheDatasetPlaceholder(),
                                   functools.partial(stage_examples, layout=layout, seed=int(seed)),
                               ],
                               shuffle_buffer_size=1024)
        names.append(name)
    return names


__all__ = ["TokenCacheSource", "register_stage_tasks", "task_name", "drop_unaligned",
           "stage_examples", "output_features"]
