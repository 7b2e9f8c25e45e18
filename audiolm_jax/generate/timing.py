"""Frames <-> seconds, sliding windows and fine-stage chunks: the bookkeeping of generation.

Rates (AudioLM speech): semantic ids at 25 Hz (16 kHz / 640), acoustic frames at 50 Hz
(16 kHz / 320), so one semantic frame spans exactly two acoustic frames and 640 samples. Prompt
audio is cut to whole semantic frames so both token streams cover the same time.

Stages 1 and 2 see consecutive repeated semantic tokens removed, so a semantic *token* has no
fixed duration: generation maps acoustic frames to semantic tokens in proportion
(`semantic_span`), and picks how many semantic tokens a duration needs from the rate measured on
the prompt (deduplicated tokens per second) or a default.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class TokenRates:
    """sample_rate (Hz), semantic_hz and acoustic_hz (frames per second)."""
    sample_rate: int = 16000
    semantic_hz: float = 25.0
    acoustic_hz: float = 50.0

    def __post_init__(self):
        ratio = self.acoustic_hz / self.semantic_hz
        if ratio != int(ratio) or self.sample_rate % self.semantic_hz:
            raise ValueError(f"TokenRates: acoustic rate {self.acoustic_hz} Hz must be a whole "
                             f"multiple of the semantic rate {self.semantic_hz} Hz, and both must "
                             f"divide {self.sample_rate} Hz (AudioLM: 50 and 25 at 16 kHz)")

    @property
    def frames_per_semantic(self) -> int:
        """Acoustic frames per semantic frame (2)."""
        return int(self.acoustic_hz // self.semantic_hz)

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per acoustic frame (320)."""
        return int(round(self.sample_rate / self.acoustic_hz))

    @property
    def samples_per_semantic(self) -> int:
        """Audio samples per semantic frame (640)."""
        return int(round(self.sample_rate / self.semantic_hz))

    def acoustic_frames(self, seconds: float) -> int:
        """Acoustic frames covering `seconds` (rounded to the nearest whole frame)."""
        return int(round(seconds * self.acoustic_hz))

    def seconds(self, acoustic_frames: int) -> float:
        return acoustic_frames / self.acoustic_hz

    def whole_semantic_samples(self, num_samples: int) -> int:
        """`num_samples` cut down to whole semantic frames (a multiple of 640)."""
        return num_samples - num_samples % self.samples_per_semantic

    def semantic_tokens(self, seconds: float, tokens_per_second: float) -> int:
        """Semantic tokens for `seconds` at `tokens_per_second` (after deduplication), >= 1."""
        return max(1, int(math.ceil(seconds * tokens_per_second - 1e-9)))


def fine_chunks(start: int, stop: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Non-overlapping [a, b) frame chunks of at most `chunk_frames` tiling [start, stop)."""
    if chunk_frames < 1 or stop < start:
        raise ValueError(f"fine_chunks: need chunk_frames >= 1 and start <= stop, got "
                         f"({start}, {stop}, {chunk_frames})")
    return [(a, min(a + chunk_frames, stop)) for a in range(start, stop, chunk_frames)]


def semantic_span(num_semantic: int, total_frames: int, first: int, stop: int) -> tuple[int, int]:
    """[a, b) of `num_semantic` tokens spread evenly over `total_frames` acoustic frames that
    cover frames [first, stop); at least one token when there are any."""
    if total_frames < 1 or not 0 <= first <= stop <= total_frames:
        raise ValueError(f"semantic_span: frames [{first}, {stop}) outside [0, {total_frames})")
    a = int(math.floor(first * num_semantic / total_frames))
    b = int(math.ceil(stop * num_semantic / total_frames))
    a = min(a, max(num_semantic - 1, 0))
    return a, max(b, min(a + 1, num_semantic))


@dataclasses.dataclass(frozen=True)
class Window:
    """One model call of a sliding-window generation: context positions [start, known), new
    positions [known, stop)."""
    start: int
    known: int
    stop: int


def sliding_windows(known: int, total: int, window: int, keep: int | None = None) -> list[Window]:
    """The model calls that take a sequence from `known` to `total` positions (frames or tokens)
    when the model sees at most `window` of them at once.

    The first call keeps all the context that fits; once the window is full it slides, keeping
    the last `keep` positions (default window // 2) as the next call's context.
    """
    keep = window // 2 if keep is None else keep
    if window < 2 or not 0 <= keep < window:
        raise ValueError(f"sliding_windows: need window >= 2 and 0 <= keep < window, got "
                         f"window={window}, keep={keep}")
    start, out = max(0, known - keep) if known >= window else 0, []
    while known < total:
        if known - start >= window:
            start = known - keep
        stop = min(total, start + window)
        out.append(Window(start, known, stop))
        known = stop
    return out
