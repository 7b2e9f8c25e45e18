"""The synthetic-speech detector (AudioLM sec. IV-H): the speaker classifier's architecture with
two classes, "original" (real utterances passed through the codec, so compression artifacts are
no cue) vs "generated" (AudioLM continuations), trained on 1 s crops and judged per file with the
same 1 s / 250 ms window aggregation, on a balanced held-out set.

Inputs are two directories of audio files (any tree; FLAC/WAV/OGG). Each file's first
`skip_seconds` (the 3 s prompt) are cut from both classes: the detector must judge the
continuation, and originals are cut the same way so duration and position are no cue.
Files are assigned to train / held out by a hash of their *group*: the file stem without a
trailing sample marker (`-s0`, `_sample2`, ...), so the samples of one prompt and its original
never straddle the split.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from audiolm_jax.data import crops
from audiolm_jax.data.corpus import AUDIO_EXTENSIONS, is_audio_name
from audiolm_jax.eval.stats import wilson_interval

LABELS = ("original", "generated")
_SAMPLE_SUFFIX = re.compile(r"[-_](s|sample)\d+$")


def list_audio(directory: str) -> list[str]:
    """Audio files under `directory`, sorted."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a directory of audio files; pass the folder of "
                                "codec-resynthesised originals or of generated continuations")
    out = [os.path.join(d, f) for d, _, files in os.walk(directory) for f in files
           if is_audio_name(f) and not f.startswith(".")]
    if not out:
        raise FileNotFoundError(f"{directory} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return sorted(out)


def group_of(path: str) -> str:
    return _SAMPLE_SUFFIX.sub("", os.path.splitext(os.path.basename(path))[0])


def is_heldout(path: str, heldout_fraction: float = 0.2, seed: int = 0) -> bool:
    """Deterministic split by the hash of the file's group."""
    return crops.stable_seed("detector", seed, group_of(path)) % 10_000 < heldout_fraction * 10_000


@dataclasses.dataclass(frozen=True)
class LabelledFile:
    path: str
    label: int  # index into LABELS


def detector_files(originals_dir: str, generated_dir: str, role: str,
                   heldout_fraction: float = 0.2, seed: int = 0) -> list[LabelledFile]:
    """The files of one role ("train" or "eval"), both classes, sorted by path."""
    if role not in ("train", "eval"):
        raise ValueError(f"role={role!r}; use 'train' or 'eval'")
    out = []
    for label, directory in enumerate((originals_dir, generated_dir)):
        for path in list_audio(directory):
            if is_heldout(path, heldout_fraction, seed) == (role == "eval"):
                out.append(LabelledFile(path, label))
    return out


def balanced_subset(files: Sequence[LabelledFile], seed: int = 0) -> list[LabelledFile]:
    """As many files of each class as the smaller class has (a deterministic choice)."""
    by_class = [[f for f in files if f.label == c] for c in range(len(LABELS))]
    n = min(len(c) for c in by_class)
    rng = np.random.default_rng(seed)
    out = []
    for c in by_class:
        out += [c[i] for i in sorted(rng.permutation(len(c))[:n])]
    return out


class DetectorCrops:
    """Random 1 s crops (after the prompt) of labelled files: {"audio", "audio_length", "label"};
    endless unless `num_epochs`, deterministic in (seed, epoch, path), resumable."""

    def __init__(self, files: Sequence[LabelledFile], crop_seconds: float, batch_size: int,
                 seed: int = 0, skip_seconds: float = 3.0, shuffle: bool = True,
                 num_epochs: int | None = None, sample_rate: int = 16000):
        if not files:
            raise ValueError("DetectorCrops: no files; check the directories and heldout_fraction")
        self.files, self.batch_size, self.seed = list(files), int(batch_size), int(seed)
        self.crop = crops.crop_length(crop_seconds, sample_rate)
        self.skip = int(round(skip_seconds * sample_rate))
        self.shuffle, self.num_epochs, self.sample_rate = shuffle, num_epochs, sample_rate
        self._audio: dict[str, np.ndarray] = {}
        self._epoch, self._position = 0, 0

    def _load(self, path: str) -> np.ndarray:
        if path not in self._audio:
            from audiolm_jax.audio import load_audio  # noqa: PLC0415
            wav = load_audio(path, self.sample_rate)[self.skip:]
            self._audio[path] = wav if wav.size else np.zeros(1, np.float32)
        return self._audio[path]

    def _order(self) -> np.ndarray:
        order = np.arange(len(self.files))
        if self.shuffle:
            order = np.random.default_rng(crops.stable_seed("order", self.seed, self._epoch)
                                          ).permutation(order)
        return order

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        audio, lengths, labels = [], [], []
        while len(audio) < self.batch_size:
            if self.num_epochs is not None and self._epoch >= self.num_epochs:
                raise StopIteration
            order = self._order()
            if self._position >= len(order):
                self._epoch, self._position = self._epoch + 1, 0
                continue
            f = self.files[order[self._position]]
            self._position += 1
            crop, valid = crops.crop_example(self._load(f.path), self.crop, self.seed,
                                             self._epoch, f.path)
            audio.append(crop)
            lengths.append(valid)
            labels.append(f.label)
        return {"audio": np.stack(audio), "audio_length": np.array(lengths, np.int32),
                "label": np.array(labels, np.int32)}

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "position": self._position}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._epoch, self._position = int(state["epoch"]), int(state["position"])


def balanced_accuracy(predicted: Sequence[int], labels: Sequence[int]) -> dict:
    """Mean per-class recall, plain accuracy with a Wilson 95% CI, and counts per class."""
    p, y = np.asarray(predicted), np.asarray(labels)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"balanced_accuracy: {p.size} predictions for {y.size} labels")
    recalls = [float(np.mean(p[y == c] == c)) for c in np.unique(y)]
    correct = int(np.sum(p == y))
    return {"accuracy": correct / y.size, "ci95": list(wilson_interval(correct, int(y.size))),
            "balanced_accuracy": float(np.mean(recalls)), "n": int(y.size),
            "per_class": {LABELS[int(c)] if int(c) < len(LABELS) else str(c): int(np.sum(y == c))
                          for c in np.unique(y)}}


def evaluate_detector(model, files: Sequence[LabelledFile], skip_seconds: float = 3.0) -> dict:
    """Per-file predictions (window-aggregated) on a class-balanced subset of `files`."""
    from audiolm_jax.audio import load_audio  # noqa: PLC0415
    from audiolm_jax.eval.speaker_classifier import predict_log_probs  # noqa: PLC0415

    chosen = balanced_subset(files)
    skip = int(round(skip_seconds * model.config.sample_rate))
    predicted = [int(np.argmax(predict_log_probs(model, load_audio(f.path)[skip:])))
                 for f in chosen]
    return balanced_accuracy(predicted, [f.label for f in chosen])


DETECTOR_CHANNELS = (64, 128, 256, 256, 512, 512)


def detector_config(channels: Sequence[int] = DETECTOR_CHANNELS):
    """The detector's ClassifierConfig (two classes, the speaker classifier's front end)."""
    from audiolm_jax.eval.speaker_classifier import ClassifierConfig  # noqa: PLC0415

    return ClassifierConfig(labels=LABELS, channels=tuple(channels))


def load_detector(workdir: str, channels: Sequence[int] = DETECTOR_CHANNELS):
    """The trained detector of `train_detector(workdir=...)` (trained without gin, so its
    config is rebuilt here rather than read from the run's operative gin config)."""
    from audiolm_jax.eval.speaker_classifier import load_classifier  # noqa: PLC0415

    return load_classifier(workdir, config=detector_config(channels))


def train_detector(originals_dir: str, generated_dir: str, workdir: str, *,
                   channels: Sequence[int] = DETECTOR_CHANNELS, steps: int = 2000,
                   batch_size: int = 32, learning_rate: float = 1e-3, skip_seconds: float = 3.0,
                   heldout_fraction: float = 0.2, seed: int = 0, compute_dtype: str = "float32"):
    """Trains the detector through the project trainer (no gin needed); returns the TrainResult."""
    from audiolm_jax.eval.speaker_classifier import ClassifierObjective  # noqa: PLC0415
    from audiolm_jax.training.optim import OptimizerConfig  # noqa: PLC0415
    from audiolm_jax.training.trainer import train  # noqa: PLC0415

    train_files = detector_files(originals_dir, generated_dir, "train", heldout_fraction, seed)
    if len({f.label for f in train_files}) < 2:
        raise ValueError(f"the detector's training files lack a class: {len(train_files)} files "
                         f"from {originals_dir} and {generated_dir}; give both directories files")
    config = detector_config(channels)
    optimizer = OptimizerConfig(learning_rate=learning_rate, schedule="constant",
                                warmup_steps=min(100, steps // 10))
    objective = ClassifierObjective(config, optimizer)

    def data(shard_index: int = 0, shard_count: int = 1):
        return DetectorCrops(train_files[shard_index::shard_count], config.crop_seconds,
                             batch_size, seed, skip_seconds)

    return train(objective, data, steps, workdir, compute_dtype=compute_dtype, seed=seed,
                 log_every=max(1, steps // 20))
