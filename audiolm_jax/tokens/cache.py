"""Token cache: per-utterance semantic ids and acoustic codes in sharded, checksummed npz files.

A cache is a directory holding `manifest.json` and `shard-XXXXX-of-YYYYY.npz` files:

    manifest.json   {"format": "audiolm-jax-token-cache", "version": 1, "dataset", "split",
                     "semantic": {"tokenizer", "num_clusters": K, "frame_rate": 25.0},
                     "acoustic": {"codec", "num_quantizers": Q, "codebook_size": N,
                                  "frame_rate": 50.0},
                     "num_shards": S, "shards": [{"file", "utterances", "seconds", "sha256"}],
                     "skipped": [{"path", "reason"}],
                     "totals": {"utterances", "seconds", "skipped"}}
    shard npz       ids unicode [n]; seconds float32 [n];
                    semantic int32 [sum S_i], semantic_offsets int64 [n + 1];
                    acoustic int16 [sum F_i, Q], acoustic_offsets int64 [n + 1]

Semantic ids lie in [0, K) at 25 Hz, acoustic codes in [0, N) at 50 Hz; F_i is about 2 * S_i
(they may differ by a frame: consumers align by time). Shards are plain zip files written with
fixed timestamps and no compression, so the same content always gives the same bytes (and the
same sha256): a rerun of the tokenize job reproduces the cache exactly. Nothing is pickled.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from audiolm_jax.lm.layouts import AudioVocabulary

FORMAT = "audiolm-jax-token-cache"
VERSION = 1
MANIFEST_NAME = "manifest.json"
SEMANTIC_FRAME_RATE = 25.0
ACOUSTIC_FRAME_RATE = 50.0
SHARD_KEYS = ("ids", "seconds", "semantic", "semantic_offsets", "acoustic", "acoustic_offsets")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: constant, so bytes are stable
_MAX_INT16_CODEBOOK = 1 << 15


class TokenCacheError(ValueError):
    """A token cache (manifest or shard) that cannot be read; the message names file and fix."""


class Utterance(NamedTuple):
    """One cached utterance: semantic int32 [S] (25 Hz), acoustic int32 [F, Q] (50 Hz)."""
    id: str
    semantic: np.ndarray
    acoustic: np.ndarray
    seconds: float


def shard_name(index: int, count: int) -> str:
    """File name of shard `index` (0-based) of `count`: shard-00003-of-00008.npz."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside [0, {count})")
    return f"shard-{index:05d}-of-{count:05d}.npz"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, then rename: readers never see half."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")  # hidden: never a cache member
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def shard_arrays(utterances: Iterable[Utterance]) -> dict[str, np.ndarray]:
    """Pack utterances into the shard arrays (see the module docstring); validates shapes."""
    utterances = list(utterances)
    num_quantizers = None
    for u in utterances:
        semantic, acoustic = np.asarray(u.semantic), np.asarray(u.acoustic)
        if semantic.ndim != 1 or acoustic.ndim != 2:
            raise ValueError(f"utterance {u.id!r}: semantic must be [S] and acoustic [F, Q], "
                             f"got {semantic.shape} and {acoustic.shape}")
        if num_quantizers is not None and acoustic.shape[1] != num_quantizers:
            raise ValueError(f"utterance {u.id!r} has {acoustic.shape[1]} quantizers, the shard's "
                             f"others have {num_quantizers}")
        num_quantizers = acoustic.shape[1]
        if acoustic.size and (acoustic.min() < 0 or acoustic.max() >= _MAX_INT16_CODEBOOK):
            raise ValueError(f"utterance {u.id!r}: acoustic codes must lie in [0, 32768) to be "
                             "stored as int16")
    semantic_lengths = [len(u.semantic) for u in utterances]
    acoustic_lengths = [len(u.acoustic) for u in utterances]
    return {
        "ids": np.asarray([u.id for u in utterances], dtype=np.str_).reshape(len(utterances)),
        "seconds": np.asarray([u.seconds for u in utterances], np.float32).reshape(len(utterances)),
        "semantic": (np.concatenate([np.asarray(u.semantic, np.int32) for u in utterances])
                     if utterances else np.zeros([0], np.int32)),
        "semantic_offsets": np.concatenate([[0], np.cumsum(semantic_lengths)]).astype(np.int64),
        "acoustic": (np.concatenate([np.asarray(u.acoustic).astype(np.int16) for u in utterances])
                     if utterances else np.zeros([0, 0], np.int16)),
        "acoustic_offsets": np.concatenate([[0], np.cumsum(acoustic_lengths)]).astype(np.int64),
    }


def shard_bytes(utterances: Iterable[Utterance]) -> bytes:
    """The deterministic npz bytes of a shard (uncompressed zip with constant timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in shard_arrays(utterances).items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_shard(path: str | os.PathLike, utterances: Iterable[Utterance]) -> str:
    """Write a shard atomically (temp file + rename) and return the sha256 of its bytes."""
    data = shard_bytes(utterances)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_shard(path: str | os.PathLike, vocabulary: AudioVocabulary | None = None
               ) -> list[Utterance]:
    """Read and validate one shard; ids are range-checked against `vocabulary` when given."""
    path = os.fspath(path)
    fix = "rerun `audiolm-jax tokenize` with the same --out to rewrite the shard"
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in SHARD_KEYS if key not in archive.files]
            if missing:
                raise TokenCacheError(f"{path}: shard lacks arrays {missing}. Fix: {fix}.")
            arrays = {key: archive[key] for key in SHARD_KEYS}
    except TokenCacheError:
        raise
    except FileNotFoundError as e:
        raise TokenCacheError(f"{path}: shard file is missing. Fix: {fix}.") from e
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise TokenCacheError(f"{path}: not a readable npz shard ({e}). Fix: {fix}.") from e
    _check_shard_arrays(path, arrays, vocabulary, fix)
    ids, seconds = arrays["ids"], arrays["seconds"]
    semantic, semantic_offsets = arrays["semantic"], arrays["semantic_offsets"]
    acoustic, acoustic_offsets = arrays["acoustic"], arrays["acoustic_offsets"]
    return [
        Utterance(
            id=str(ids[i]),
            semantic=semantic[semantic_offsets[i]:semantic_offsets[i + 1]].astype(np.int32),
            acoustic=acoustic[acoustic_offsets[i]:acoustic_offsets[i + 1]].astype(np.int32),
            seconds=float(seconds[i]),
        )
        for i in range(len(ids))
    ]


def _check_shard_arrays(path, arrays, vocabulary, fix):
    def bad(what):
        raise TokenCacheError(f"{path}: malformed shard: {what}. Fix: {fix}.")

    ids, seconds = arrays["ids"], arrays["seconds"]
    if ids.ndim != 1 or ids.dtype.kind != "U":
        bad(f"ids must be a unicode vector, got {ids.dtype} {ids.shape}")
    n = len(ids)
    if seconds.shape != (n,) or seconds.dtype != np.float32:
        bad(f"seconds must be float32 [{n}], got {seconds.dtype} {seconds.shape}")
    for name, dtype, ndim in (("semantic", np.int32, 1), ("acoustic", np.int16, 2)):
        values, offsets = arrays[name], arrays[f"{name}_offsets"]
        if values.dtype != dtype or values.ndim != ndim:
            bad(f"{name} must be {np.dtype(dtype).name} with {ndim} dims, got {values.dtype} "
                f"{values.shape}")
        if offsets.dtype != np.int64 or offsets.shape != (n + 1,):
            bad(f"{name}_offsets must be int64 [{n + 1}], got {offsets.dtype} {offsets.shape}")
        if offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
            bad(f"{name}_offsets must rise from 0 to {len(values)}")
    if vocabulary is None:
        return
    semantic, acoustic = arrays["semantic"], arrays["acoustic"]
    if semantic.size and (semantic.min() < 0 or semantic.max() >= vocabulary.semantic_size):
        bad(f"semantic ids outside [0, {vocabulary.semantic_size})")
    if len(acoustic) and acoustic.shape[1] != vocabulary.num_quantizers:
        bad(f"acoustic has {acoustic.shape[1]} quantizers, the manifest says "
            f"{vocabulary.num_quantizers}")
    if acoustic.size and (acoustic.min() < 0 or acoustic.max() >= vocabulary.codebook_size):
        bad(f"acoustic codes outside [0, {vocabulary.codebook_size})")


def manifest_bytes(manifest: dict) -> bytes:
    """Canonical JSON (sorted keys, fixed indent): equal manifests give equal bytes."""
    return (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode("utf-8")


def write_manifest(cache_dir: str | os.PathLike, manifest: dict) -> None:
    """Validate and write `manifest.json` atomically."""
    path = os.path.join(cache_dir, MANIFEST_NAME)
    check_manifest(manifest, path)
    atomic_write_bytes(path, manifest_bytes(manifest))


def check_manifest(manifest: dict, path: str = MANIFEST_NAME) -> None:
    """Raise TokenCacheError naming `path` unless `manifest` follows the format above."""
    fix = "rebuild the cache with `audiolm-jax tokenize` (a rerun rewrites the manifest)"

    def bad(what):
        raise TokenCacheError(f"{path}: malformed token-cache manifest: {what}. Fix: {fix}.")

    if not isinstance(manifest, dict):
        bad("top level must be a JSON object")
    if manifest.get("format") != FORMAT:
        bad(f"format must be {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("version") != VERSION:
        bad(f"version {manifest.get('version')!r} is not supported (this reader reads {VERSION})")
    fields = {"dataset": str, "split": str, "semantic": dict, "acoustic": dict, "num_shards": int,
              "shards": list, "skipped": list, "totals": dict}
    for key, kind in fields.items():
        if not isinstance(manifest.get(key), kind):
            bad(f"{key!r} must be a {kind.__name__}")
    for section, keys in (("semantic", ("num_clusters",)),
                          ("acoustic", ("num_quantizers", "codebook_size"))):
        for key in keys:
            value = manifest[section].get(key)
            if not isinstance(value, int) or value <= 0:
                bad(f"{section}.{key} must be a positive integer, got {value!r}")
    if manifest["acoustic"]["codebook_size"] > _MAX_INT16_CODEBOOK:
        bad("acoustic.codebook_size exceeds 32768 (codes are stored as int16)")
    count = manifest["num_shards"]
    if len(manifest["shards"]) != count:
        bad(f"num_shards is {count} but {len(manifest['shards'])} shards are listed")
    for index, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict) or shard.get("file") != shard_name(index, count):
            bad(f"shard entry {index} must name {shard_name(index, count)!r}")
        if not isinstance(shard.get("utterances"), int) or not isinstance(shard.get("sha256"), str):
            bad(f"shard entry {index} needs integer 'utterances' and string 'sha256'")


class TokenCache:
    """Reader of a token cache directory (see the module docstring for the format)."""

    def __init__(self, path: str | os.PathLike, verify: bool = False):
        self.path = os.fspath(path)
        manifest_path = os.path.join(self.path, MANIFEST_NAME)
        try:
            with open(manifest_path, "rb") as f:
                manifest = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError as e:
            raise TokenCacheError(
                f"{manifest_path}: no token-cache manifest. Fix: point at a directory written by "
                "`audiolm-jax tokenize` (an interrupted run writes it last: rerun the job)."
            ) from e
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise TokenCacheError(f"{manifest_path}: manifest is not valid JSON ({e}). Fix: "
                                  "rerun `audiolm-jax tokenize` with the same --out.") from e
        check_manifest(manifest, manifest_path)
        self.manifest = manifest
        if verify:
            self.verify()

    def vocabulary(self) -> AudioVocabulary:
        return AudioVocabulary(self.manifest["semantic"]["num_clusters"],
                               self.manifest["acoustic"]["num_quantizers"],
                               self.manifest["acoustic"]["codebook_size"])

    @property
    def num_utterances(self) -> int:
        return sum(shard["utterances"] for shard in self.manifest["shards"])

    @property
    def num_shards(self) -> int:
        return self.manifest["num_shards"]

    def shard_path(self, index: int) -> str:
        return os.path.join(self.path, self.manifest["shards"][index]["file"])

    def verify(self) -> None:
        """Check the sha256 of every shard against the manifest."""
        for index, shard in enumerate(self.manifest["shards"]):
            path = self.shard_path(index)
            if not os.path.exists(path):
                raise TokenCacheError(f"{path}: shard listed in the manifest is missing. Fix: "
                                      "rerun `audiolm-jax tokenize` with the same --out.")
            actual = sha256_file(path)
            if actual != shard["sha256"]:
                raise TokenCacheError(
                    f"{path}: sha256 {actual} differs from the manifest's {shard['sha256']} "
                    "(corrupt or replaced). Fix: delete the file and rerun `audiolm-jax tokenize` "
                    "with the same --out to rewrite it.")

    def read_shard(self, index: int) -> list[Utterance]:
        utterances = read_shard(self.shard_path(index), self.vocabulary())
        expected = self.manifest["shards"][index]["utterances"]
        if len(utterances) != expected:
            raise TokenCacheError(
                f"{self.shard_path(index)}: holds {len(utterances)} utterances, the manifest says "
                f"{expected}. Fix: rerun `audiolm-jax tokenize` with the same --out.")
        return utterances

    def utterances(self, shard_index: int = 0, shard_count: int = 1) -> Iterator[Utterance]:
        """Utterances of shards shard_index, shard_index + shard_count, ... in a fixed order.

        `shard_count` readers (hosts, loader workers) with distinct `shard_index` see disjoint
        parts that together cover the cache; each reads only its own files.
        """
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} is outside [0, {shard_count})")
        if shard_count > self.num_shards:
            raise ValueError(
                f"{self.path}: {shard_count} readers but only {self.num_shards} shards; rebuild "
                f"the cache with `audiolm-jax tokenize --shards {shard_count}` or more")
        for index in range(shard_index, self.num_shards, shard_count):
            yield from self.read_shard(index)
