"""Untrusted files: checkpoints, exports, token caches and tokenizers load without executing code
(a pickled payload planted anywhere never runs), and malformed manifests or shards give a clear
error naming the file.

Elsewhere: tampered and missing export shards (tests/test_export.py), a truncated newest checkpoint
(tests/test_trainer_checkpoint.py), and the launch scripts: every generated script passes
`shellcheck` and quotes its arguments (tests/test_launch.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.training.checkpoint import CheckpointConfig, Checkpointer, NoCheckpointError
from audiolm_jax.training.export import ExportError, export_checkpoint, load_export
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.step import StepOptions
from tiny_models import make_lm_objective


class Payload:
    """Unpickling this creates `sentinel`: proof that a loader ran pickle on our bytes."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def pickled(sentinel: Path) -> bytes:
    return pickle.dumps(Payload(sentinel))


def object_npz(path: Path, sentinel: Path, **extra) -> None:
    """An .npz whose `evil` member is an object array: loading it needs pickle."""
    np.savez(path, evil=np.array([Payload(sentinel)], dtype=object), **extra)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny LM checkpoints at steps 1 and 2 (sync saves)."""
    directory = tmp_path_factory.mktemp("ckpt")
    prog = build_program(make_lm_objective(), make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1]),
                         axis_rules(), StepOptions(compute_dtype=jnp.float32), 100)
    state = prog.init(seed_rng(0))
    with Checkpointer(directory, CheckpointConfig(async_save=False)) as ckpt:
        for step in (1, 2):
            ckpt.save(step, dataclasses.replace(state, step=jnp.asarray(step, jnp.int32)))
    return prog, directory


def test_a_checkpoint_with_pickles_planted_in_it_never_runs_them(checkpoints, tmp_path):
    prog, directory = checkpoints
    planted = tmp_path / "ckpt"
    import shutil

    shutil.copytree(directory, planted)
    sentinel = tmp_path / "ran"
    for relative in ("2/data/metadata", "2/model/_METADATA", "2/_CHECKPOINT_METADATA"):
        (planted / relative).write_bytes(pickled(sentinel))
    (planted / "2" / "model" / "extra.pkl").write_bytes(pickled(sentinel))
    with Checkpointer(planted) as ckpt:
        with pytest.warns(UserWarning, match=r"checkpoint .*/2 is unreadable"):
            restored = ckpt.restore(prog.abstract_state)
        assert restored.step == 1  # the damaged newest one is skipped, the previous restores
        with pytest.raises(NoCheckpointError, match=r"/2 is unreadable"):
            ckpt.restore(prog.abstract_state, step=2)
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def export_dir(checkpoints, tmp_path_factory):
    _, directory = checkpoints
    return export_checkpoint(directory, tmp_path_factory.mktemp("export") / "lm")


def copy_export(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


def rewrite_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_an_export_shard_holding_a_pickle_is_refused_even_with_a_matching_checksum(export_dir,
                                                                                  tmp_path):
    root = copy_export(export_dir, tmp_path / "e")
    sentinel = tmp_path / "ran"
    shard = root / json.loads((root / "manifest.json").read_text())["shards"][0]["file"]
    object_npz(shard, sentinel)
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()
    rewrite_manifest(root, lambda m: m["shards"][0].update(sha256=digest))
    with pytest.raises(ExportError, match=r"not a readable array shard \(Object arrays cannot be "
                                          r"loaded when allow_pickle=False\)"):
        load_export(root)
    assert not sentinel.exists()


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.pop("shards"), r"malformed manifest \(KeyError"),
    (lambda m: m.__setitem__("shards", [7]), r"malformed manifest \(TypeError"),
    (lambda m: m["shards"][0].__setitem__("arrays", {"x": 3}), "malformed manifest"),
    (lambda m: m["shards"][0].__setitem__("file", "../../etc/passwd"), "not a plain file name"),
    (lambda m: m["shards"][0].__setitem__("arrays", {"x": [[1], "no-such-dtype"]}),
     "malformed manifest|not the declared"),
    (lambda m: m.clear(), r"format None, expected"),
])
def test_a_malformed_export_manifest_is_a_clear_error(export_dir, tmp_path, edit, match):
    root = copy_export(export_dir, tmp_path / "e")
    rewrite_manifest(root, edit)
    with pytest.raises(ExportError, match=match) as caught:
        load_export(root)
    assert str(root / "manifest.json") in str(caught.value) or str(root) in str(caught.value)


def test_export_manifests_that_are_not_objects_or_nest_absurdly(export_dir, tmp_path):
    root = copy_export(export_dir, tmp_path / "e")
    for text, match in (("[1, 2]", "format 'list'"), ("[" * 100000, "nested too deeply")):
        (root / "manifest.json").write_text(text)
        with pytest.raises(ExportError, match=match):
            load_export(root)


def test_a_semantic_tokenizer_directory_with_a_pickle_never_runs_it(tmp_path):
    from audiolm_jax.semantic.tokenizer import FORMAT, VERSION, SemanticTokenizer
    from audiolm_jax.semantic.w2v_bert import W2vBertConfig

    sentinel = tmp_path / "ran"
    config = {"format": FORMAT, "version": VERSION, "layer": 1, "num_clusters": 2, "dim": 4,
              "model": W2vBertConfig(model_dim=8, num_heads=2, ff_dim=8, num_contrastive_layers=1,
                                     num_mlm_layers=1, subsample_channels=4, n_mels=8).to_dict()}
    (tmp_path / "config.json").write_text(json.dumps(config))
    object_npz(tmp_path / "params.npz", sentinel)
    object_npz(tmp_path / "tokenizer.npz", sentinel)
    with pytest.raises(ValueError):
        SemanticTokenizer.load(tmp_path)
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- token caches

cache_module = pytest.importorskip("audiolm_jax.tokens.cache")


@pytest.fixture
def token_cache(tmp_path):
    """A valid one-shard cache of two utterances (K=8, Q=2, N=16)."""
    utterances = [cache_module.Utterance(f"u{i}", np.arange(5, dtype=np.int32) % 8,
                                         np.ones((10, 2), np.int32) * i, 0.2) for i in range(2)]
    root = tmp_path / "cache"
    root.mkdir()
    digest = cache_module.write_shard(root / cache_module.shard_name(0, 1), utterances)
    manifest = {"format": cache_module.FORMAT, "version": cache_module.VERSION, "dataset": "t",
                "split": "train", "semantic": {"tokenizer": "x", "num_clusters": 8,
                                               "frame_rate": 25.0},
                "acoustic": {"codec": "y", "num_quantizers": 2, "codebook_size": 16,
                             "frame_rate": 50.0},
                "num_shards": 1, "shards": [{"file": cache_module.shard_name(0, 1),
                                             "utterances": 2, "seconds": 0.4, "sha256": digest}],
                "skipped": [], "totals": {"utterances": 2, "seconds": 0.4, "skipped": 0}}
    cache_module.write_manifest(root, manifest)
    assert len(cache_module.TokenCache(root, verify=True).read_shard(0)) == 2
    return root


def test_a_token_cache_shard_holding_a_pickle_is_refused(token_cache, tmp_path):
    sentinel = tmp_path / "ran"
    shard = token_cache / cache_module.shard_name(0, 1)
    arrays = {k: v for k, v in np.load(shard, allow_pickle=False).items()}
    arrays["ids"] = np.array([Payload(sentinel), "u1"], dtype=object)
    np.savez(shard, **arrays)
    cache = cache_module.TokenCache(token_cache)
    with pytest.raises(cache_module.TokenCacheError, match=r"not a readable npz shard"):
        cache.read_shard(0)
    with pytest.raises(cache_module.TokenCacheError, match=r"sha256 .* differs"):
        cache.verify()
    assert not sentinel.exists()


@pytest.mark.parametrize("damage,match", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable npz"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + os.urandom(64)), "not a readable npz"),
    (lambda p: p.unlink(), "missing"),
])
def test_a_damaged_token_cache_shard_is_a_clear_error(token_cache, damage, match):
    shard = token_cache / cache_module.shard_name(0, 1)
    damage(shard)
    with pytest.raises(cache_module.TokenCacheError, match=match) as caught:
        cache_module.TokenCache(token_cache).read_shard(0)
    assert str(shard) in str(caught.value) and "Fix:" in str(caught.value)


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1]", "top level must be a JSON object"),
    (json.dumps({"format": "audiolm-jax-token-cache", "version": 1}), "'dataset' must be a str"),
])
def test_a_malformed_token_cache_manifest_is_a_clear_error(token_cache, text, match):
    (token_cache / "manifest.json").write_text(text)
    with pytest.raises(cache_module.TokenCacheError, match=match):
        cache_module.TokenCache(token_cache)


def test_a_token_cache_manifest_nested_absurdly_is_a_clear_error(token_cache):
    (token_cache / "manifest.json").write_text("[" * 100000)
    with pytest.raises(cache_module.TokenCacheError):
        cache_module.TokenCache(token_cache)
