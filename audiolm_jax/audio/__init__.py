"""Audio in and out: decode to float32 mono at 16 kHz, write FLAC/WAV/OGG atomically, typed errors.

Importing this package never imports TensorFlow: it is used by corpus builders and data
readers that must stay light.
"""
from audiolm_jax.audio.errors import (
    AudioCorrupt,
    AudioEmpty,
    AudioError,
    AudioFileMissing,
    AudioNonFinite,
    AudioUnreadable,
    NotAudio,
)
from audiolm_jax.audio.io import (
    SAMPLE_RATE,
    AudioInfo,
    audio_info,
    load_audio,
    resample,
    save_audio,
    to_mono,
)

__all__ = [
    "SAMPLE_RATE", "AudioInfo", "audio_info", "load_audio", "save_audio", "resample", "to_mono",
    "AudioError", "AudioFileMissing", "AudioUnreadable", "AudioCorrupt", "AudioEmpty",
    "AudioNonFinite", "NotAudio",
]
