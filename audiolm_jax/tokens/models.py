"""The frozen tokenizers of the tokenize job: codec + semantic tokenizer in one compiled program.

`FrozenTokenizers.load(codec_path, semantic_path)` restores both, replicates their parameters on
the local devices and compiles one program per padded batch shape that returns, for
wav float32 [batch, samples] (samples a multiple of 640) and true lengths int32 [batch]:
    codes int32 [batch, samples // 320, Q]   and   ids int32 [batch, samples // 640]
with the batch split over the devices (data parallel). `fingerprint`s identify the parameters
(sha256 over every array), so a cache records exactly which models made it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import os
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiolm_jax.semantic.kmeans import nearest_centroid
from audiolm_jax.semantic.standardize import standardize
from audiolm_jax.semantic.w2v_bert import valid_frames
from audiolm_jax.tokens.batching import ACOUSTIC_HOP, SEMANTIC_HOP

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the cache manifest records about the models."""
    codec: str
    codec_sha256: str
    num_quantizers: int
    codebook_size: int
    tokenizer: str
    tokenizer_sha256: str
    num_clusters: int


def _fingerprint(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _flat_arrays(state) -> dict[str, np.ndarray]:
    """{path: array} of an nnx state, without RNG streams (not part of a frozen model)."""
    arrays = {}
    for path, var in nnx.to_flat_state(state):
        name = "/".join(map(str, path))
        value = var.get_value() if hasattr(var, "get_value") else var
        if "rngs" in name or jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            continue
        arrays[name] = np.asarray(jax.device_get(value))
    return arrays


def model_info(codec, semantic, codec_name: str, tokenizer_name: str) -> ModelInfo:
    """Names, vocabulary sizes and parameter fingerprints of a codec and a SemanticTokenizer."""
    semantic_arrays = _flat_arrays(nnx.state(semantic.model))
    semantic_arrays.update({"@mean": np.asarray(semantic.mean), "@std": np.asarray(semantic.std),
                            "@centroids": np.asarray(semantic.centroids),
                            "@layer": np.asarray(semantic.layer)})
    return ModelInfo(
        codec=codec_name, codec_sha256=_fingerprint(_flat_arrays(nnx.state(codec))),
        num_quantizers=codec.num_quantizers, codebook_size=codec.codebook_size,
        tokenizer=tokenizer_name, tokenizer_sha256=_fingerprint(semantic_arrays),
        num_clusters=semantic.num_clusters)


def _model_name(path: str | os.PathLike) -> str:
    """A readable name: the directory's base name (its parent's for a checkpoints/ folder)."""
    path = os.path.abspath(os.fspath(path))
    base = os.path.basename(path)
    return os.path.basename(os.path.dirname(path)) if base == "checkpoints" else base


# Graph definitions and the layer are static: tokenizers of one architecture (a Beam worker's
# models reloaded in `setup`, say) share compiled programs.
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _tokenize(codec_graph, semantic_graph, layer, codec_state, semantic_state, mean, std,
              centroids, wav, lengths):
    codes = nnx.merge(codec_graph, codec_state).encode(wav)
    w2v_bert = nnx.merge(semantic_graph, semantic_state)
    valid = valid_frames(lengths, wav.shape[1] // SEMANTIC_HOP, w2v_bert.config)
    h = standardize(w2v_bert.mlm_layer_activations(wav, layer, valid), mean, std)
    ids, _ = nearest_centroid(h.reshape(-1, h.shape[-1]), centroids)
    return codes, ids.reshape(h.shape[:2])


class FrozenTokenizers:
    """Codec + semantic tokenizer, frozen and replicated on `devices` (default: local devices).

    Batches of `batch_size` rows are split over the largest number of the devices that divides
    `batch_size` (so shapes, and thus results, do not depend on how many devices there are).
    """

    def __init__(self, codec, semantic, info: ModelInfo, devices: Sequence | None = None):
        if codec.sample_rate != SAMPLE_RATE or codec.hop_length != ACOUSTIC_HOP:
            raise ValueError(f"the codec runs at {codec.sample_rate} Hz with a {codec.hop_length}-"
                             f"sample hop; the token cache needs {SAMPLE_RATE} Hz and "
                             f"{ACOUSTIC_HOP} (50 Hz frames): pass a codec trained at 16 kHz")
        if semantic.num_frames(SEMANTIC_HOP * 10) != 10:
            raise ValueError("the semantic tokenizer does not run at 25 Hz (640 samples per frame)"
                             "; the token cache needs 25 Hz ids")
        self.info = info
        self.devices = list(devices or jax.local_devices())
        codec_graph, codec_state = nnx.split(codec)
        semantic_graph, semantic_state = nnx.split(semantic.model)
        self._static = (codec_graph, semantic_graph, semantic.layer)
        self._arrays = (codec_state, semantic_state, semantic.mean, semantic.std,
                        semantic.centroids)
        self._placed: dict[int, tuple] = {}
        self._compiled: dict[tuple[int, int], object] = {}   # (batch, samples) -> executable

    @classmethod
    def load(cls, codec_path: str | os.PathLike, semantic_path: str | os.PathLike, *,
             codec_gin: Sequence[str] | None = None, codec_gin_bindings: Sequence[str] = (),
             compute_dtype: str | None = None, devices: Sequence | None = None
             ) -> "FrozenTokenizers":
        """Restore the codec (trainer workdir, checkpoints/ folder, step folder or export) and the
        semantic tokenizer (a SemanticTokenizer.save directory)."""
        from audiolm_jax.codec.frozen import load_codec  # noqa: PLC0415
        from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: PLC0415

        absl_log = logging.getLogger("absl")  # Orbax warns per item a read-only restore skips
        level = absl_log.level
        absl_log.setLevel(logging.ERROR)
        try:
            codec = load_codec(codec_path, codec_gin or None, gin_bindings=codec_gin_bindings,
                               compute_dtype=compute_dtype)
        finally:
            absl_log.setLevel(level)
        semantic = SemanticTokenizer.load(semantic_path)
        info = model_info(codec, semantic, _model_name(codec_path), _model_name(semantic_path))
        return cls(codec, semantic, info, devices)

    @classmethod
    def from_spec(cls, spec, devices: Sequence | None = None) -> "FrozenTokenizers":
        """The models a `job.JobSpec` names."""
        return cls.load(spec.codec, spec.semantic, codec_gin=spec.codec_gin,
                        codec_gin_bindings=spec.codec_gin_bindings,
                        compute_dtype=spec.compute_dtype, devices=devices)

    def _placement(self, batch_size: int):
        """(parameters replicated on the devices, batch sharding) for `batch_size` rows."""
        if batch_size not in self._placed:
            count = max(n for n in range(1, len(self.devices) + 1) if batch_size % n == 0)
            mesh = Mesh(np.array(self.devices[:count]), ("data",))
            arguments = jax.device_put(self._arrays, NamedSharding(mesh, P()))
            self._placed[batch_size] = (arguments, NamedSharding(mesh, P("data")))
        return self._placed[batch_size]

    def _compile_one(self, batch_size: int, samples: int):
        arguments, rows = self._placement(batch_size)
        wav = jax.ShapeDtypeStruct((batch_size, samples), np.float32, sharding=rows)
        lengths = jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=rows)
        return _tokenize.lower(*self._static, *arguments, wav, lengths).compile()

    def compile(self, batch_size: int, padded_lengths, threads: int = 8) -> int:
        """Compile, ahead of use and `threads` at a time, the programs for [batch_size, samples]
        batches of each padded length not compiled yet; returns how many were compiled.

        Why: a job meets one shape per length bucket, and compiled one after the other (as
        `dispatch` would, at each new shape) the compiles dominate a short job: XLA compiles
        in C++ without the GIL, so threads overlap them on a many-core host.
        """
        todo = sorted({int(n) for n in padded_lengths} - {s for b, s in self._compiled
                                                           if b == batch_size})
        for n in todo:
            if n <= 0 or n % SEMANTIC_HOP:
                raise ValueError(f"padded lengths must be positive multiples of {SEMANTIC_HOP}, "
                                 f"got {n}")
        self._placement(batch_size)   # place the parameters once, before the threads
        with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(todo) or 1))) as pool:
            for n, executable in zip(todo, pool.map(lambda n: self._compile_one(batch_size, n),
                                                    todo)):
                self._compiled[(batch_size, n)] = executable
        return len(todo)

    def dispatch(self, wav: np.ndarray, lengths: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Start tokenizing a batch (asynchronously): wav float32 [batch, samples] (a multiple of
        640), lengths int32 [batch] -> device arrays (codes int32 [batch, samples // 320, Q],
        ids int32 [batch, samples // 640]); ids past a row's length are padding."""
        if wav.ndim != 2 or wav.shape[1] % SEMANTIC_HOP:
            raise ValueError(f"wav must be [batch, samples] with samples a multiple of "
                             f"{SEMANTIC_HOP}, got {wav.shape}")
        arguments, rows = self._placement(wav.shape[0])
        wav, lengths = jax.device_put((np.asarray(wav, np.float32), np.asarray(lengths, np.int32)),
                                      rows)
        executable = self._compiled.get(wav.shape)
        if executable is not None:
            return executable(*arguments, wav, lengths)
        return _tokenize(*self._static, *arguments, wav, lengths)

    def __call__(self, wav: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`dispatch`, waited for, as numpy arrays."""
        codes, ids = self.dispatch(wav, lengths)
        return np.asarray(codes, np.int32), np.asarray(ids, np.int32)
