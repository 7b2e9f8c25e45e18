"""Token cache format: round trip, deterministic bytes, checksums, malformed inputs."""
import json
import os

import numpy as np
import pytest

from audiolm_jax.lm.layouts import AudioVocabulary
from audiolm_jax.tokens import cache
from audiolm_jax.tokens.cache import TokenCache, TokenCacheError, Utterance

K, Q, N = 16, 3, 32


def _utterances(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        frames = int(rng.integers(1, 9))
        out.append(Utterance(id=f"spk{seed}/book/utt-{i:02d}é",
                             semantic=rng.integers(0, K, frames).astype(np.int32),
                             acoustic=rng.integers(0, N, (2 * frames + i % 2, Q)).astype(np.int32),
                             seconds=frames / 25.0))
    return out


def _write_cache(directory, shards):
    entries = []
    for index, utterances in enumerate(shards):
        name = cache.shard_name(index, len(shards))
        digest = cache.write_shard(os.path.join(directory, name), utterances)
        entries.append({"file": name, "utterances": len(utterances),
                        "seconds": float(sum(u.seconds for u in utterances)), "sha256": digest})
    manifest = {
        "format": cache.FORMAT, "version": cache.VERSION, "dataset": "tiny", "split": "train",
        "semantic": {"tokenizer": "tok", "num_clusters": K, "frame_rate": 25.0},
        "acoustic": {"codec": "codec", "num_quantizers": Q, "codebook_size": N, "frame_rate": 50.0},
        "num_shards": len(shards), "shards": entries,
        "skipped": [{"path": "bad.flac", "reason": "corrupt"}],
        "totals": {"utterances": sum(map(len, shards)), "seconds": 1.0, "skipped": 1}}
    cache.write_manifest(directory, manifest)
    return manifest


def _assert_same(a, b):
    assert [u.id for u in a] == [u.id for u in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.semantic, y.semantic)
        np.testing.assert_array_equal(x.acoustic, y.acoustic)
        assert x.semantic.dtype == np.int32 and x.acoustic.dtype == np.int32
        assert x.seconds == pytest.approx(y.seconds)


def test_round_trip_and_sharded_reading(tmp_path):
    shards = [_utterances(0, 3), _utterances(1, 0), _utterances(2, 4)]
    _write_cache(tmp_path, shards)
    reader = TokenCache(tmp_path, verify=True)
    assert reader.vocabulary() == AudioVocabulary(K, Q, N)
    assert reader.num_utterances == 7 and reader.num_shards == 3
    _assert_same(list(reader.utterances()), shards[0] + shards[1] + shards[2])
    _assert_same(list(reader.utterances(0, 2)), shards[0] + shards[2])
    _assert_same(list(reader.utterances(1, 2)), shards[1])
    with pytest.raises(ValueError, match="--shards 4"):
        list(reader.utterances(0, 4))
    with np.load(tmp_path / cache.shard_name(0, 3), allow_pickle=False) as arrays:
        assert arrays["acoustic"].dtype == np.int16 and arrays["ids"].dtype.kind == "U"
        assert arrays["semantic_offsets"].dtype == np.int64


def test_shard_bytes_are_deterministic(tmp_path):
    utterances = _utterances(3, 5)
    first = cache.write_shard(tmp_path / "a.npz", utterances)
    os.utime(tmp_path / "a.npz", (0, 0))
    second = cache.write_shard(tmp_path / "b.npz", utterances)
    assert first == second == cache.sha256_file(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz"]  # no temp files left behind


def test_verify_catches_a_flipped_byte(tmp_path):
    _write_cache(tmp_path, [_utterances(0, 2), _utterances(1, 2)])
    path = tmp_path / cache.shard_name(1, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TokenCacheError, match="shard-00001-of-00002.npz.*sha256.*rerun"):
        TokenCache(tmp_path, verify=True)
    path.unlink()
    with pytest.raises(TokenCacheError, match="missing"):
        TokenCache(tmp_path).verify()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="other"), "format"),
    (lambda m: m.update(version=9), "version 9"),
    (lambda m: m.update(num_shards=3), "num_shards is 3"),
    (lambda m: m["acoustic"].pop("codebook_size"), "codebook_size"),
    (lambda m: m["shards"][0].update(file="x.npz"), "shard entry 0"),
    (lambda m: m.pop("totals"), "totals"),
])
def test_malformed_manifest(tmp_path, edit, message):
    manifest = _write_cache(tmp_path, [_utterances(0, 1), _utterances(1, 1)])
    edit(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenCacheError, match=f"manifest.json.*{message}"):
        TokenCache(tmp_path)


def test_missing_or_unparsable_manifest(tmp_path):
    with pytest.raises(TokenCacheError, match="no token-cache manifest"):
        TokenCache(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(TokenCacheError, match="not valid JSON"):
        TokenCache(tmp_path)


def _rewrite_shard(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


@pytest.mark.parametrize("changes, message", [
    ({"semantic_offsets": None}, "lacks arrays"),
    ({"semantic_offsets": np.array([0, 5, 1], np.int64)}, "semantic_offsets must rise"),
    ({"acoustic": np.zeros([4, Q], np.int32)}, "acoustic must be int16"),
    ({"seconds": np.zeros([2], np.float64)}, "seconds must be float32"),
    ({"semantic": np.full([12], K, np.int32),
      "semantic_offsets": np.array([0, 6, 12], np.int64)}, r"semantic ids outside \[0, 16\)"),
])
def test_malformed_shard(tmp_path, changes, message):
    _write_cache(tmp_path, [_utterances(0, 2)])
    _rewrite_shard(tmp_path / cache.shard_name(0, 1), **changes)
    with pytest.raises(TokenCacheError, match=f"shard-00000-of-00001.npz.*{message}"):
        list(TokenCache(tmp_path).utterances())


def test_truncated_shard(tmp_path):
    _write_cache(tmp_path, [_utterances(0, 2)])
    path = tmp_path / cache.shard_name(0, 1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TokenCacheError, match="not a readable npz shard"):
        list(TokenCache(tmp_path).utterances())
