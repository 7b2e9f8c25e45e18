"""The TFDS builder shared by every audio tree (Libri-Light, LibriSpeech, MAESTRO-like piano).

A tree is read from `manual_dir` with `audiolm_jax.data.scan_corpus` and decoded with the same
`try_load_audio` as the TF-free reader, so both paths see the same examples with the same samples.
Audio is stored as a float32 tensor of 16 kHz mono samples (not re-encoded), so the values read
back are bit-identical to `load_audio`'s. Examples keep the tree's order (sorted ids,
`disable_shuffling`), which lets unshuffled pipelines be compared element for element.

Files that cannot be decoded are skipped with a logged reason; the reasons are kept in the
dataset's metadata (`builder.skipped`, which survives reloading) and in `skipped.json` in the
data dir. Clips shorter than any crop (down to one sample) are valid examples and are kept.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from audiolm_jax.audio import SAMPLE_RATE
from audiolm_jax.data.audio_reader import try_load_audio
from audiolm_jax.data.corpus import Example, scan_corpus

log = logging.getLogger(__name__)

# TFDS 4.9 imports it for every builder defined in a package but declares it only for py<3.9
# (tensorflow/datasets#11212): fail here with the fix rather than deep inside download_and_prepare.
try:
    import importlib_resources  # noqa: F401
except ImportError as e:
    raise ImportError("tensorflow-datasets needs `importlib_resources` to build datasets from a "
                      "package; install it: pip install importlib_resources (part of the `data` "
                      "extra)") from e

SKIPPED_FILE = "skipped.json"


class AudioTreeBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: subclasses set LAYOUT (a `scan_corpus` layout), HAS_TEXT and the docs."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Float32 16 kHz audio from a local tree; bad files skipped."}
    LAYOUT: str = ""
    HAS_TEXT: bool = False
    DESCRIPTION = ""
    MANUAL_DOWNLOAD_INSTRUCTIONS = ""

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32),  # [samples] at 16 kHz
            "id": tfds.features.Text(),
            "speaker": tfds.features.Text(),  # the performer for piano
            # book (Libri-Light), chapter (LibriSpeech), piece (piano)
            "group": tfds.features.Text(),
            "duration": tfds.features.Tensor(shape=(), dtype=np.float32),  # seconds
        }
        if self.HAS_TEXT:
            features["text"] = tfds.features.Text()  # "" where the tree has no transcript
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features), disable_shuffling=True,
            metadata=tfds.core.MetadataDict())

    @property
    def skipped(self) -> dict[str, str]:
        """{path: reason} of the files left out when this dataset was prepared."""
        return dict(self.info.metadata.get("skipped", {}))

    def _download_and_prepare(self, dl_manager, download_config=None):
        self._skipped: dict[str, str] = {}
        self._listing_problems: dict[str, str] = {}
        super()._download_and_prepare(dl_manager, download_config)
        # Every generator has run to completion here; `self.data_dir` is still the temporary dir
        # that TFDS renames into place, so the report lands beside the records.
        self.info.metadata["skipped"] = dict(sorted(self._skipped.items()))
        self.info.metadata["listing_problems"] = dict(sorted(self._listing_problems.items()))
        with open(os.path.join(self.data_dir, SKIPPED_FILE), "w", encoding="utf-8") as fh:
            json.dump({"skipped": self.info.metadata["skipped"],
                       "listing_problems": self.info.metadata["listing_problems"]}, fh, indent=1)
        if self._skipped:
            log.warning("%s: skipped %d unusable file(s); reasons in %s", self.name,
                        len(self._skipped), os.path.join(self.data_dir, SKIPPED_FILE))

    def _split_generators(self, dl_manager):
        index = scan_corpus(dl_manager.manual_dir, self.LAYOUT)
        self._listing_problems.update(index.problems)
        return {split: self._generate_examples(index.split(split)) for split in index.splits}

    def _generate_examples(self, examples: tuple[Example, ...]):
        for example in examples:
            wav, reason = try_load_audio(example.path, SAMPLE_RATE)
            if wav is None:
                self._skipped[example.path] = reason
                log.warning("skipping %s (split %s): %s", example.path, example.split, reason)
                continue
            record = {"audio": wav, "id": example.id, "speaker": example.speaker,
                      "group": example.group, "duration": np.float32(wav.shape[0] / SAMPLE_RATE)}
            if self.HAS_TEXT:
                record["text"] = example.text or ""
            yield example.id, record
