"""Audio files in and out: decode anything libsndfile reads to float32 mono at one rate, and write
FLAC/WAV/OGG atomically.

Bad files raise the typed errors of `audiolm_jax.audio.errors`, never a raw soundfile error:
libsndfile silently clamps truncated WAVs and returns short reads for truncated Ogg streams, so
the container is checked here (RIFF data size, Ogg page chain) and the decoded length is compared
with the header before a file is trusted.
"""
from __future__ import annotations

import dataclasses
import os
import stat
import struct
import sys
import tempfile

import numpy as np
import soundfile as sf
import soxr

from audiolm_jax.audio.errors import (
    AudioCorrupt,
    AudioEmpty,
    AudioFileMissing,
    AudioNonFinite,
    AudioUnreadable,
    NotAudio,
)

SAMPLE_RATE = 16000
RESAMPLE_QUALITY = "HQ"  # soxr "high quality": 20-bit precision, deterministic, fast enough for corpora.

_BLOCK_FRAMES = 1 << 16  # Decode in blocks: a lying header cannot make us allocate its claimed size.
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX for streams of unknown length.
_MP3_FRAME = 1152  # MP3 headers only estimate the length (unless a Xing tag is present).
# Below this a header's rate is implausible for audio, and resampling it to 16 kHz would turn a
# few bytes into gigabytes (a 2 MB WAV claiming 1 Hz decodes to 16e9 samples).
MIN_FILE_RATE = 1000

# Leading bytes of the containers libsndfile reads. A file that starts like one of these but does
# not open is corrupt; anything else that does not open is not audio.
_AUDIO_MAGIC = (b"fLaC", b"RIFF", b"RIFX", b"RF64", b"OggS", b"ID3", b"FORM", b"caff", b".snd",
                b"riff", b"NIST", b"wvpk", b"Creative Voice")

# extension -> (libsndfile format, default subtype, allowed subtypes)
_WRITE_FORMATS = {
    ".flac": ("FLAC", "PCM_16", ("PCM_16", "PCM_24")),
    ".wav": ("WAV", "PCM_16", ("PCM_16", "PCM_24", "FLOAT")),
    ".ogg": ("OGG", "VORBIS", ("VORBIS", "OPUS")),
    ".opus": ("OGG", "OPUS", ("OPUS",)),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# libsndfile sets an Opus encoder's target from its compression level q in [0, 1] as
# (int)((1 - q) * 250000 + 6000) bit/s per channel (ogg_opus.c), so 6 to 256 kbit/s per channel.
# The coder stays in its default (variable bitrate) mode: libsndfile 1.2 has no Opus bitrate mode.
_OPUS_KBPS_RANGE = (6.0, 256.0)


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file's header says. `format`/`subtype` are libsndfile names ("FLAC", "PCM_16")."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str
    subtype: str = ""


# ----------------------------------------------------------------------------- pure transforms

def to_mono(wav: np.ndarray) -> np.ndarray:
    """`[samples, channels]` or `[samples]` -> `[samples]`, the mean over channels."""
    wav = np.asarray(wav)
    return wav if wav.ndim == 1 else wav.mean(axis=1, dtype=wav.dtype)


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample `[samples]` (or `[samples, channels]`) float audio with soxr; identity if rates match.

    The output has round(samples * to_rate / from_rate) samples and the input's dtype.
    """
    _check_rate(from_rate, "from_rate")
    _check_rate(to_rate, "to_rate")
    if from_rate == to_rate:
        return wav
    return soxr.resample(wav, from_rate, to_rate, quality=RESAMPLE_QUALITY)


def _check_rate(rate, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {rate!r}")


# ----------------------------------------------------------------------------- reading

def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file to float32 mono `[samples]` at `sample_rate` Hz.

    Channels are averaged, then the signal is resampled with soxr. Raises an `AudioError` subclass
    (`AudioFileMissing`, `AudioUnreadable`, `NotAudio`, `AudioCorrupt`, `AudioEmpty`,
    `AudioNonFinite`) for any file that cannot be used as is.
    """
    _check_rate(sample_rate, "sample_rate")
    path = os.fspath(path)
    wav, file_rate = _decode(path)
    mono = to_mono(wav)
    out = np.ascontiguousarray(resample(mono, file_rate, sample_rate), dtype=np.float32)
    if out.size == 0:
        raise AudioEmpty(path, f"{mono.size} sample(s) at {file_rate} Hz leave nothing at {sample_rate} Hz",
                         fix="remove the file; it is too short to resample")
    return out


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header (and the WAV chunk / Ogg page structure) without decoding, except for
    streams whose header states no length, which are decoded to count their frames.

    Raises like `load_audio` for files that are missing, not audio, unopenable, cut-short containers
    or empty; a FLAC/MP3 cut short and non-finite samples are only found by `load_audio`, which decodes.
    """
    path = os.fspath(path)
    head = _checked_container(path)
    with _open(path, head) as f:
        rate, channels, fmt, subtype = f.samplerate, f.channels, f.format, f.subtype
        _check_file_rate(path, rate, fmt)
        frames = f.frames
        if frames >= _UNKNOWN_FRAMES:
            frames = sum(len(b) for b in _iter_blocks(f, path))
    if frames == 0:
        raise AudioEmpty(path, f"the {fmt} header declares 0 frames")
    return AudioInfo(path, int(rate), int(channels), int(frames), frames / rate, fmt, subtype)


def _decode(path: str) -> tuple[np.ndarray, int]:
    """Checked decode: float32 `[samples, channels]` at the file's rate."""
    head = _checked_container(path)
    with _open(path, head) as f:
        rate, channels, fmt, declared = f.samplerate, f.channels, f.format, f.frames
        _check_file_rate(path, rate, fmt)
        blocks = list(_iter_blocks(f, path))
    wav = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
    decoded = len(wav)
    if declared < _UNKNOWN_FRAMES and decoded < declared - _length_tolerance(fmt, declared):
        raise AudioCorrupt(path, f"truncated: decoded {decoded} of the {declared} frames the {fmt} "
                                 f"header declares")
    if decoded == 0:
        raise AudioEmpty(path, f"the {fmt} stream holds 0 frames")
    finite = np.isfinite(wav)
    if not finite.all():
        bad_frames = np.flatnonzero(~finite.all(axis=1))
        raise AudioNonFinite(path, f"{int((~finite).sum())} NaN/Inf sample(s) in {len(bad_frames)} frame(s), "
                                   f"first at frame {int(bad_frames[0])} of {decoded}")
    return wav, int(rate)


def _checked_container(path: str) -> bytes:
    """Checks that need no decoder (a regular, non-empty file; a complete WAV/Ogg container).

    Returns the file's first bytes, used to tell a corrupt audio file from one that is not audio.
    """
    size = _check_regular_file(path)
    head = _read_head(path)
    truncation = _container_truncation(path, head, size)
    if truncation:
        raise AudioCorrupt(path, f"truncated: {truncation}")
    return head


def _length_tolerance(fmt: str, declared: int) -> int:
    # MP3 lengths without a Xing tag are estimated from the file size and bitrate; allow two MPEG
    # frames plus 2% so that valid files are not called truncated. Other formats state it exactly.
    return 2 * _MP3_FRAME + declared // 50 if fmt == "MP3" else 0


def _check_regular_file(path: str) -> int:
    """stat() the path; return its size or raise. Never opens pipes/devices (that could block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioFileMissing(path, "no such file") from None
    except NotADirectoryError:
        raise AudioFileMissing(path, "a parent of this path is not a directory") from None
    except OSError as e:
        raise AudioUnreadable(path, f"cannot stat: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise NotAudio(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise NotAudio(path, "is not a regular file (pipe, socket or device)")
    if st.st_size == 0:
        raise AudioEmpty(path, "the file is 0 bytes long")
    return st.st_size


def _read_head(path: str, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except FileNotFoundError:
        raise AudioFileMissing(path, "no such file (removed while reading)") from None
    except OSError as e:
        raise AudioUnreadable(path, f"cannot read: {e.strerror or e}") from None


def _looks_like_audio(head: bytes) -> bool:
    mpeg_sync = len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0
    return mpeg_sync or head.startswith(_AUDIO_MAGIC)


def _check_file_rate(path: str, rate: int, fmt: str) -> None:
    if rate < MIN_FILE_RATE:
        raise AudioCorrupt(path, f"the {fmt} header declares an implausible {rate} Hz sample rate "
                                 f"(below {MIN_FILE_RATE} Hz)")


def _open(path: str, head: bytes) -> sf.SoundFile:
    try:
        return sf.SoundFile(_soundfile_path(path))
    except Exception as e:  # libsndfile reports every failure as one exception type; classify it.
        reason = _libsndfile_message(e)
        if _looks_like_audio(head):
            raise AudioCorrupt(path, f"header does not decode ({reason})") from None
        raise NotAudio(path, f"content is not a recognised audio format (starts with {head[:8]!r}; "
                             f"libsndfile: {reason})") from None


def _soundfile_path(path: str) -> str | bytes:
    # soundfile encodes a str path strictly, so a file name that is not valid in the filesystem
    # encoding (held in str with surrogate escapes by os.listdir) would not open; pass its bytes.
    try:
        path.encode(sys.getfilesystemencoding())
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def _iter_blocks(f: sf.SoundFile, path: str):
    """Yield float32 `[block, channels]` arrays until EOF; decoder errors become AudioCorrupt."""
    done = 0
    while True:
        block, error = _read_block(f, _BLOCK_FRAMES)
        if error:
            declared = "" if f.frames >= _UNKNOWN_FRAMES else f" of the {f.frames} its header declares"
            raise AudioCorrupt(path, f"corrupt or truncated: decoding failed after frame {done + len(block)}"
                                     f"{declared} (libsndfile: {error})")
        if len(block):
            yield block
        done += len(block)
        if len(block) < _BLOCK_FRAMES:
            return


def _read_block(f: sf.SoundFile, frames: int) -> tuple[np.ndarray, str | None]:
    """Read up to `frames` -> (float32 `[read, channels]`, libsndfile's error message or None).

    soundfile's public `read` seeks to the expected position after each read; on a FLAC cut at a
    frame boundary or one whose header states no length that seek fails, hiding both the frames
    decoded and the real cause. So read through soundfile's libsndfile handle, which reports the
    frames read and the decoder's own error separately.
    """
    if not _RAW_READ:
        try:
            return f.read(frames, dtype="float32", always_2d=True), None
        except Exception as e:
            return np.zeros((0, f.channels), np.float32), _libsndfile_message(e)
    out = np.empty((frames, f.channels), np.float32)
    pointer = sf._ffi.cast("float *", out.__array_interface__["data"][0])
    read = sf._snd.sf_readf_float(f._file, pointer, frames)
    code = sf._snd.sf_error(f._file)  # libsndfile clears it at the start of every read.
    error = sf._ffi.string(sf._snd.sf_error_number(code)).decode(errors="replace") if code else None
    return out[:read], error


# soundfile's cffi handle (`_snd`, `_ffi`, `SoundFile._file`) has been stable since 0.9; fall back
# to the public reader if a future version renames it.
_RAW_READ = hasattr(sf, "_snd") and hasattr(sf, "_ffi") and hasattr(sf.SoundFile, "_file")


def _libsndfile_message(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ----------------------------------------------------------------------------- container checks

def _container_truncation(path: str, head: bytes, size: int) -> str | None:
    """Why the container is cut short, or None. Only for formats libsndfile reads leniently."""
    try:
        with open(path, "rb") as fh:
            if head.startswith((b"RIFF", b"RIFX", b"RF64")) and head[8:12] == b"WAVE":
                return _wav_truncation(fh, size)
            if head.startswith(b"OggS"):
                return _ogg_truncation(fh, size)
    except OSError as e:
        raise AudioUnreadable(path, f"cannot read: {e.strerror or e}") from None
    return None


def _wav_truncation(fh, size: int) -> str | None:
    """Compare the RIFF `data` chunk's declared size with the bytes actually present."""
    riff = fh.read(12)
    endian = ">" if riff[:4] == b"RIFX" else "<"
    rf64_data_size = None
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        chunk_id, chunk_size = struct.unpack(endian + "4sI", fh.read(8))
        if chunk_id == b"ds64":  # RF64: the real 64-bit sizes live here.
            rf64_data_size = struct.unpack("<Q", fh.read(16)[8:16])[0]
        if chunk_id == b"data":
            if chunk_size == 0xFFFFFFFF and rf64_data_size is not None:
                chunk_size = rf64_data_size
            if chunk_size in (0, 0xFFFFFFFF):
                return None  # Written by a streaming tool that never filled the size in.
            present = size - (pos + 8)
            if chunk_size > present:
                return f"the WAV data chunk declares {chunk_size} bytes but only {present} are present"
            return None
        pos += 8 + chunk_size + (chunk_size & 1)
    return None  # No data chunk: libsndfile will refuse to open it, which is reported there.


def _ogg_truncation(fh, size: int) -> str | None:
    """Walk the Ogg page chain: every page must be complete and the last must end the stream."""
    pos = 0
    last_flags = None
    while pos < size:
        fh.seek(pos)
        header = fh.read(27)
        if len(header) < 27 or header[:4] != b"OggS":
            if last_flags is not None and last_flags & 0x04:
                return None  # Trailing bytes after a closed stream (tags, padding): harmless.
            if len(header) < 27 and header.startswith(b"OggS"[:len(header)]):
                return f"the file ends inside an Ogg page header at byte {pos}"
            return f"no Ogg page where one should start (byte {pos} of {size})"
        n_segments = header[26]
        lacing = fh.read(n_segments)
        end = pos + 27 + n_segments + sum(lacing)
        if len(lacing) < n_segments or end > size:
            return f"the Ogg page at byte {pos} needs {end} bytes but the file has {size}"
        last_flags = header[5]
        pos = end
    if last_flags is None or not last_flags & 0x04:
        return "the Ogg stream has no end-of-stream page"
    return None


# ----------------------------------------------------------------------------- writing

def save_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE,
               subtype: str | None = None, bitrate_kbps: float | None = None) -> None:
    """Write float `[samples]` (or `[samples, channels]`) audio in [-1, 1], atomically.

    The format follows the extension: .flac (PCM_16), .wav (PCM_16, or `subtype="FLOAT"`),
    .ogg (VORBIS, or `subtype="OPUS"`), .opus (OPUS). `bitrate_kbps` (Opus only, 6 to 256 per
    channel) is the encoder's target in variable-bitrate mode; the Ogg pages add about 1.5 kbit/s
    on top; None keeps libsndfile's default. Decoding gives back exactly the written number of
    samples (libsndfile applies the Opus pre-skip and end trim). Samples outside [-1, 1] are
    clipped; NaN/Inf raise `AudioNonFinite` and an empty array raises `AudioEmpty` (nothing is
    written). The file appears complete or not at all: temp file in the same directory, fsync,
    os.replace.
    """
    path = os.fspath(path)
    _check_rate(sample_rate, "sample_rate")
    fmt, subtype = _write_format(path, subtype, sample_rate)
    data = _checked_samples(path, wav)
    level = _opus_compression_level(path, subtype, bitrate_kbps)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.close(fd)
        sf.write(tmp, data, sample_rate, format=fmt, subtype=subtype, compression_level=level)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _write_format(path: str, subtype: str | None, sample_rate: int) -> tuple[str, str]:
    ext = os.path.splitext(path)[1].lower()
    if ext not in _WRITE_FORMATS:
        raise ValueError(f"{path}: cannot write {ext or 'extensionless'} files. "
                         f"Fix: use one of {', '.join(_WRITE_FORMATS)}")
    fmt, default, allowed = _WRITE_FORMATS[ext]
    subtype = (subtype or default).upper()
    if subtype not in allowed:
        raise ValueError(f"{path}: subtype {subtype!r} is not supported for {ext}. "
                         f"Fix: use one of {', '.join(allowed)}")
    if subtype == "OPUS" and sample_rate not in _OPUS_RATES:
        raise ValueError(f"{path}: Opus cannot store {sample_rate} Hz. Fix: resample to one of "
                         f"{', '.join(map(str, _OPUS_RATES))} Hz, or write .flac")
    return fmt, subtype


def _opus_compression_level(path: str, subtype: str, bitrate_kbps: float | None) -> float | None:
    """libsndfile's compression level for an Opus target of `bitrate_kbps` per channel."""
    if bitrate_kbps is None:
        return None
    low, high = _OPUS_KBPS_RANGE
    if subtype != "OPUS":
        raise ValueError(f"{path}: bitrate_kbps is for Opus only, not {subtype}. "
                         f"Fix: write .opus, or drop bitrate_kbps")
    if isinstance(bitrate_kbps, bool) or not low <= float(bitrate_kbps) <= high:
        raise ValueError(f"{path}: bitrate_kbps={bitrate_kbps!r} is outside Opus' {low:g} to "
                         f"{high:g} kbit/s per channel")
    # +0.5 bit/s: libsndfile truncates to int, and 1 - q is not exact in binary.
    return 1.0 - (float(bitrate_kbps) * 1000.0 - low * 1000.0 + 0.5) / ((high - low) * 1000.0)


def _checked_samples(path: str, wav) -> np.ndarray:
    wav = np.asarray(wav)
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"{path}: expected float samples in [-1, 1], got dtype {wav.dtype}. "
                         f"Fix: convert first (int16 PCM: wav / 32768)")
    if wav.ndim not in (1, 2):
        raise ValueError(f"{path}: expected [samples] or [samples, channels], got shape {wav.shape}")
    if wav.shape[0] == 0:
        raise AudioEmpty(path, "refusing to write 0 samples", fix="pass at least one sample")
    finite = np.isfinite(wav)
    if not finite.all():
        raise AudioNonFinite(path, f"refusing to write {int((~finite).sum())} NaN/Inf sample(s)",
                             fix="find where the NaN/Inf come from; they cannot be clipped")
    # libsndfile takes float32/float64 only (not float16).
    return np.clip(wav, -1.0, 1.0).astype(np.float64 if wav.dtype == np.float64 else np.float32)


def _target_mode(path: str) -> int:
    # mkstemp makes 0600 files; keep an existing file's mode, else the usual 0644.
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o644


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable. Not every platform/filesystem allows fsync on a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
