"""A TensorFlow-free reader of random audio crops from an audio tree, with exact resume.

The stream is the examples of one split, epoch after epoch, in a fixed order (sorted ids, or a
per-epoch permutation keyed by the seed), strided over hosts, each example decoded with
`load_audio` and cropped with `crops.crop_example`. Batches run across epoch boundaries, so every
batch is full until `num_epochs` (None: endless) is reached. The SeqIO tasks in `tasks/` yield the
same crops in the same order (unshuffled), which tests/test_audio_tasks.py checks bit for bit.

Bad files are skipped with a logged reason and recorded in `reader.skipped` ({path: reason});
they never stop the stream. A clip shorter than the crop (down to one sample) is a valid example:
it is zero-padded and its `length` says how much of the crop is real.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from audiolm_jax.audio import SAMPLE_RATE, AudioError, load_audio
from audiolm_jax.data import crops
from audiolm_jax.data.corpus import CorpusIndex, Example, scan_corpus

log = logging.getLogger(__name__)

# Keys of `get_state()` that describe the stream rather than the position in it: a state saved from
# a differently configured reader cannot resume this one.
_STREAM_KEYS = ("split", "seed", "shuffle", "shard_index", "num_shards", "num_examples")


def try_load_audio(path: str,
                   sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray | None, str | None]:
    """(`wav[samples]` float32, None), or (None, reason) for a file that cannot be used.

    Shared by every corpus reader (this one, the TFDS builders) so they skip the same files for
    the same reasons. Anything unexpected is a skip too: one odd file must not stop a corpus.
    """
    try:
        return load_audio(path, sample_rate=sample_rate), None
    except AudioError as e:
        return None, f"{e.kind}: {e.reason}"
    except Exception as e:  # noqa: BLE001 -- unknown decoder failures are still one bad file.
        log.exception("unexpected error decoding %s", path)
        return None, f"unexpected {type(e).__name__}: {e}"


class AudioCropReader:
    """Iterator of crop batches from one split of an audio tree.

    Each batch: {"audio": float32 [batch, samples], "length": int32 [batch] (valid samples),
    "mask": bool [batch, samples], "id": str [batch]}, samples = round(crop_seconds * sample_rate).

    Multi-host: host `shard_index` of `num_shards` reads positions shard_index, shard_index +
    num_shards, ... of each epoch's order (shard sizes differ by at most one; streams are endless
    by default, so hosts never run dry). `get_state()`/`set_state()` save and restore the position
    as a JSON-able dict, so a restored reader continues with exactly the batches the saved one
    would have produced next.
    """

    def __init__(self, root: str | os.PathLike, layout: str, split: str, crop_seconds: float,
                 seed: int, sample_rate: int = SAMPLE_RATE, batch_size: int = 8,
                 shuffle: bool = True, num_epochs: int | None = None, drop_remainder: bool = True,
                 shard_index: int = 0, num_shards: int = 1, index: CorpusIndex | None = None,
                 cache_audio: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; use a positive batch size")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index={shard_index} with num_shards={num_shards}; "
                             "need 0 <= shard_index < num_shards")
        self.index = index if index is not None else scan_corpus(root, layout, splits=[split])
        self.examples: tuple[Example, ...] = self.index.split(split)
        if len(self.examples) < num_shards:
            raise ValueError(f"split {split!r} of {self.index.root} has {len(self.examples)} "
                             f"examples, fewer than num_shards={num_shards}; use fewer hosts")
        self.split, self.seed, self.shuffle = split, int(seed), bool(shuffle)
        self.sample_rate, self.batch_size = int(sample_rate), int(batch_size)
        self.crop_samples = crops.crop_length(crop_seconds, sample_rate)
        self.num_epochs, self.drop_remainder = num_epochs, drop_remainder
        self.shard_index, self.num_shards = int(shard_index), int(num_shards)
        self.skipped: dict[str, str] = {}
        # Decoded clips kept in memory (a small corpus, many epochs): a 1 s crop otherwise costs
        # decoding the whole utterance, which starves an accelerator.
        self._cache: dict[str, np.ndarray] | None = {} if cache_audio else None
        self._epoch, self._position = 0, 0
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, order) memo

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices into `self.examples` that this shard reads in `epoch`, in order."""
        if self._order is None or self._order[0] != epoch:
            order = np.arange(len(self.examples))
            if self.shuffle:
                rng = np.random.default_rng(crops.stable_seed("order", self.seed, epoch))
                order = rng.permutation(order)
            self._order = (epoch, order[self.shard_index::self.num_shards])
        return self._order[1]

    def __iter__(self) -> "AudioCropReader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        items: list[tuple[str, np.ndarray, int]] = []
        while len(items) < self.batch_size:
            if self.num_epochs is not None and self._epoch >= self.num_epochs:
                break
            order = self.epoch_order(self._epoch)
            if self._position >= len(order):
                self._check_not_all_bad(order)
                self._epoch, self._position = self._epoch + 1, 0
                continue
            example = self.examples[order[self._position]]
            self._position += 1
            wav = self._decode(example)
            if wav is not None:
                crop, valid = crops.crop_example(wav, self.crop_samples, self.seed, self._epoch,
                                                 example.id)
                items.append((example.id, crop, valid))
        if not items or (self.drop_remainder and len(items) < self.batch_size):
            raise StopIteration
        lengths = np.array([v for _, _, v in items], np.int32)
        return {"audio": np.stack([c for _, c, _ in items]), "length": lengths,
                "mask": crops.length_mask(lengths, self.crop_samples),
                "id": np.array([i for i, _, _ in items])}

    def transform_clips(self, transform: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]
                        ) -> None:
        """Decode every clip of the split once and cache `transform(clips)` (a list of clips of
        the same lengths, in order) in their place: crops are then cut from the transformed
        clips, and a costly per-clip step (a codec's resynthesis) is paid once per clip instead
        of once per crop. Needs `cache_audio=True`. Unusable files are skipped as the stream
        skips them."""
        if self._cache is None:
            raise ValueError("transform_clips needs a reader built with cache_audio=True: the "
                             "transformed clips live in its cache")
        decoded = [(e.path, self._decode(e)) for e in self.examples]
        decoded = [(path, wav) for path, wav in decoded if wav is not None]
        out = list(transform([wav for _, wav in decoded]))
        if [o.shape for o in out] != [wav.shape for _, wav in decoded]:
            raise ValueError("transform_clips: the transform must return one clip per input "
                             "clip, each of the input's shape")
        self._cache.update((path, np.asarray(o, np.float32)) for (path, _), o in zip(decoded, out))

    def _decode(self, example: Example) -> np.ndarray | None:
        if example.path in self.skipped:  # Known bad: do not decode (or warn) again each epoch.
            return None
        if self._cache is not None and example.path in self._cache:
            return self._cache[example.path]
        wav, reason = try_load_audio(example.path, self.sample_rate)
        if wav is not None and self._cache is not None:
            self._cache[example.path] = wav
        if wav is None:
            self.skipped[example.path] = reason
            log.warning("skipping %s (split %s): %s", example.path, self.split, reason)
        return wav

    def _check_not_all_bad(self, order: np.ndarray) -> None:
        # Without this an all-bad shard would spin forever looking for a good file.
        if all(self.examples[i].path in self.skipped for i in order):
            raise ValueError(
                f"every file of split {self.split!r} (shard {self.shard_index}/{self.num_shards}) "
                f"under {self.index.root} is unusable: {self.skipped}; fix or replace the files")

    def get_state(self) -> dict[str, Any]:
        """The position after the last batch returned, plus the stream it belongs to (JSON-able)."""
        return {"epoch": self._epoch, "position": self._position, "split": self.split,
                "seed": self.seed, "shuffle": self.shuffle, "shard_index": self.shard_index,
                "num_shards": self.num_shards, "num_examples": len(self.examples)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resume from `get_state()` of a reader over the same tree and settings."""
        missing = [k for k in ("epoch", "position", *_STREAM_KEYS) if k not in state]
        if missing:
            raise ValueError(f"reader state {dict(state)} lacks {missing}; pass a dict saved by "
                             "AudioCropReader.get_state()")
        mine = self.get_state()
        differ = {k: (state[k], mine[k]) for k in _STREAM_KEYS if state[k] != mine[k]}
        if differ:
            raise ValueError(f"reader state was saved for a different stream ({{key: (saved, "
                             f"this reader)}}: {differ}); build the reader with the saved settings")
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
