"""Frame features for ABX, one utterance at a time: wav float32 `[samples]` 16 kHz -> arrays.

    W2vBertLayers      every MLM layer's raw activations, float32 [frames, dim] each, 25 Hz
                       (the paper's Figure 3: ABX per layer)
    SemanticTokens     semantic ids -> their k-means centroid (standardised space), 25 Hz;
                       or the ids themselves ("onehot" mode, scored with the mismatch distance)
    CodecTokens        SoundStream codes of the first q levels -> the quantized embedding (sum of
                       the q codebook vectors, what the decoder sees), 50 Hz; or the ids
    log_mel_features   80-bin log-mel at 100 Hz minus its utterance mean, a signal-level reference

Each utterance is zero-padded to a multiple of `bucket_seconds` (one compiled program per bucket,
not per length) with at least one 25 Hz frame of padding; w2v-BERT gets the true length as a mask
and the codec is causal, so the padding never changes the frames kept.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.audio import SAMPLE_RATE
from audiolm_jax.audio.features import LogMelConfig, log_mel
from audiolm_jax.codec.soundstream import SoundStream
from audiolm_jax.semantic.tokenizer import FRAME_RATE_HZ, SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, num_frames, valid_frames

FRAME_SAMPLES = SAMPLE_RATE // FRAME_RATE_HZ  # 640: one 25 Hz frame
TOKEN_MODES = ("embedding", "onehot")


def padded(wav: np.ndarray, bucket_seconds: float) -> np.ndarray:
    """`wav` zero-padded to a multiple of the bucket, with at least one 40 ms frame of padding."""
    bucket = int(round(bucket_seconds * SAMPLE_RATE))
    if bucket <= 0 or bucket % FRAME_SAMPLES:
        raise ValueError(f"bucket_seconds={bucket_seconds}: must be a positive multiple of 0.04 s")
    total = -(-(len(wav) + FRAME_SAMPLES) // bucket) * bucket
    out = np.zeros(total, np.float32)
    out[:len(wav)] = wav
    return out


@functools.partial(jax.jit, static_argnums=0)
def _all_mlm_layers(graphdef, state, wav, valid):
    out = nnx.merge(graphdef, state)(wav, valid=valid, return_layers=True)
    return jnp.stack([h.astype(jnp.float32) for h in out.mlm_layers])  # [layers, batch, T, D]


class W2vBertLayers:
    """`__call__(wav) -> [layer_1, ..., layer_L]` raw MLM-layer activations `[frames, dim]`,
    frames = samples // 640 (evaluation mode, no masking, padding masked out of attention)."""

    frame_rate = float(FRAME_RATE_HZ)

    def __init__(self, model: W2vBert, bucket_seconds: float = 2.0):
        self.config = model.config
        self.num_layers = model.config.num_mlm_layers
        self._graphdef, self._state = nnx.split(model)
        self.bucket_seconds = bucket_seconds

    def __call__(self, wav: np.ndarray) -> list[np.ndarray]:
        frames = num_frames(len(wav), self.config)
        if frames == 0:
            return [np.zeros((0, self.config.model_dim), np.float32)] * self.num_layers
        x = padded(wav, self.bucket_seconds)[None]
        valid = valid_frames(jnp.array([len(wav)]), num_frames(x.shape[1], self.config), self.config)
        layers = np.asarray(_all_mlm_layers(self._graphdef, self._state, jnp.asarray(x), valid))
        return [layers[i, 0, :frames] for i in range(self.num_layers)]


class SemanticTokens:
    """`__call__(wav)` -> centroid vectors float32 `[frames, dim]` of the semantic ids, or the
    ids int32 `[frames, 1]` in "onehot" mode (score those with distance="mismatch")."""

    frame_rate = float(FRAME_RATE_HZ)

    def __init__(self, tokenizer: SemanticTokenizer, mode: str = "embedding",
                 bucket_seconds: float = 2.0):
        if mode not in TOKEN_MODES:
            raise ValueError(f"mode={mode!r}: choose one of {TOKEN_MODES}")
        self.tokenizer, self.mode, self.bucket_seconds = tokenizer, mode, bucket_seconds
        self._centroids = np.asarray(tokenizer.centroids, np.float32)

    def ids(self, wav: np.ndarray) -> np.ndarray:
        frames = self.tokenizer.num_frames(len(wav))
        if frames == 0:
            return np.zeros(0, np.int32)
        x = padded(wav, self.bucket_seconds)
        return np.asarray(self.tokenizer.tokenize(x, lengths=[len(wav)]), np.int32)[:frames]

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        ids = self.ids(wav)
        return ids[:, None] if self.mode == "onehot" else self._centroids[ids]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _codec_codes(graphdef, state, wav, levels):
    return nnx.merge(graphdef, state).encode(wav, levels)


class CodecTokens:
    """`__call__(wav) -> {levels: features}` for each RVQ depth in `levels` (e.g. 4 and 12):
    the quantized embedding float32 `[frames, dim]` (sum of the first `levels` codebook vectors),
    or the codes int32 `[frames, levels]` in "onehot" mode. frames = ceil(samples / hop)."""

    def __init__(self, model: SoundStream, levels: Sequence[int], mode: str = "embedding",
                 bucket_seconds: float = 2.0):
        if mode not in TOKEN_MODES:
            raise ValueError(f"mode={mode!r}: choose one of {TOKEN_MODES}")
        bad = [q for q in levels if not 1 <= q <= model.num_quantizers]
        if bad:
            raise ValueError(f"RVQ levels {bad} out of range: this codec has Q="
                             f"{model.num_quantizers} quantizers")
        if model.sample_rate != SAMPLE_RATE:
            raise ValueError(f"codec sample rate {model.sample_rate} Hz: ABX reads 16 kHz audio")
        self.levels, self.mode, self.bucket_seconds = tuple(levels), mode, bucket_seconds
        self.hop, self.frame_rate = model.hop_length, float(model.config.frame_rate)
        self._codebooks = np.asarray(model.quantizer.codebooks[...], np.float32)  # [Q, N, D]
        self._graphdef, self._state = nnx.split(model)

    def codes(self, wav: np.ndarray) -> np.ndarray:
        """int32 `[frames, max(levels)]`."""
        frames = -(-len(wav) // self.hop)
        x = padded(wav, self.bucket_seconds)
        x = np.pad(x, (0, -len(x) % self.hop))[None]
        codes = _codec_codes(self._graphdef, self._state, jnp.asarray(x), max(self.levels))
        return np.asarray(codes, np.int32)[0, :frames]

    def __call__(self, wav: np.ndarray) -> dict[int, np.ndarray]:
        codes = self.codes(wav)
        if self.mode == "onehot":
            return {q: codes[:, :q] for q in self.levels}
        out, total = {}, np.zeros((len(codes), self._codebooks.shape[-1]), np.float32)
        for q in range(max(self.levels)):
            total = total + self._codebooks[q][codes[:, q]]
            if q + 1 in self.levels:
                out[q + 1] = total
        return out


def levels_for_kbps(model: SoundStream, kbps: float) -> int:
    """RVQ levels giving `kbps` (frame_rate * q * log2 N): 4 and 12 for 2 and 6 kbps of the paper
    codec. Raises ValueError when no whole number of this codec's levels gives that rate."""
    per_level = model.config.frame_rate * math.log2(model.codebook_size) / 1000.0
    q = kbps / per_level
    if abs(q - round(q)) > 1e-6 or not 1 <= round(q) <= model.num_quantizers:
        raise ValueError(f"{kbps} kbps is not reachable with this codec ({per_level:g} kbps per "
                         f"level, Q={model.num_quantizers}); use a codec with N=1024 codes at "
                         f"50 Hz and Q >= 12 (models/codec_paper_speech)")
    return int(round(q))


@functools.partial(jax.jit, static_argnums=1)
def _log_mel(wav, config):
    return log_mel(wav, config)


def log_mel_features(wav: np.ndarray, config: LogMelConfig = LogMelConfig(),
                     bucket_seconds: float = 2.0) -> np.ndarray:
    """float32 `[samples // hop, n_mels]` log-mel at 100 Hz minus its mean over the utterance
    (all log-mels point the same way; centring makes the angular distance see the spectrum's
    shape, as cepstral mean normalisation does for MFCC baselines)."""
    frames = len(wav) // config.hop_length
    x = padded(wav, bucket_seconds)[None]
    mel = np.asarray(_log_mel(jnp.asarray(x), config), np.float32)[0, :frames]
    return mel - mel.mean(axis=0, keepdims=True) if frames else mel
