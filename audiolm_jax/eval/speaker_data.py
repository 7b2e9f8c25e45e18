"""Which utterances the speaker classifier learns from and which it is judged on.

The classifier must know the voices of `heldout_voices` (the continuation prompts of Table III
come from them: voices the stage models never heard), yet never see an utterance it or the
continuation test is scored on. So (the paper trains on train-clean-100 + test-clean speakers,
with a random 90/10 split):

  role "train": every utterance of `train` (10 voices) plus the even-numbered utterances (0, 2,
                4, ... in id order, per voice) of `heldout_voices` ("enrolment" of awb and ked);
  role "eval":  every utterance of `heldout_books` (the 10 train voices reading unseen books)
                plus the odd-numbered utterances of `heldout_voices`.

The label set is every voice of both roles (12 on the small world), named in the gin experiment
so the checkpoint's operative config carries it. Continuation and acoustic-generation prompts are
taken from the "eval" role only (`eval_prompts`), so a continuation is never scored by a
classifier that trained on its prompt's utterance.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import defaultdict
from typing import Any, Iterator, Mapping, Sequence

import gin
import numpy as np

from audiolm_jax.data.audio_reader import AudioCropReader
from audiolm_jax.data.corpus import CorpusIndex, Example, scan_corpus

TRAIN_SPLIT, HELDOUT_VOICES, HELDOUT_BOOKS = "train", "heldout_voices", "heldout_books"
ROLES = ("train", "eval")


def speaker_roles(index: CorpusIndex) -> dict[str, list[Example]]:
    """{"train": [...], "eval": [...]} examples by the rule of the module docstring."""
    out: dict[str, list[Example]] = {"train": [], "eval": []}
    enrol: dict[str, list[Example]] = defaultdict(list)
    for e in index.examples:
        if e.split == TRAIN_SPLIT:
            out["train"].append(e)
        elif e.split == HELDOUT_BOOKS:
            out["eval"].append(e)
        elif e.split == HELDOUT_VOICES:
            enrol[e.speaker].append(e)
    for speaker in sorted(enrol):
        for i, e in enumerate(sorted(enrol[speaker], key=lambda x: x.id)):
            out["train" if i % 2 == 0 else "eval"].append(e)
    return out


def corpus_labels(index: CorpusIndex) -> tuple[str, ...]:
    """Every speaker of the train and eval roles, sorted: the label set the corpus implies."""
    roles = speaker_roles(index)
    return tuple(sorted({e.speaker for r in ROLES for e in roles[r]}))


def check_labels(labels: Sequence[str], index: CorpusIndex) -> None:
    """The configured labels must be exactly the corpus's speakers (a missing one could never be
    predicted; an extra one means the gin file and the corpus disagree)."""
    want = corpus_labels(index)
    if tuple(sorted(labels)) != want:
        missing = sorted(set(want) - set(labels))
        extra = sorted(set(labels) - set(want))
        raise ValueError(f"ClassifierConfig.labels disagree with the speakers of {index.root}: "
                         f"missing {missing}, not in the corpus {extra}; set the labels to {list(want)}")


def eval_prompts(index: CorpusIndex, splits: Sequence[str] = (HELDOUT_VOICES,),
                 min_seconds: float = 4.0, max_seconds: float = 10.0,
                 durations: Mapping[str, float] | None = None) -> list[Example]:
    """Eval-role utterances of `splits` lasting [min_seconds, max_seconds] (the paper's 4-10 s
    test-clean prompts). Durations come from `durations` or the files' headers."""
    from audiolm_jax.audio import audio_info  # noqa: PLC0415

    chosen = []
    for e in speaker_roles(index)["eval"]:
        if e.split not in splits:
            continue
        seconds = durations[e.id] if durations is not None else audio_info(e.path).duration_s
        if min_seconds <= seconds <= max_seconds:
            chosen.append(e)
    return sorted(chosen, key=lambda e: e.id)


def role_index(index: CorpusIndex, role: str) -> CorpusIndex:
    """A CorpusIndex whose one split, named after `role`, holds that role's examples."""
    if role not in ROLES:
        raise ValueError(f"role={role!r}; use one of {ROLES}")
    examples = tuple(dataclasses.replace(e, split=role, id=f"{e.split}/{e.id}")
                     for e in speaker_roles(index)[role])
    if not examples:
        raise ValueError(f"{index.root}: no utterance has speaker-classifier role {role!r}; it needs "
                         f"splits {TRAIN_SPLIT}, {HELDOUT_VOICES} and {HELDOUT_BOOKS}")
    return CorpusIndex(root=index.root, layout=index.layout,
                       examples=tuple(sorted(examples, key=lambda e: e.id)))


class LabelledCrops:
    """Crop batches with an int32 class label per row: {"audio", "audio_length", "label"}."""

    def __init__(self, reader: AudioCropReader, label_of: Mapping[str, int]):
        self.reader, self.label_of = reader, dict(label_of)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self.reader)
        labels = np.array([self.label_of[i] for i in batch["id"]], np.int32)
        return {"audio": batch["audio"], "audio_length": batch["length"], "label": labels}

    def get_state(self) -> dict[str, Any]:
        return self.reader.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.reader.set_state(state)


@gin.configurable
def speaker_crop_batches(root: str = gin.REQUIRED, labels: Sequence[str] = gin.REQUIRED,
                         role: str = "train", crop_seconds: float = 1.0,
                         batch_size: int = gin.REQUIRED, seed: int = 0, shuffle: bool = True,
                         num_epochs: int | None = None, cache_audio: bool = True,
                         layout: str = "libri_light", shard_index: int = 0,
                         shard_count: int = 1, resynthesize_codec: str | None = None
                         ) -> LabelledCrops:
    """Random crops of one role's utterances, labelled by speaker (index into `labels`).

    resynthesize_codec: a codec run or export (`codec.frozen.load_codec`): every utterance is
    encoded and decoded by it (all levels) once, whole, before crops are cut from it (the audio
    is then cached in memory whatever `cache_audio` says). Why: the rows the classifier judges
    (reconstructions, acoustic generations, continuations) all come out of that codec's decoder,
    and a classifier trained on clean audio can read its artefacts instead of the voice
    (session 11: every continuation labelled one voice, 1/32 reconstructions right). Once per
    utterance, not per crop: resynthesizing each batch of crops held a GPU run to 39 steps in
    its 120 s box (session 22)."""
    index = scan_corpus(root, layout)
    check_labels(labels, index)
    sub = role_index(index, role)
    position = {name: i for i, name in enumerate(labels)}
    reader = AudioCropReader(root, layout, role, crop_seconds, seed, batch_size=batch_size,
                             shuffle=shuffle, num_epochs=num_epochs, shard_index=shard_index,
                             num_shards=shard_count, index=sub,
                             cache_audio=cache_audio or bool(resynthesize_codec))
    if resynthesize_codec:
        _resynthesize(reader, resynthesize_codec, role)
    return LabelledCrops(reader, {e.id: position[e.speaker] for e in sub.examples})


# Resynthesized clips of this process, by codec (path and modification time) and clip paths: the
# trainer rebuilds its eval data at every eval, and resynthesizing the 245 eval utterances again
# each time cost a GPU chain's classifier 15-53 s per eval (session 25). The reader's cache holds
# the same arrays, so the train role's clips are not stored twice.
_RESYNTHESIZED: dict[tuple, list[np.ndarray]] = {}


def _resynthesize(reader: AudioCropReader, codec_path: str, role: str) -> None:
    key = (os.path.abspath(codec_path), os.stat(codec_path).st_mtime_ns,
           tuple(e.path for e in reader.examples))
    if key in _RESYNTHESIZED:
        reader.transform_clips(lambda clips: _RESYNTHESIZED[key])
        return
    from audiolm_jax.codec.api import resynthesize_clips  # noqa: PLC0415
    from audiolm_jax.codec.frozen import load_codec  # noqa: PLC0415
    codec = load_codec(codec_path)
    start = time.perf_counter()
    # Said on stderr before and after: a chain's log shows where a time box ended.
    print(f"speaker crops ({role}): {len(reader.examples)} utterances through the codec "
          f"{codec_path}", file=sys.stderr, flush=True)
    reader.transform_clips(
        lambda clips: _RESYNTHESIZED.setdefault(key, list(resynthesize_clips(codec, clips))))
    print(f"speaker crops ({role}): resynthesized in {time.perf_counter() - start:.1f} s",
          file=sys.stderr, flush=True)
