"""Data layer shared by every input path: corpus listing, random crops, the TF-free crop reader.

Pure numpy and IO at the edges; never imports TensorFlow (the SeqIO/TFDS layer is `tasks/`).
"""
from audiolm_jax.data.audio_reader import AudioCropReader, try_load_audio
from audiolm_jax.data.corpus import (
    AUDIO_EXTENSIONS,
    LAYOUTS,
    CorpusIndex,
    CorpusLayoutError,
    Example,
    find_audio,
    is_audio_name,
    scan_corpus,
)
from audiolm_jax.data.crops import (
    crop_example,
    crop_length,
    crop_offset,
    crop_rng,
    length_mask,
    random_crop,
    stable_seed,
)

__all__ = [
    "AudioCropReader", "try_load_audio", "AUDIO_EXTENSIONS", "LAYOUTS", "CorpusIndex",
    "CorpusLayoutError", "Example", "find_audio", "is_audio_name", "scan_corpus", "crop_example",
    "crop_length", "crop_offset", "crop_rng", "length_mask", "random_crop", "stable_seed",
]
