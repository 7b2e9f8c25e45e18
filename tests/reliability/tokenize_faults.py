"""Fault injection in the tokenize job: kill -9 `audiolm-jax tokenize` at a random moment, rerun,
and compare the cache byte for byte with an uninterrupted run's (benchmarks/reliability.py).

The world (a tiny corpus, a random tiny codec export and semantic tokenizer) is the one of
tests/test_tokenize_job.py, whose own test kills the job at one fixed point (between a shard's
temp write and its rename); here the moment is random, from process start to the end of the run.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SPEECH = {"train": {("101", "7"): [1.0, 1.02, 1.04], ("102", "7"): [1.04, 1.0, 1.02]}}
SHARDS, BATCH = 3, 4
CODEC_GIN = "include 'models/codec_tiny.gin'\n"


def make_world(root: Path) -> dict[str, Path]:
    """{corpus, codec, semantic} under `root` (random weights: the cache's bytes are what count)."""
    from flax import nnx

    from audiolm_jax.codec.frozen import soundstream_config_from_gin
    from audiolm_jax.codec.soundstream import SoundStream
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer
    from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig
    from audiolm_jax.training.export import write_export
    sys.path.insert(0, str(ROOT / "tests"))
    from corpus_trees import write_speech_tree

    codec = SoundStream(soundstream_config_from_gin([(CODEC_GIN, "reliability")]), rngs=nnx.Rngs(0))
    arrays = {"/".join(map(str, p)): np.asarray(v.get_value())
              for p, v in nnx.to_flat_state(nnx.state(codec)) if "rngs" not in "/".join(map(str, p))}
    write_export(arrays, root / "codec", config_text=CODEC_GIN)
    config = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                           num_mlm_layers=2, subsample_channels=8, codebook_groups=2,
                           codebook_entries=16, codevector_dim=16, contrastive_dim=16,
                           num_distractors=10, dropout=0.0)
    rng = np.random.default_rng(0)
    SemanticTokenizer(W2vBert(config, rngs=nnx.Rngs(1)), 2, rng.normal(size=32),
                      rng.uniform(0.5, 2, 32), rng.normal(size=(8, 32))).save(root / "semantic")
    write_speech_tree(root / "corpus", SPEECH)
    return {"corpus": root / "corpus", "codec": root / "codec", "semantic": root / "semantic"}


def command(world: dict[str, Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "audiolm_jax.cli", "tokenize", "--corpus", str(world["corpus"]),
            "--codec", str(world["codec"]), "--semantic", str(world["semantic"]), "--out", str(out),
            "--shards", str(SHARDS), "--batch-size", str(BATCH)]


def env(cache_dir: Path) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
            "JAX_COMPILATION_CACHE_DIR": str(cache_dir), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def cache_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith(".")}


def run(world, out: Path, cache_dir: Path, kill_after: float | None = None) -> tuple[int, float]:
    """(return code, seconds); SIGKILL after `kill_after` seconds if it is still running."""
    start = time.monotonic()
    proc = subprocess.Popen(command(world, out), env=env(cache_dir), cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, err = proc.communicate()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"tokenize failed ({proc.returncode}): {err.decode()[-2000:]}")
    return proc.returncode, time.monotonic() - start


def trials(root: Path, count: int, rng: random.Random) -> dict:
    """`count` kill -9 trials at random moments; returns counts and per-trial records."""
    world = make_world(root / "world")
    cache_dir = root / "xla_cache"
    run(world, root / "warm", cache_dir)  # compiles once into the shared cache
    code, seconds = run(world, root / "reference", cache_dir)
    reference = cache_files(root / "reference")
    records = []
    for i in range(count):
        out = root / f"trial{i}"
        delay = rng.uniform(0.2, 1.0) * seconds
        code, _ = run(world, out, cache_dir, kill_after=delay)
        shards_before = sorted(p.name for p in out.iterdir()) if out.exists() else []
        run(world, out, cache_dir)
        records.append({"kill_after_s": round(delay, 2), "killed": code == -signal.SIGKILL,
                        "files_before_rerun": len(shards_before),
                        "identical": cache_files(out) == reference})
    return {"reference_seconds": round(seconds, 2), "trials": records,
            "faults_injected": sum(r["killed"] for r in records),
            "identical": sum(r["identical"] for r in records)}
