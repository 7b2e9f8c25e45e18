"""Opus baseline for codec evaluation: an opusenc/opusdec round trip at a target bitrate, with the
bitrate it really spent.

`opus_round_trip(wav, 6.0, mode="hard-cbr")` writes the audio as a 16-bit WAV, encodes it with
`opusenc --bitrate 6 --hard-cbr`, decodes with `opusdec --rate 16000 --float` (float output: no
dither, so runs are deterministic) and returns the decoded audio trimmed to the input's length.

Real rates. Opus cannot honour every target (VBR stays near 6 kbps and above for speech), and the
Ogg container adds page headers (~0.5-1 kbps at 50 packets/s) and the OpusHead/OpusTags header
packets (~1 kbit on short files), so two rates are measured: `real_kbps` = file bits / duration,
what a file on disk costs, and `payload_kbps` = the audio packets' bits / duration, what the
codec itself spent (comparable to a neural codec's Q x log2(N) x frame rate, which has no
container). opusenc's default 512 bytes of metadata padding is turned off (`--padding 0`): it is
reserved space, not part of the encoding.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

import numpy as np

from audiolm_jax.audio import load_audio, save_audio

MODES = {"vbr": "--vbr", "cvbr": "--cvbr", "hard-cbr": "--hard-cbr"}
_OGG_CAPTURE = b"OggS"
_OGG_HEADER = 27          # fixed part of an Ogg page header, before the segment table
_HEADER_PACKETS = 2       # OpusHead, OpusTags
_LENGTH_TOLERANCE_S = 0.02  # one Opus frame: decoded length may differ from the input's by this


class OpusToolsMissing(RuntimeError):
    """opusenc or opusdec is not on PATH."""


class OpusError(RuntimeError):
    """opusenc/opusdec failed or produced an unreadable stream."""


@dataclasses.dataclass(frozen=True)
class OpusResult:
    """audio: float32 `[samples]` at `sample_rate`, as long as the input at that rate."""
    audio: np.ndarray
    sample_rate: int
    mode: str
    target_kbps: float
    duration_s: float
    file_bytes: int
    payload_bytes: int
    packets: int

    @property
    def real_kbps(self) -> float:
        """File bits per second of audio, container included."""
        return self.file_bytes * 8 / self.duration_s / 1000.0

    @property
    def payload_kbps(self) -> float:
        """Audio-packet bits per second (no Ogg pages, no header packets)."""
        return self.payload_bytes * 8 / self.duration_s / 1000.0


def require_opus_tools() -> tuple[str, str]:
    """Paths of opusenc and opusdec; raises OpusToolsMissing naming the package otherwise."""
    found = [shutil.which(tool) for tool in ("opusenc", "opusdec")]
    if not all(found):
        missing = [t for t, p in zip(("opusenc", "opusdec"), found) if not p]
        raise OpusToolsMissing(f"{' and '.join(missing)} not found on PATH; install opus-tools "
                               "(Debian/Ubuntu: apt-get install opus-tools)")
    return found[0], found[1]


def ogg_packet_sizes(data: bytes, where: str = "<bytes>") -> list[int]:
    """Sizes in bytes of the packets of a single-stream Ogg file, in order (packets spanning
    pages are joined). Raises OpusError on a damaged page chain."""
    sizes: list[int] = []
    pending = 0  # bytes of a packet continued on the next page
    pos = 0
    while pos < len(data):
        if data[pos:pos + 4] != _OGG_CAPTURE or pos + _OGG_HEADER > len(data):
            raise OpusError(f"{where}: no Ogg page at byte {pos} of {len(data)}; the file is "
                            "truncated or not an Ogg stream")
        segments = data[pos + 26]
        table = data[pos + _OGG_HEADER:pos + _OGG_HEADER + segments]
        if len(table) != segments:
            raise OpusError(f"{where}: Ogg page at byte {pos} is truncated")
        for lacing in table:
            pending += lacing
            if lacing < 255:
                sizes.append(pending)
                pending = 0
        pos += _OGG_HEADER + segments + sum(table)
        if pos > len(data):
            raise OpusError(f"{where}: last Ogg page runs past the end of the file")
    return sizes


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise OpusError(f"`{' '.join(command)}` failed with exit code {e.returncode}: "
                        f"{(e.stderr or e.stdout).strip()[-500:]}") from e


def opus_round_trip(wav, bitrate_kbps: float, *, sample_rate: int = 16000, mode: str = "vbr",
                    output_rate: int = 16000, extra_args: Sequence[str] = (),
                    keep_opus: str | os.PathLike | None = None) -> OpusResult:
    """Encodes float `[samples]` audio with Opus at `bitrate_kbps` and decodes it at
    `output_rate`. mode: "vbr" (opusenc's default), "cvbr" or "hard-cbr". extra_args go to
    opusenc (e.g. ["--framesize", "40"]). keep_opus: also copy the .opus file there."""
    if mode not in MODES:
        raise ValueError(f"unknown Opus mode {mode!r}; use one of {list(MODES)}")
    if not bitrate_kbps > 0:
        raise ValueError(f"bitrate_kbps must be positive, got {bitrate_kbps}")
    wav = np.asarray(wav)
    if wav.ndim != 1 or wav.size == 0 or not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"opus_round_trip needs float mono audio `[samples]`, got shape "
                         f"{wav.shape} dtype {wav.dtype}")
    opusenc, opusdec = require_opus_tools()
    duration = wav.size / sample_rate
    with tempfile.TemporaryDirectory(prefix="opus_") as tmp:
        source, encoded, decoded = (os.path.join(tmp, n) for n in ("in.wav", "out.opus", "out.wav"))
        save_audio(source, wav, sample_rate, subtype="PCM_16")
        _run([opusenc, "--quiet", "--bitrate", f"{bitrate_kbps:g}", MODES[mode], "--padding", "0",
              *extra_args, source, encoded])
        _run([opusdec, "--quiet", "--rate", str(output_rate), "--float", encoded, decoded])
        with open(encoded, "rb") as f:
            data = f.read()
        audio = load_audio(decoded, sample_rate=output_rate)
        if keep_opus is not None:
            shutil.copyfile(encoded, keep_opus)
    sizes = ogg_packet_sizes(data, encoded)
    if len(sizes) <= _HEADER_PACKETS:
        raise OpusError(f"opusenc wrote {len(sizes)} packets for {duration:.2f} s of audio; "
                        "expected OpusHead, OpusTags and audio packets")
    want = round(wav.size * output_rate / sample_rate)
    if abs(audio.size - want) > _LENGTH_TOLERANCE_S * output_rate:
        raise OpusError(f"opusdec returned {audio.size} samples at {output_rate} Hz for "
                        f"{duration:.3f} s of input (expected {want})")
    audio = np.pad(audio[:want], (0, max(0, want - audio.size))).astype(np.float32)
    return OpusResult(audio=audio, sample_rate=output_rate, mode=mode,
                      target_kbps=float(bitrate_kbps), duration_s=duration, file_bytes=len(data),
                      payload_bytes=sum(sizes[_HEADER_PACKETS:]),
                      packets=len(sizes) - _HEADER_PACKETS)
