"""The tokenize job: a tiny corpus through a random tiny codec and semantic tokenizer.

Utterances are 1.00-1.04 s long so every batch pads to the same bucket (one compiled program for
the whole module). Bad files: a corrupt header (skipped when listing lengths), a truncated FLAC
(skipped when decoding) and a clip shorter than one 40 ms frame.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from audiolm_jax import cli
from audiolm_jax.audio import load_audio
from audiolm_jax.codec import api
from audiolm_jax.codec.frozen import load_codec, soundstream_config_from_gin
from audiolm_jax.codec.soundstream import SoundStream
from audiolm_jax.semantic.tokenizer import bucketed_ids
from audiolm_jax.lm.layouts import AudioVocabulary
from audiolm_jax.semantic.tokenizer import SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig
from audiolm_jax.tokens import batching, cache, job
from audiolm_jax.tokens.cache import TokenCache, TokenCacheError
from audiolm_jax.tokens.models import FrozenTokenizers
from corpus_trees import tone, write_speech_tree
from fixtures_audio import truncate_file
from model_exports import export_model

CODEC_GIN = "include 'models/codec_tiny.gin'\n"   # Q = 4 levels of N = 32 codes
K = 8
W2V_BERT = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                         num_mlm_layers=2, subsample_channels=8, codebook_groups=2,
                         codebook_entries=16, codevector_dim=16, contrastive_dim=16,
                         num_distractors=10, dropout=0.0)
SPEECH = {"train": {("101", "7"): [1.0, 1.02, 1.04], ("102", "7"): [1.04, 1.0, 1.02]},
          "dev": {("201", "7"): [1.0]}}
BAD = {"train/103/7/103-7-0000.flac": "corrupt", "train/103/7/103-7-0001.flac": "corrupt",
       "train/103/7/103-7-0002.flac": "too_short"}
SHARDS, BATCH = 3, 4


def test_buckets_pad_by_at_least_a_frame_and_at_most_a_quarter():
    lengths = range(1, 16000 * 60, 997)
    buckets = [batching.bucket_length(n) for n in lengths]
    assert all(b % 640 == 0 and b >= n + 640 for n, b in zip(lengths, buckets))
    assert all(b - n <= 0.25 * n + 1280 for n, b in zip(lengths, buckets))
    assert len(set(buckets)) <= 4 * 12                    # ~4 shapes per octave up to a minute
    batches = batching.plan_batches([5, 1, 5, 3, 2], 2)
    assert batches == [[1, 4], [3, 0], [2]]               # by length, ties by index
    batch = batching.pad_batch([4, 1], [np.ones(700, np.float32)] * 2 + [np.ones(10)] * 3, 4)
    assert batch.wav.shape == (4, 1920) and batch.rows.tolist() == [4, 1, -1, -1]
    assert batch.lengths.tolist() == [10, 700, 1920, 1920] and batch.wav[0, 10:].sum() == 0


def test_one_bucket_per_octave_pads_to_powers_of_two_with_fewer_programs():
    lengths = range(1, 16000 * 60, 997)
    buckets = [batching.bucket_length(n, steps_per_octave=1) for n in lengths]
    for n, b in zip(lengths, buckets):
        frames = b // 640
        assert b % 640 == 0 and frames & (frames - 1) == 0        # a power of two of frames
        assert b >= n + 640 and b - n <= n + 1280                 # >= 1 frame, <= ~2x padding
    assert len(set(buckets)) < len({batching.bucket_length(n) for n in lengths})
    assert len(set(buckets)) <= 12                                # one shape per octave
    assert batching.bucket_length(16000, 1) == 32 * 640 and batching.bucket_length(16000) == 28 * 640
    batch = batching.pad_batch([0], [np.ones(16000, np.float32)], 2, steps_per_octave=1)
    assert batch.wav.shape == (2, 32 * 640)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="buckets per octave must be an integer >= 1"):
            batching.bucket_length(16000, bad)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """{corpus, codec, semantic}: a corpus tree, a codec export, a tokenizer directory."""
    root = tmp_path_factory.mktemp("world")
    export_model(SoundStream(soundstream_config_from_gin([(CODEC_GIN, "test")]), rngs=nnx.Rngs(0)),
                 root / "codec", CODEC_GIN)
    rng = np.random.default_rng(0)
    SemanticTokenizer(W2vBert(W2V_BERT, rngs=nnx.Rngs(1)), 2, rng.normal(size=32),
                      rng.uniform(0.5, 2, 32), rng.normal(size=(K, 32))).save(root / "semantic")
    write_speech_tree(root / "corpus", SPEECH)
    bad = root / "corpus/train/103/7"
    bad.mkdir(parents=True)
    (bad / "103-7-0000.flac").write_bytes(b"fLaC" + bytes(range(200)))
    sf.write(bad / "good.flac", tone(1.0, seed=9), 16000, subtype="PCM_16")
    truncate_file(bad / "good.flac", bad / "103-7-0001.flac", 0.5)
    (bad / "good.flac").unlink()
    sf.write(bad / "103-7-0002.flac", tone(0.02, seed=9), 16000, subtype="PCM_16")
    return {"corpus": root / "corpus", "codec": root / "codec", "semantic": root / "semantic"}


@pytest.fixture(scope="module")
def models(world):
    return FrozenTokenizers.load(world["codec"], world["semantic"])


def spec_for(world, out, **overrides):
    return job.JobSpec(corpus=str(world["corpus"]), split="train", codec=str(world["codec"]),
                       semantic=str(world["semantic"]), out=str(out),
                       **{"num_shards": SHARDS, "batch_size": BATCH, **overrides})


def cache_files(out):
    """{name: bytes} of every file of a cache directory (records, shards, manifest)."""
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())}


@pytest.fixture(scope="module")
def reference(world, models, tmp_path_factory):
    """An uninterrupted run: (out dir, summary, its files)."""
    out = tmp_path_factory.mktemp("reference") / "cache"
    summary = job.run_job(spec_for(world, out), models=models, log=None)
    return out, summary, cache_files(out)


def test_cache_holds_every_good_utterance_at_the_right_rates(world, reference):
    out, summary, _ = reference
    reader = TokenCache(out, verify=True)
    assert reader.vocabulary() == AudioVocabulary(K, 4, 32) and reader.num_shards == SHARDS
    utterances = list(reader.utterances())
    good = sorted(f"{s}-{b}-{k:04d}" for (s, b), d in SPEECH["train"].items() for k in range(len(d)))
    assert sorted(u.id for u in utterances) == good and reader.num_utterances == 6
    for u in utterances:
        speaker, book, k = u.id.split("-")
        samples = round(SPEECH["train"][(speaker, book)][int(k)] * 16000)
        assert u.semantic.shape == (samples // 640,) and u.acoustic.shape == (samples // 320, 4)
        assert 0 <= u.semantic.min() and u.semantic.max() < K
        assert 0 <= u.acoustic.min() and u.acoustic.max() < 32
        assert u.seconds == pytest.approx(samples / 16000)
    assert len({u.semantic.tobytes() for u in utterances}) > 1      # really the audio's tokens
    manifest = reader.manifest
    assert {s["path"]: s["reason"].split(":")[0] for s in manifest["skipped"]} == BAD
    assert str(world["corpus"]) not in json.dumps(manifest)          # no absolute paths
    assert manifest["totals"] == {"utterances": 6, "skipped": 3,
                                  "seconds": pytest.approx(2 * (1.0 + 1.02 + 1.04))}
    assert [s["utterances"] for s in manifest["shards"]] == [2, 2, 2]  # 9 listed, dealt round-robin
    assert (summary["utterances"], summary["skipped"], summary["shards_written"]) == (6, 3, 3)


def test_tokens_equal_the_models_run_one_utterance_at_a_time(world, reference):
    """Batching, padding and device sharding change nothing: the reference APIs agree."""
    out, _, _ = reference
    first = next(TokenCache(out).utterances())
    speaker, book, _ = first.id.split("-")
    wav = load_audio(world["corpus"] / "train" / speaker / book / f"{first.id}.flac")
    tokenizer = SemanticTokenizer.load(world["semantic"])
    np.testing.assert_array_equal(first.semantic, bucketed_ids(tokenizer, wav, 640 * 28))
    codec = load_codec(world["codec"])
    np.testing.assert_array_equal(first.acoustic, api.encode(codec, wav)[:len(wav) // 320])


def test_programs_compiled_ahead_equal_the_jit_path(world):
    """`compile` (the job's threaded ahead-of-time compiles) changes no token, compiles each
    shape once, and refuses a length that is not a whole number of 40 ms frames."""
    fresh = FrozenTokenizers.load(world["codec"], world["semantic"])
    rng = np.random.default_rng(3)
    wav = rng.normal(0, 0.1, (BATCH, 640 * 5)).astype(np.float32)
    lengths = np.array([640 * 5, 2000, 3000, 640], np.int32)
    jitted = fresh(wav, lengths)
    assert fresh.compile(BATCH, [640 * 5, 640 * 5, 640 * 6], threads=2) == 2
    assert fresh.compile(BATCH, [640 * 6]) == 0
    ahead = fresh(wav, lengths)
    assert (BATCH, 640 * 5) in fresh._compiled          # the ahead-of-time program ran
    for a, b in zip(jitted, ahead):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="multiples of 640"):
        fresh.compile(BATCH, [1000])


def test_rerun_is_a_no_op(world, models, reference):
    out, _, files = reference
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = job.run_job(spec_for(world, out), models=models, log=None)
    assert summary["shards_written"] == 0 and summary["utterances"] == 6
    assert cache_files(out) == files
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_interrupted_run_then_rerun_equals_an_uninterrupted_run(world, models, reference,
                                                                 tmp_path, monkeypatch):
    _, _, files = reference
    out = tmp_path / "cache"
    real_write = cache.atomic_write_bytes

    def dies_before_the_second_record(path, data):
        if path.endswith(job.ShardPlan(1, SHARDS, ()).record_file):
            raise KeyboardInterrupt("killed")   # shard 1's npz is in place, its record is not
        real_write(path, data)

    monkeypatch.setattr(cache, "atomic_write_bytes", dies_before_the_second_record)
    with pytest.raises(KeyboardInterrupt):
        job.run_job(spec_for(world, out), models=models, log=None)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists() and (out / cache.shard_name(1, SHARDS)).exists()
    (out / f".{cache.shard_name(2, SHARDS)}.tmp-4242").write_bytes(b"half a shard")  # killed mid-write
    with pytest.raises(TokenCacheError, match="no token-cache manifest"):
        TokenCache(out)

    summary = job.run_job(spec_for(world, out), models=models, log=None)
    assert summary["shards_written"] == 2          # shard 0 was kept
    assert cache_files(out) == files               # manifest, records and shards, byte for byte


def test_corrupt_or_stale_shards_are_redone(world, models, reference, tmp_path):
    source, _, files = reference
    out = tmp_path / "cache"
    shutil.copytree(source, out)
    shard = out / cache.shard_name(0, SHARDS)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(TokenCacheError, match="sha256"):
        TokenCache(out, verify=True)
    record = out / job.ShardPlan(2, SHARDS, ()).record_file
    record.write_text(record.read_text().replace('"inputs_sha256": "', '"inputs_sha256": "0'))
    summary = job.run_job(spec_for(world, out), models=models, log=None)
    assert summary["shards_written"] == 2 and cache_files(out) == files


def test_buckets_per_octave_changes_the_padding_not_the_cache(world, models, reference,
                                                               tmp_path):
    source, _, files = reference                   # made with 4 buckets per octave (28 frames)
    out = tmp_path / "cache"
    summary = job.run_job(spec_for(world, out, buckets_per_octave=1), models=models, log=None)
    assert summary["shards_written"] == SHARDS     # padded to 32 frames, same bytes
    assert cache_files(out) == files
    shutil.rmtree(out)
    shutil.copytree(source, out)                   # a rerun with another value fills the gaps
    (out / cache.shard_name(1, SHARDS)).unlink()
    (out / "manifest.json").unlink()
    summary = job.run_job(spec_for(world, out, buckets_per_octave=1), models=models, log=None)
    assert summary["shards_written"] == 1 and cache_files(out) == files
    with pytest.raises(job.TokenizeJobError, match="integer >= 1.*--buckets-per-octave"):
        job.run_job(spec_for(world, out, buckets_per_octave=0), models=models, log=None)


def test_out_dir_of_another_cache_is_refused(world, models, reference):
    out, _, _ = reference
    with pytest.raises(job.TokenizeJobError, match="another cache.*choose another --out"):
        job.run_job(spec_for(world, out, num_shards=2), models=models, log=None)


def test_cli_runs_the_job_and_summarises(world, reference, tmp_path, capsys):
    _, _, files = reference
    out = tmp_path / "cache"
    status = cli.main(["tokenize", "--corpus", str(world["corpus"]), "--codec", str(world["codec"]),
                       "--semantic", str(world["semantic"]), "--out", str(out),
                       "--shards", str(SHARDS), "--batch-size", str(BATCH)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 0 and cache_files(out) == files
    assert lines[-1].startswith("tokenize: 6 utterances") and "3 skipped" in lines[-1]
    assert "h of audio per hour" in lines[-1] and len(lines) == 1 + SHARDS + 1
    status = cli.main(["tokenize", "--corpus", str(world["corpus"]), "--split", "nope",
                       "--codec", str(world["codec"]), "--semantic", str(world["semantic"]),
                       "--out", str(tmp_path / "x")])
    assert status == 1 and "split(s) ['nope'] not found" in capsys.readouterr().err
    status = cli.main(["tokenize", "--corpus", str(world["corpus"]), "--codec", str(world["codec"]),
                       "--semantic", str(world["semantic"]), "--out", str(tmp_path / "y"),
                       "--buckets-per-octave", "0"])
    assert status == 1 and "--buckets-per-octave" in capsys.readouterr().err


@pytest.mark.needs_tf
def test_beam_runner_writes_the_same_cache_as_the_local_runner(world, models, reference,
                                                               tmp_path):
    pytest.importorskip("apache_beam")
    _, _, files = reference
    out = tmp_path / "cache"
    summary = job.run_job(spec_for(world, out), runner="beam", log=None)
    assert summary["shards_written"] == SHARDS
    assert summary["hours_written"] == pytest.approx(summary["hours"], abs=1e-3)
    assert cache_files(out) == files


KILLED_RUN = """
import os, signal, sys
from audiolm_jax.tokens import cache
from audiolm_jax import cli
real_replace = os.replace
def replace(src, dst):
    if dst.endswith(cache.shard_name(1, {shards})):   # SIGKILL between temp write and rename
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
cache.os.replace = replace
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkilled_run_then_rerun_equals_an_uninterrupted_run(world, reference, tmp_path):
    _, _, files = reference
    out = tmp_path / "cache"
    argv = ["tokenize", "--corpus", str(world["corpus"]), "--codec", str(world["codec"]),
            "--semantic", str(world["semantic"]), "--out", str(out), "--shards", str(SHARDS),
            "--batch-size", str(BATCH)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.format(shards=SHARDS), *argv],
                            env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert any(p.name.startswith(".shard-00001") for p in out.iterdir())  # the temp file
    assert cli.main(argv) == 0
    assert cache_files(out) == files
