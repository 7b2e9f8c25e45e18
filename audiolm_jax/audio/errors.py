"""Typed errors for audio files that cannot be used.

Every error names the file, the reason and the fix, so a corpus reader can skip the file, count it
under `kind` and report the message as is. All are `ValueError`s: a bad file is bad input data.
"""
from __future__ import annotations

import os


class AudioError(ValueError):
    """An audio file that cannot be used. `kind` is a short label for skip counts in reports."""

    kind = "audio_error"
    default_fix = "check the file with `soxi` or `ffprobe`, then re-encode or remove it"

    def __init__(self, path: str | os.PathLike, reason: str, fix: str | None = None):
        self.path = os.fspath(path)
        self.reason = reason
        self.fix = fix if fix is not None else self.default_fix
        super().__init__(f"{self.path}: {reason}. Fix: {self.fix}.")

    def __reduce__(self):
        # Exceptions pickle through `self.args` by default, which would lose `reason`/`fix`;
        # corpus readers run in worker processes (Beam, multiprocessing) and send these back.
        return (type(self), (self.path, self.reason, self.fix))


class AudioFileMissing(AudioError):
    kind = "missing"
    default_fix = "check the path (and the corpus root it was built from)"


class AudioUnreadable(AudioError):
    """The file exists but the OS refuses to read it (permissions, I/O error)."""

    kind = "unreadable"
    default_fix = "check the file's permissions and the disk it lives on"


class AudioCorrupt(AudioError):
    """A recognised audio container whose header or body does not decode, or that is truncated."""

    kind = "corrupt"
    default_fix = "re-encode or re-download the file; corpus readers skip it"


class AudioEmpty(AudioError):
    kind = "empty"
    default_fix = "remove the file or regenerate it with at least one sample"


class AudioNonFinite(AudioError):
    kind = "non_finite"
    default_fix = "regenerate the audio; NaN/Inf usually come from a diverged model or a bad float WAV"


class NotAudio(AudioError):
    """Not audio at all: a directory, a pipe, or content no decoder recognises."""

    kind = "not_audio"
    default_fix = "point at an audio file (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3) or remove this one"
