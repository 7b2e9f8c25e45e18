"""SemanticTokenizer: frozen w2v-BERT + MLM layer + standardiser + k-means centroids -> ids at 25 Hz.

    wav [samples] 16 kHz -> MLM layer `layer` activations [frames, dim] -> (x - mean) / std
      -> nearest centroid -> int32 ids [frames], frames = samples // 640, ids in [0, K)

`fit_semantic_tokenizer` builds one from a trained w2v-BERT and audio batches (streamed moments,
then k-means). `save`/`load` use a directory, no pickle:

    config.json     format, version, the W2vBertConfig, layer, K, dim
    params.npz      the model's parameters, keys are nnx state paths joined by '/'
                    (e.g. "mlm_layers/6/attention/query/kernel")
    tokenizer.npz   mean [dim], std [dim], centroids [K, dim]

Until the trainer's Orbax checkpoints are wired in, params.npz is the interchange format: any
W2vBert state flattened with `nnx.to_flat_state` loads here.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.semantic.kmeans import KMeansResult, kmeans_fit, nearest_centroid
from audiolm_jax.semantic.standardize import empty_moments, mean_and_std, standardize, update_moments
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, num_frames, valid_frames

FORMAT = "audiolm_jax.semantic_tokenizer"
VERSION = 1
FRAME_RATE_HZ = 25  # 16 kHz / 640
FRAME_SAMPLES = 640  # 16 kHz / 25 Hz


# The model's structure (graphdef) and the layer are static: tokenizers of one architecture share
# compiled programs.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer_activations(graphdef, layer, state, wav, valid):
    return nnx.merge(graphdef, state).mlm_layer_activations(wav, layer, valid)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _tokenize(graphdef, layer, state, wav, valid, mean, std, centroids):
    h = standardize(_layer_activations(graphdef, layer, state, wav, valid), mean, std)
    ids, _ = nearest_centroid(h.reshape(-1, h.shape[-1]), centroids)
    ids = ids.reshape(h.shape[:2])
    return ids if valid is None else jnp.where(valid, ids, -1)


class SemanticTokenizer:
    """Maps 16 kHz audio to semantic token ids at 25 Hz.

    Args:
      model: a trained W2vBert (its parameters are copied: the tokenizer is frozen).
      layer: MLM-module layer, 1-based (7 in AudioLM).
      mean, std: float [dim] standardisation statistics of that layer's activations.
      centroids: float [K, dim] k-means centroids in the standardised space.
    """

    def __init__(self, model: W2vBert, layer: int, mean, std, centroids):
        dim, n_layers = model.config.model_dim, model.config.num_mlm_layers
        if not 1 <= layer <= n_layers:
            raise ValueError(f"SemanticTokenizer: layer={layer} out of range 1..{n_layers} "
                             f"(MLM-module layers are 1-based, AudioLM uses 7)")
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        centroids = np.asarray(centroids, np.float32)
        if mean.shape != (dim,) or std.shape != (dim,) or centroids.ndim != 2 or centroids.shape[1] != dim:
            raise ValueError(f"SemanticTokenizer: expected mean/std [{dim}] and centroids [K, {dim}], "
                             f"got {mean.shape}, {std.shape}, {centroids.shape}")
        if np.any(std <= 0):
            raise ValueError("SemanticTokenizer: std must be positive; floor it (standardize.mean_and_std)")
        self.config, self.layer = model.config, layer
        self.mean, self.std, self.centroids = jnp.asarray(mean), jnp.asarray(std), jnp.asarray(centroids)
        graphdef, state = nnx.split(model)
        self._graphdef = graphdef
        self._state = jax.tree.map(jnp.array, state)  # a copy: later training does not leak in

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def model(self) -> W2vBert:
        """The frozen model (a fresh module over the tokenizer's parameters)."""
        return nnx.merge(self._graphdef, self._state)

    def num_frames(self, num_samples: int) -> int:
        """samples // 640 at 16 kHz."""
        return num_frames(num_samples, self.config)

    def _batch(self, wav, lengths):
        wav = jnp.asarray(wav, jnp.float32)
        if wav.ndim not in (1, 2):
            raise ValueError(f"SemanticTokenizer: wav must be [samples] or [batch, samples], got {wav.shape}")
        single = wav.ndim == 1
        wav = wav[None] if single else wav
        if self.num_frames(wav.shape[-1]) == 0:
            raise ValueError(f"SemanticTokenizer: {wav.shape[-1]} samples is shorter than one 40 ms frame "
                             f"(640 samples at 16 kHz)")
        valid = None
        if lengths is not None:
            valid = valid_frames(jnp.atleast_1d(jnp.asarray(lengths)), self.num_frames(wav.shape[-1]),
                                 self.config)
        return wav, valid, single

    def features(self, wav, lengths=None) -> jnp.ndarray:
        """Standardised layer activations: float32 [(batch,) frames, dim]."""
        wav, valid, single = self._batch(wav, lengths)
        h = _layer_activations(self._graphdef, self.layer, self._state, wav, valid)
        h = standardize(h, self.mean, self.std)
        return h[0] if single else h

    def tokenize(self, wav, lengths=None) -> jnp.ndarray:
        """Semantic ids.

        Args:
          wav: float [samples] or [batch, samples] at 16 kHz.
          lengths: int [batch] true lengths in samples of a padded batch, or None (all valid).
            Frames past a length get id -1 and are masked out of attention; the last frames
            before the padding still see up to 2 padded log-mel frames through the convs.
        Returns:
          int32 [frames] or [batch, frames], frames = samples // 640, ids in [0, K).
        """
        wav, valid, single = self._batch(wav, lengths)
        ids = _tokenize(self._graphdef, self.layer, self._state, wav, valid, self.mean, self.std,
                        self.centroids)
        return ids[0] if single else ids

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the tokenizer directory atomically (a temp dir renamed over `path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            config = {"format": FORMAT, "version": VERSION, "model": self.config.to_dict(),
                      "layer": self.layer, "num_clusters": self.num_clusters,
                      "dim": int(self.mean.shape[0])}
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
            params = {"/".join(map(str, p)): np.asarray(v[...])
                      for p, v in nnx.to_flat_state(self._state)}
            np.savez(tmp / "params.npz", **params)
            np.savez(tmp / "tokenizer.npz", mean=np.asarray(self.mean), std=np.asarray(self.std),
                     centroids=np.asarray(self.centroids))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, dtype=jnp.float32) -> "SemanticTokenizer":
        """Reads a directory written by `save`; `dtype` is the compute dtype."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: missing; point at a directory written by "
                                    f"SemanticTokenizer.save")
        config = json.loads(config_file.read_text())
        if config.get("format") != FORMAT or config.get("version") != VERSION:
            raise ValueError(f"{config_file}: format {config.get('format')!r} version "
                             f"{config.get('version')!r}, expected {FORMAT!r} version {VERSION}; "
                             f"re-save it with this version of audiolm_jax")
        model_config = W2vBertConfig.from_dict(config["model"])
        abstract = nnx.eval_shape(lambda: W2vBert(model_config, rngs=nnx.Rngs(0), dtype=dtype))
        graphdef, abstract_state = nnx.split(abstract)
        with np.load(path / "params.npz", allow_pickle=False) as params:
            leaves = []
            for p, var in nnx.to_flat_state(abstract_state):
                key = "/".join(map(str, p))
                if key not in params:
                    raise ValueError(f"{path / 'params.npz'}: parameter {key!r} missing; the file "
                                     f"does not match its config.json")
                value = params[key]
                if value.shape != var.shape:
                    raise ValueError(f"{path / 'params.npz'}: {key!r} has shape {value.shape}, "
                                     f"config.json implies {var.shape}")
                leaves.append((p, var.replace(value=jnp.asarray(value))))
        model = nnx.merge(graphdef, nnx.from_flat_state(leaves))
        with np.load(path / "tokenizer.npz", allow_pickle=False) as arrays:
            return cls(model, config["layer"], arrays["mean"], arrays["std"], arrays["centroids"])


def fit_semantic_tokenizer(model: W2vBert, layer: int, batches: Iterable, k: int, rng: jax.Array,
                           iters: int = 20, max_vectors: int | None = None,
                           batch_size: int | None = None, chunk_size: int = 16384
                           ) -> tuple[SemanticTokenizer, KMeansResult]:
    """Builds a SemanticTokenizer from audio: streamed standardisation statistics, then k-means.

    Args:
      model: trained W2vBert (frozen from here on).
      layer: MLM-module layer, 1-based.
      batches: iterable of wav [batch, samples], or of (wav, lengths) for padded batches.
      k: clusters (1024 in AudioLM).
      rng: key for k-means.
      iters, batch_size, chunk_size: see kmeans.kmeans_fit.
      max_vectors: keep at most this many frames for k-means (statistics still use every frame);
        the first ones are kept, so shuffle the batches. None: keep all.
    Returns:
      (tokenizer, k-means result).
    """
    graphdef, state = nnx.split(model)
    moments, kept, n_kept = empty_moments(model.config.model_dim), [], 0
    for item in batches:
        wav, lengths = item if isinstance(item, tuple) else (item, None)
        wav = jnp.asarray(wav, jnp.float32)
        valid = None if lengths is None else valid_frames(
            jnp.asarray(lengths), model.num_frames(wav.shape[-1]), model.config)
        h = np.asarray(_layer_activations(graphdef, layer, state, wav, valid))
        valid_np = None if valid is None else np.asarray(valid)
        moments = update_moments(moments, h, valid_np)
        vectors = h.reshape(-1, h.shape[-1]) if valid_np is None else h[valid_np]
        if max_vectors is None or n_kept < max_vectors:
            take = vectors if max_vectors is None else vectors[:max_vectors - n_kept]
            kept.append(take)
            n_kept += take.shape[0]
    if not kept:
        raise ValueError("fit_semantic_tokenizer: `batches` yielded no audio frames")
    mean, std = mean_and_std(moments)
    x = (np.concatenate(kept) - mean) / std
    result = kmeans_fit(x, k, rng, iters=iters, batch_size=batch_size, chunk_size=chunk_size)
    return SemanticTokenizer(model, layer, mean, std, result.centroids), result


def bucketed_ids(tokenizer, wav, bucket_samples: int):
    """int32 [samples // 640] ids of one utterance (float32 [samples] at 16 kHz), computed on it
    zero-padded to a multiple of `bucket_samples` (itself a multiple of 640) with at least one
    frame of padding, its true length passed as `lengths`. One compiled program per bucket
    instead of one per length, and the ids do not depend on the bucket (the last real frames see
    zeros after them whatever the padding), as in the tokenize job's batches."""
    samples = int(wav.shape[0])
    frames = samples // FRAME_SAMPLES
    if frames == 0:
        raise ValueError(f"{samples} samples is shorter than one 40 ms frame ({FRAME_SAMPLES} samples)")
    total = -(-(samples + FRAME_SAMPLES) // bucket_samples) * bucket_samples
    padded = np.zeros(total, np.float32)
    padded[:samples] = wav
    ids = np.asarray(tokenizer.tokenize(padded, lengths=[samples]), np.int32)
    return ids[:frames]
