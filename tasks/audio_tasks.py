"""SeqIO tasks of random fixed-length audio crops over the TFDS audio-tree builders.

Task `{dataset}_audio_crops_{crop_ms}ms` yields {"audio": float32 [samples], "length": int32 (valid
samples), "mask": bool [samples], "id": string} per example. Crops are placed by
`audiolm_jax.data.crops.crop_example` (through `tf.numpy_function`) with the example's epoch, so for
the same tree, seed and epoch they are bit-identical to `AudioCropReader`'s; with
`get_dataset(shuffle=False)` the order is the same too (tests/test_audio_tasks.py checks both).
Shuffled or sharded, the two paths order examples differently, but each (epoch, id) still gets
the same crop.

Epochs follow SeqIO's own `num_epochs`: a pre-cache step numbers each example's position in its
pass over the split, and after SeqIO's repeat a scan counts the passes (position 0 starts one).
The tasks are not meant for SeqIO's offline cache (the TFDS records already are the decoded
audio); its placeholder is only the split point that puts the epoch counter after the repeat.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from audiolm_jax.audio import SAMPLE_RATE
from audiolm_jax.data import crops
from tasks.builders import BUILDERS

_POSITION = "epoch_position"
OUTPUT_FEATURES = {
    "audio": seqio.Feature(vocabulary=seqio.PassThroughVocabulary(size=0), add_eos=False,
                           dtype=tf.float32, rank=1),
}


def task_name(dataset: str, crop_seconds: float) -> str:
    return f"{dataset}_audio_crops_{int(round(crop_seconds * 1000))}ms"


def prepare_dataset(dataset: str, data_dir: str | os.PathLike,
                    manual_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """Builds TFDS `dataset` from the tree at `manual_dir` into `data_dir` (no-op if built)."""
    builder = _builder_cls(dataset)(data_dir=os.fspath(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return builder


def number_positions(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Adds each example's position in one pass over the split (pre-cache: restarts every epoch)."""
    return dataset.enumerate().map(lambda i, ex: {**ex, _POSITION: i})


def random_audio_crops(dataset: tf.data.Dataset, *, crop_samples: int,
                       seed: int) -> tf.data.Dataset:
    """Counts epochs (each pass restarts at position 0) and crops with `crops.crop_example`."""

    def count_epochs(epoch, ex):
        epoch = epoch + tf.cast(tf.equal(ex[_POSITION], 0), tf.int64)
        return epoch, (epoch, ex)

    def numpy_crop(wav, example_id, epoch):
        crop, valid = crops.crop_example(wav, crop_samples, seed, int(epoch),
                                         example_id.decode("utf-8"))
        return crop, np.int32(valid)

    def crop(epoch, ex):
        audio, length = tf.numpy_function(numpy_crop, [ex["audio"], ex["id"], epoch],
                                          [tf.float32, tf.int32], stateful=False)
        audio.set_shape([crop_samples])
        length.set_shape([])
        return {"audio": audio, "length": length, "mask": tf.range(crop_samples) < length,
                "id": ex["id"]}

    dataset = dataset.scan(tf.constant(-1, tf.int64), count_epochs)
    # `map` keeps element order even when parallel (deterministic by default).
    return dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def register_audio_crop_tasks(dataset: str, data_dir: str | os.PathLike,
                              manual_dir: str | os.PathLike | None = None,
                              crop_seconds: float | tuple[float, ...] = (1.0, 2.0, 3.0),
                              seed: int = 0) -> list[str]:
    """Registers one crop task per length in `crop_seconds` over TFDS `dataset`; returns names.

    With `manual_dir`, the dataset is first prepared from that tree into `data_dir` (skipped when
    already there). A task of the same name registered earlier is replaced. Crops are in samples
    of the builders' 16 kHz audio.
    """
    _builder_cls(dataset)
    if manual_dir is not None:
        prepare_dataset(dataset, data_dir, manual_dir)
    source = seqio.TfdsDataSource(tfds_name=f"{dataset}:1.0.0", tfds_data_dir=os.fspath(data_dir),
                                  read_only=True)
    lengths = (crop_seconds,) if np.isscalar(crop_seconds) else tuple(crop_seconds)
    names = []
    for seconds in lengths:
        name = task_name(dataset, seconds)
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(name, source=source, output_features=OUTPUT_FEATURES,
                               preprocessors=[
                                   number_positions,
                                   seqio.CacheDatasetPlaceholder(),
                                   functools.partial(
                                       random_audio_crops, seed=int(seed),
                                       crop_samples=crops.crop_length(seconds, SAMPLE_RATE)),
                               ],
                               shuffle_buffer_size=1024)
        names.append(name)
    return names


def _builder_cls(dataset: str):
    if dataset not in BUILDERS:
        raise ValueError(f"unknown audio dataset {dataset!r}; use one of {sorted(BUILDERS)}")
    return BUILDERS[dataset]
