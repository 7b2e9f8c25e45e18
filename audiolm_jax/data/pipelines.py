"""Gin-bindable input pipelines for the trainer: `train(train_data=@audio_crop_batches, ...)`.

The trainer calls a data factory as `factory(shard_index=i, shard_count=n)` on each host and
expects an iterator of dicts of numeric numpy arrays with `get_state()/set_state()`, which it
saves in every checkpoint so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import gin
import numpy as np

from audiolm_jax.data.audio_reader import AudioCropReader


class NumericBatches:
    """Keeps the numeric arrays of each batch (drops ids and other strings) and the reader's state.

    Each batch: {"audio": float32 [batch, samples], "audio_length": int32 [batch]}.
    """

    def __init__(self, reader: AudioCropReader):
        self.reader = reader

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self.reader)
        return {"audio": batch["audio"], "audio_length": batch["length"]}

    def get_state(self) -> dict[str, Any]:
        return self.reader.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.reader.set_state(state)


@gin.configurable
def audio_crop_batches(root: str = gin.REQUIRED, layout: str = "libri_light", split: str = "train",
                       crop_seconds: float = 1.0, batch_size: int = gin.REQUIRED, seed: int = 0,
                       shuffle: bool = True, num_epochs: int | None = None,
                       cache_audio: bool = False, shard_index: int = 0,
                       shard_count: int = 1) -> NumericBatches:
    """Random audio crops of one split of a corpus tree, for codec and w2v-BERT training.

    batch_size: the per-host batch (the global batch is batch_size * shard_count).
    cache_audio: keep decoded clips in memory (for corpora that fit in RAM: the small world's
      0.5 h is 115 MB of float32); crops are unchanged.
    """
    reader = AudioCropReader(root, layout, split, crop_seconds, seed, batch_size=batch_size,
                             shuffle=shuffle, num_epochs=num_epochs, shard_index=shard_index,
                             num_shards=shard_count, cache_audio=cache_audio)
    return NumericBatches(reader)
