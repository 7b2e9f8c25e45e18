"""Tiny token caches for the stage-data tests, written through `audiolm_jax.tokens.cache`.

The tokens follow simple rules (next semantic id from the previous one, codes from the semantic
id and level), so a tiny Transformer can learn them in a few hundred steps.
"""
from __future__ import annotations

import os

import numpy as np

from audiolm_jax.tokens.cache import Utterance, shard_name, write_manifest, write_shard

# The tiny world of gin/models/lm_tiny.gin: K=64, Q=4, N=32 -> 3 + 64 + 4 * 32 = 195 ids.
TINY_K, TINY_Q, TINY_N = 64, 4, 32


def rule_utterance(uid: str, num_semantic: int, rng: np.random.Generator, k: int = TINY_K,
                   q: int = TINY_Q, n: int = TINY_N, extra_acoustic: int = 0) -> Utterance:
    """Semantic ids z_{t+1} = (5 z_t + 3) mod K, each held 1-2 frames; codes from (z_t, level)."""
    ids = [int(rng.integers(k))]
    while len(ids) < num_semantic:
        ids.append(ids[-1] if rng.random() < 0.3 else (5 * ids[-1] + 3) % k)
    semantic = np.asarray(ids[:num_semantic], np.int32)
    frames = 2 * num_semantic + extra_acoustic
    owner = np.minimum(np.arange(frames) // 2, num_semantic - 1) if num_semantic else np.zeros(frames, int)
    base = semantic[owner] if num_semantic else np.zeros(frames, np.int32)
    acoustic = ((base[:, None] * (np.arange(q) + 1) + np.arange(frames)[:, None] % 2 * 7
                 + np.arange(q)) % n).astype(np.int32)
    return Utterance(uid, semantic, acoustic, num_semantic / 25.0)


def write_cache(path: str | os.PathLike, utterances: list[Utterance], num_shards: int = 2,
                k: int = TINY_K, q: int = TINY_Q, n: int = TINY_N, dataset: str = "tiny",
                split: str = "train") -> str:
    """Writes `utterances` as `num_shards` contiguous shards plus the manifest; returns the path."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    bounds = np.linspace(0, len(utterances), num_shards + 1).round().astype(int)
    shards = []
    for index in range(num_shards):
        part = utterances[bounds[index]:bounds[index + 1]]
        name = shard_name(index, num_shards)
        digest = write_shard(os.path.join(path, name), part)
        shards.append({"file": name, "utterances": len(part),
                       "seconds": float(sum(u.seconds for u in part)), "sha256": digest})
    write_manifest(path, {
        "format": "audiolm-jax-token-cache", "version": 1, "dataset": dataset, "split": split,
        "semantic": {"tokenizer": "rule", "num_clusters": k, "frame_rate": 25.0},
        "acoustic": {"codec": "rule", "num_quantizers": q, "codebook_size": n, "frame_rate": 50.0},
        "num_shards": num_shards, "shards": shards, "skipped": [],
        "totals": {"utterances": len(utterances), "seconds": float(sum(u.seconds for u in utterances)),
                   "skipped": 0}})
    return path


def rule_cache(path: str | os.PathLike, num_utterances: int = 12, seed: int = 0,
               frames: tuple[int, int] = (6, 30), num_shards: int = 2) -> str:
    """A cache of `num_utterances` rule utterances of random length (semantic frames in `frames`)."""
    rng = np.random.default_rng(seed)
    utterances = [rule_utterance(f"u{i:03d}", int(rng.integers(*frames)), rng,
                                 extra_acoustic=int(rng.integers(-1, 2)))
                  for i in range(num_utterances)]
    return write_cache(path, utterances, num_shards=num_shards)
