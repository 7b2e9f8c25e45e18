"""Stage-LM training batches over a token cache (TensorFlow-free), with exact resume.

Per utterance and epoch: a random time crop (stage 1: 30 s, stage 2: 10 s, stage 3: 3 s, the
acoustic-only baseline 10 s like stage 2, by default), placed by
`audiolm_jax.data.crops.crop_rng(seed, epoch, utterance id)` so the SeqIO tasks
(`tasks/stage_tasks.py`) crop exactly alike; then the layouts of `audiolm_jax.lm.layouts`
(semantic / coarse / fine / acoustic example, consecutive repeats of semantic tokens removed for
stages 1 and 2) padded to one fixed length per stage.

Alignment by time: a crop starts on a semantic frame (40 ms at 25 Hz), so semantic frames
[s, s + L) and acoustic frames [r*s, r*(s + L)) (r = 50 Hz / 25 Hz = 2) cover the same audio.
An utterance spans T = min(S, ceil(F / r)) semantic frames (S semantic and F acoustic frames may
differ by one frame at the end); one of T <= L frames is taken whole. Fixed lengths per stage,
with L = round(crop_seconds * 25), Q' = num_coarse and Q quantizers:

    semantic  L                             (30 s: 750)
    coarse    L + 1 + r*L*Q'                (10 s, Q'=4: 250 + 1 + 2000 = 2251)
    fine      r*L*Q' + 1 + r*L*(Q - Q')     (3 s, Q=12, Q'=4: 600 + 1 + 1200 = 1801)
    acoustic  r*L*Q'                        (10 s, Q'=4: 2000; the baseline without semantic
                                             tokens: stage 2's acoustic part alone)

Packing several short utterances into one row is not offered: the Transformer has no segment
mask, so attention would cross utterances.

The reader holds its host's part of the cache in memory (int16 codes, as in the shards: 1.2 kB
per second of audio at Q=12; stage 1 keeps no codes): the small world's 0.5 h is ~2 MB, so each
epoch is a permutation in RAM and a resumed run needs only (epoch, position).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterator, Mapping

import gin
import numpy as np

from audiolm_jax.data import crops
from audiolm_jax.lm import layouts
from audiolm_jax.lm.layouts import AudioVocabulary, StageExample
from audiolm_jax.tokens.cache import ACOUSTIC_FRAME_RATE, SEMANTIC_FRAME_RATE, TokenCache

STAGES = ("semantic", "coarse", "fine")          # AudioLM's three stages
BASELINE_STAGES = ("acoustic",)                  # the acoustic-only baseline (no semantic tokens)
ALL_STAGES = STAGES + BASELINE_STAGES
DEFAULT_CROP_SECONDS = {"semantic": 30.0, "coarse": 10.0, "fine": 3.0, "acoustic": 10.0}
# Keys of `get_state()` that describe the stream, not the position in it.
_STREAM_KEYS = ("stage", "crop_seconds", "num_coarse", "seed", "shuffle", "shard_index",
                "shard_count", "num_utterances", "cache")


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """How one stage turns an utterance's tokens into a fixed-length training example."""
    stage: str
    vocab: AudioVocabulary
    crop_seconds: float
    num_coarse: int | None = None     # Q'; every stage but the semantic one
    frame_ratio: int = 2              # acoustic frames per semantic frame (50 Hz / 25 Hz)
    semantic_rate: float = SEMANTIC_FRAME_RATE

    def __post_init__(self):
        if self.stage not in ALL_STAGES:
            raise ValueError(f"stage {self.stage!r} is unknown; use one of {ALL_STAGES}")
        if self.crop_frames < 1:
            raise ValueError(f"crop_seconds={self.crop_seconds} is shorter than one semantic frame "
                             f"({1 / self.semantic_rate:.3f} s); use a longer crop")
        if self.stage == "semantic":
            return
        q = self.vocab.num_quantizers
        if self.num_coarse is None or not 1 <= self.num_coarse <= q:
            raise ValueError(f"num_coarse={self.num_coarse} for the {self.stage} stage: give the "
                             f"coarse levels Q' in [1, {q}] (speech: 4 of 12; piano: all 3)")
        if self.stage == "fine" and self.num_coarse == q:
            raise ValueError(f"the fine stage needs levels above num_coarse={self.num_coarse}, but "
                             f"the cache has only Q={q}; there is no fine stage when the coarse "
                             "stage predicts every level (piano)")

    @property
    def crop_frames(self) -> int:
        """L: semantic frames in a crop."""
        return int(round(float(self.crop_seconds) * self.semantic_rate))

    @property
    def length(self) -> int:
        """Fixed sequence length of this stage's examples (see the module docstring)."""
        frames = self.crop_frames
        acoustic = self.frame_ratio * frames
        if self.stage == "semantic":
            return frames
        if self.stage == "coarse":
            return frames + 1 + acoustic * self.num_coarse
        if self.stage == "acoustic":
            return acoustic * self.num_coarse
        return acoustic * self.vocab.num_quantizers + 1

    @property
    def uses_codes(self) -> bool:
        return self.stage != "semantic"

    def crop(self, semantic: np.ndarray, acoustic: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Time-aligned crop: semantic [S] and acoustic [F, ...] -> ([<= L], [<= r*L, ...])."""
        return aligned_crop(semantic, acoustic, self.crop_frames, self.frame_ratio, rng)

    def example(self, utterance_id: str, semantic: np.ndarray, acoustic: np.ndarray, seed: int,
                epoch: int) -> StageExample:
        """The padded example of one utterance in one epoch (the same on every input path).

        semantic: int [S]; acoustic: int [F, Q] (for stage 1 only its frame count is read).
        """
        rng = crops.crop_rng(seed, epoch, utterance_id)
        semantic, acoustic = self.crop(semantic, acoustic, rng)
        if self.stage == "semantic":
            example = layouts.semantic_example(semantic, self.vocab)
        elif self.stage == "coarse":
            example = layouts.coarse_example(semantic, acoustic, self.vocab, self.num_coarse)
        elif self.stage == "acoustic":
            example = layouts.acoustic_example(acoustic, self.vocab, self.num_coarse)
        else:
            example = layouts.fine_example(acoustic, self.vocab, self.num_coarse)
        return layouts.pad_example(example, self.length)


def covered_frames(num_semantic: int, num_acoustic: int, frame_ratio: int = 2) -> int:
    """T: semantic frames that both token streams cover (S and F may differ by a frame)."""
    return min(int(num_semantic), -(-int(num_acoustic) // frame_ratio))


def aligned_crop(semantic: np.ndarray, acoustic: np.ndarray, crop_frames: int, frame_ratio: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """semantic[s:s+L] and acoustic[r*s:r*(s+L)], s uniform in [0, T - L]; whole if T <= L."""
    total = covered_frames(len(semantic), len(acoustic), frame_ratio)
    start = crops.crop_offset(total, crop_frames, rng)
    stop = start + min(crop_frames, total)
    return semantic[start:stop], acoustic[frame_ratio * start:frame_ratio * stop]


def make_layout(stage: str, vocab: AudioVocabulary, crop_seconds: float | None = None,
                num_coarse: int | None = None, manifest: Mapping[str, Any] | None = None
                ) -> StageLayout:
    """A StageLayout with the stage's default crop; frame rates from a cache manifest if given."""
    if stage not in ALL_STAGES:
        raise ValueError(f"stage {stage!r} is unknown; use one of {ALL_STAGES}")
    semantic_rate, acoustic_rate = SEMANTIC_FRAME_RATE, ACOUSTIC_FRAME_RATE
    if manifest is not None:
        semantic_rate = float(manifest["semantic"].get("frame_rate", semantic_rate))
        acoustic_rate = float(manifest["acoustic"].get("frame_rate", acoustic_rate))
    ratio = acoustic_rate / semantic_rate
    if ratio != int(ratio) or ratio < 1:
        raise ValueError(f"acoustic frame rate {acoustic_rate} Hz is not a whole multiple of the "
                         f"semantic {semantic_rate} Hz; stage crops align frames by time and need one")
    crop_seconds = DEFAULT_CROP_SECONDS[stage] if crop_seconds is None else float(crop_seconds)
    return StageLayout(stage, vocab, crop_seconds, num_coarse, int(ratio), semantic_rate)


def cache_fingerprint(manifest: Mapping[str, Any]) -> str:
    """Short hash of the shards' checksums: a saved position belongs to this cache's content."""
    shards = [(s["file"], s["sha256"]) for s in manifest["shards"]]
    return hashlib.sha256(json.dumps(shards).encode("utf-8")).hexdigest()[:16]


def epoch_order(num_items: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Read order of one epoch: identity, or a permutation keyed by (seed, epoch) only."""
    order = np.arange(num_items)
    if shuffle:
        order = np.random.default_rng(crops.stable_seed("order", int(seed), int(epoch))).permutation(order)
    return order


class StageBatches:
    """Iterator of fixed-shape stage batches from one host's part of a token cache.

    Each batch: {"inputs": int32 [batch, length], "targets": int32 [batch, length],
    "loss_mask": float32 [batch, length]} (what `lm.StageObjective` trains on); `last_ids` holds
    the utterance ids of the last batch. Host `shard_index` of `shard_count` reads cache shards
    shard_index, shard_index + shard_count, ... (`TokenCache.utterances`), so hosts are disjoint.
    Batches run across epoch boundaries; `num_epochs=None` is endless. Utterances without a
    single time-aligned frame are skipped and listed in `skipped` ({id: reason}).
    """

    def __init__(self, cache: TokenCache | str | os.PathLike, layout: StageLayout,
                 batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, drop_remainder: bool = True,
                 shard_index: int = 0, shard_count: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; use a positive batch size")
        self.cache = cache if isinstance(cache, TokenCache) else TokenCache(cache)
        self.layout = layout
        self.batch_size, self.seed, self.shuffle = int(batch_size), int(seed), bool(shuffle)
        self.num_epochs, self.drop_remainder = num_epochs, drop_remainder
        self.shard_index, self.shard_count = int(shard_index), int(shard_count)
        self.skipped: dict[str, str] = {}
        self.ids: list[str] = []
        self._semantic: list[np.ndarray] = []
        self._acoustic: list[np.ndarray] = []
        for utterance in self.cache.utterances(self.shard_index, self.shard_count):
            self._add(utterance)
        if not self.ids:
            raise ValueError(f"{self.cache.path}: host {shard_index} of {shard_count} has no usable "
                             f"utterance (skipped: {self.skipped}); rebuild the cache or use fewer hosts")
        self._fingerprint = cache_fingerprint(self.cache.manifest)
        self._epoch, self._position = 0, 0
        self._order: tuple[int, np.ndarray] | None = None
        self.last_ids: list[str] = []

    def _add(self, utterance) -> None:
        frames = covered_frames(len(utterance.semantic), len(utterance.acoustic),
                                self.layout.frame_ratio)
        if frames < 1:
            self.skipped[utterance.id] = (f"no time-aligned frame (semantic {len(utterance.semantic)}, "
                                          f"acoustic {len(utterance.acoustic)} frames)")
            return
        # Stage 1 reads only the frame count: a [F, 0] array keeps the shape and no bytes.
        acoustic = (utterance.acoustic.astype(np.int16) if self.layout.uses_codes
                    else np.zeros((len(utterance.acoustic), 0), np.int16))
        self.ids.append(utterance.id)
        self._semantic.append(utterance.semantic.astype(np.int32))
        self._acoustic.append(acoustic)

    @property
    def num_utterances(self) -> int:
        return len(self.ids)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.ids), self.seed, epoch, self.shuffle))
        return self._order[1]

    def example(self, index: int, epoch: int) -> StageExample:
        return self.layout.example(self.ids[index], self._semantic[index], self._acoustic[index],
                                   self.seed, epoch)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        items: list[tuple[str, StageExample]] = []
        while len(items) < self.batch_size:
            if self.num_epochs is not None and self._epoch >= self.num_epochs:
                break
            order = self.epoch_order(self._epoch)
            if self._position >= len(order):
                self._epoch, self._position = self._epoch + 1, 0
                continue
            index = int(order[self._position])
            items.append((self.ids[index], self.example(index, self._epoch)))
            self._position += 1
        if not items or (self.drop_remainder and len(items) < self.batch_size):
            raise StopIteration
        self.last_ids = [i for i, _ in items]
        return {"inputs": np.stack([e.inputs for _, e in items]),
                "targets": np.stack([e.targets for _, e in items]),
                "loss_mask": np.stack([e.loss_mask for _, e in items])}

    def get_state(self) -> dict[str, Any]:
        """Position after the last batch, plus the stream it belongs to (JSON-able)."""
        return {"epoch": self._epoch, "position": self._position, "stage": self.layout.stage,
                "crop_seconds": self.layout.crop_seconds, "num_coarse": self.layout.num_coarse,
                "seed": self.seed, "shuffle": self.shuffle, "shard_index": self.shard_index,
                "shard_count": self.shard_count, "num_utterances": self.num_utterances,
                "cache": self._fingerprint}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resume from `get_state()` of a reader over the same cache and settings."""
        missing = [k for k in ("epoch", "position", *_STREAM_KEYS) if k not in state]
        if missing:
            raise ValueError(f"stage data state {dict(state)} lacks {missing}; pass a dict saved "
                             "by StageBatches.get_state()")
        mine = self.get_state()
        differ = {k: (state[k], mine[k]) for k in _STREAM_KEYS if state[k] != mine[k]}
        if differ:
            raise ValueError(f"stage data state was saved for a different stream ({{key: (saved, "
                             f"this reader)}}: {differ}); build the reader with the saved "
                             f"settings over the same cache ({self.cache.path})")
        self._epoch, self._position = int(state["epoch"]), int(state["position"])


@gin.configurable
def stage_batches(cache_dir: str = gin.REQUIRED, stage: str = gin.REQUIRED,
                  batch_size: int = gin.REQUIRED, crop_seconds: float | None = None,
                  num_coarse: int | None = None, seed: int = 0, shuffle: bool = True,
                  num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
                  pack: bool = False, model_vocab_size: int | None = None) -> StageBatches:
    """Stage batches over the token cache at `cache_dir`: `train.train_data = @stage_batches`.

    stage: "semantic", "coarse", "fine", or "acoustic" (the acoustic-only baseline: stage 2
    without its semantic prefix). crop_seconds: None takes 30 / 10 / 3 / 10 s.
    num_coarse: Q' for the coarse, fine and acoustic stages (speech 4; piano: all levels, no fine stage).
    batch_size: the per-host batch (the global batch is batch_size * shard_count).
    pack: not supported (the Transformer has no segment mask; attention would cross utterances).
    model_vocab_size: the model's `vocab_size`; when given, a cache whose vocabulary is larger is
      an error here rather than out-of-range ids in the model.
    """
    if pack:
        raise ValueError("stage_batches(pack=True): packing needs a segment mask so attention "
                         "stays inside each utterance, and lm.Transformer has none; use pack=False")
    cache = TokenCache(cache_dir)
    vocab = cache.vocabulary()
    if model_vocab_size is not None and vocab.size > model_vocab_size:
        raise ValueError(
            f"{cache.path}: the cache's vocabulary (K={vocab.semantic_size}, "
            f"Q={vocab.num_quantizers}, N={vocab.codebook_size}) has {vocab.size} ids but the model "
            f"has vocab_size={model_vocab_size}; override the experiment's macro: "
            f"--gin.VOCAB_SIZE={vocab.size}")
    layout = make_layout(stage, vocab, crop_seconds, num_coarse, cache.manifest)
    return StageBatches(cache, layout, batch_size, seed=seed, shuffle=shuffle,
                        num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count)


def stage_length(cache_dir: str | os.PathLike, stage: str, crop_seconds: float | None = None,
                 num_coarse: int | None = None) -> int:
    """The fixed sequence length of `stage` over a cache (for AOT checks and benchmarks)."""
    cache = TokenCache(cache_dir)
    return make_layout(stage, cache.vocabulary(), crop_seconds, num_coarse, cache.manifest).length


__all__ = ["STAGES", "BASELINE_STAGES", "ALL_STAGES", "DEFAULT_CROP_SECONDS", "StageLayout", "StageBatches", "aligned_crop",
           "covered_frames", "make_layout", "cache_fingerprint", "epoch_order", "stage_batches",
           "stage_length"]
