"""Numpy-in, numpy-out acoustic tokenizer API: encode audio to codes, decode codes to audio.

`encode(model, wav)` -> int32 `[frames, Q]`; `decode(model, codes)` -> float32 `[frames * 320]`.
Short audio is right-padded with zeros to a whole number of frames (at least one); audio at
another rate is resampled to the model's rate first (pass `sample_rate`). The batch versions
run the jitted model on `[batch, ...]` arrays; each new input shape compiles once, so callers
with many lengths should bucket them (the encoder and decoder are causal, so right padding never
changes earlier frames).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
from flax import nnx

from audiolm_jax.audio import SAMPLE_RATE, resample
from audiolm_jax.codec.soundstream import SoundStream


@functools.partial(nnx.jit, static_argnames=("num_quantizers",))
def _encode_jit(model: SoundStream, wav, num_quantizers):
    return model.encode(wav, num_quantizers)


@nnx.jit
def _decode_jit(model: SoundStream, codes):
    return model.decode(codes)


def bitrate_kbps(num_quantizers: int, codebook_size: int, frame_rate: float = 50.0) -> float:
    """frame_rate * Q * log2(N) / 1000: 6.0 for (12, 1024), 2.0 for (4, 1024), 1.5 for (3, 1024)."""
    if num_quantizers < 1 or codebook_size < 2 or frame_rate <= 0:
        raise ValueError(f"bitrate_kbps needs num_quantizers >= 1, codebook_size >= 2 and "
                         f"frame_rate > 0; got ({num_quantizers}, {codebook_size}, {frame_rate})")
    return frame_rate * num_quantizers * math.log2(codebook_size) / 1000.0


def pad_to_frames(wav: np.ndarray, hop: int) -> np.ndarray:
    """Right-pad `[..., samples]` with zeros to a positive multiple of `hop` samples."""
    frames = max(1, -(-wav.shape[-1] // hop))
    pad = frames * hop - wav.shape[-1]
    return np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, pad)]) if pad else wav


def _checked_wav(wav, ndim: int, name: str) -> np.ndarray:
    wav = np.asarray(wav)
    shape = "[samples]" if ndim == 1 else "[batch, samples]"
    if wav.ndim != ndim:
        raise ValueError(f"{name} must be {shape} mono audio, got shape {wav.shape}; "
                         "mix channels down first (audiolm_jax.audio.to_mono)")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"{name} must be float audio in [-1, 1], got dtype {wav.dtype}; "
                         "convert int16 PCM with wav / 32768")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"{name} contains NaN or Inf samples; clean the audio before encoding")
    return wav.astype(np.float32, copy=False)


def _checked_num_quantizers(model: SoundStream, num_quantizers: int | None) -> int:
    if num_quantizers is None:
        return model.num_quantizers
    if not 1 <= num_quantizers <= model.num_quantizers:
        raise ValueError(f"num_quantizers={num_quantizers} is out of range: this model has "
                         f"Q={model.num_quantizers} quantizers, use 1..{model.num_quantizers}")
    return int(num_quantizers)


def check_codes(model: SoundStream, codes, batched: bool) -> np.ndarray:
    """Validate codes for `model`: integer, rank 2 (`[frames, q]`) or 3 (batched), 1 <= q <= Q,
    at least one frame, values in [0, N). Returns them as int32; raises ValueError otherwise."""
    codes = np.asarray(codes)
    shape = "[batch, frames, quantizers]" if batched else "[frames, quantizers]"
    if codes.ndim != (3 if batched else 2):
        raise ValueError(f"codes must have shape {shape}, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    levels, frames = codes.shape[-1], codes.shape[-2]
    if not 1 <= levels <= model.num_quantizers:
        raise ValueError(f"codes have {levels} quantizer levels (last axis of shape "
                         f"{codes.shape}); this model expects 1..{model.num_quantizers}")
    if frames < 1:
        raise ValueError(f"codes have no frames (shape {codes.shape}); need at least one")
    bad = (codes < 0) | (codes >= model.codebook_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"code {int(codes[where])} at index {where} is out of range: codes must "
                         f"be in [0, {model.codebook_size}) for codebook size "
                         f"{model.codebook_size}")
    return codes.astype(np.int32, copy=False)


def encode_batch(model: SoundStream, wavs, *, num_quantizers: int | None = None,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float `[batch, samples]` at `sample_rate` -> int32 `[batch, frames, num_quantizers or Q]`.

    frames = ceil(samples_at_model_rate / hop), at least 1.
    """
    wavs = _checked_wav(wavs, 2, "wavs")
    levels = _checked_num_quantizers(model, num_quantizers)
    if sample_rate != model.sample_rate:
        wavs = np.stack([resample(w, sample_rate, model.sample_rate) for w in wavs])
    wavs = pad_to_frames(wavs, model.hop_length)
    return np.asarray(_encode_jit(model, wavs, levels), dtype=np.int32)


def encode(model: SoundStream, wav, *, num_quantizers: int | None = None,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float `[samples]` at `sample_rate` -> int32 codes `[frames, num_quantizers or Q]`."""
    wav = _checked_wav(wav, 1, "wav")
    return encode_batch(model, wav[None], num_quantizers=num_quantizers,
                        sample_rate=sample_rate)[0]


def decode_batch(model: SoundStream, codes) -> np.ndarray:
    """int `[batch, frames, q]` (q <= Q) -> float32 `[batch, frames * hop]` at the model's rate."""
    codes = check_codes(model, codes, batched=True)
    return np.asarray(_decode_jit(model, codes), dtype=np.float32)


def decode(model: SoundStream, codes) -> np.ndarray:
    """int `[frames, q]` (q <= Q) -> float32 `[frames * hop]` at the model's rate."""
    codes = check_codes(model, codes, batched=False)
    return decode_batch(model, codes[None])[0]


def resynthesize_batch(model: SoundStream, wavs, lengths=None, *,
                       num_quantizers: int | None = None) -> np.ndarray:
    """float `[batch, samples]` at the model's rate through the codec (encode, then decode with
    `num_quantizers` or all levels) -> float32 `[batch, samples]`, zero past each row's
    `lengths` (all samples when None): a zero-padded batch of clips comes back as one."""
    wavs = _checked_wav(wavs, 2, "wavs")
    out = decode_batch(model, encode_batch(model, wavs, num_quantizers=num_quantizers,
                                           sample_rate=model.sample_rate))[:, :wavs.shape[1]]
    if lengths is not None:
        out = np.where(np.arange(wavs.shape[1])[None] < np.asarray(lengths)[:, None], out, 0.0)
    return out.astype(np.float32)


def resynthesize_clips(model: SoundStream, clips: Sequence[np.ndarray], *,
                       batch_size: int = 16) -> list[np.ndarray]:
    """Mono clips of any lengths (at the model's rate) through the codec, each one whole, ->
    float32 clips of the same lengths, in order. Clips are batched with their neighbours in
    length, `batch_size` rows zero-padded to the longest clip's length / 2^k rounded up (the
    smallest that holds the batch): one program compiles per octave of lengths, and a clip is
    padded to less than twice its length (one width for all padded the small world's speech to
    2.8x). The codec is causal: right padding changes no earlier sample."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use a positive batch size")
    clips = [_checked_wav(c, 1, "clip") for c in clips]
    if not clips:
        return []
    longest = max(c.shape[0] for c in clips)
    order = sorted(range(len(clips)), key=lambda i: -clips[i].shape[0])
    out: list[np.ndarray | None] = [None] * len(clips)
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        width = longest                                   # halved (rounding up) while it holds
        while (half := -(-width // 2)) < width and half >= clips[group[0]].shape[0]:
            width = half
        batch = np.zeros((batch_size, width), np.float32)
        for row, i in enumerate(group):
            batch[row, :clips[i].shape[0]] = clips[i]
        done = resynthesize_batch(model, batch)
        for row, i in enumerate(group):
            out[i] = done[row, :clips[i].shape[0]].copy()
    return out
