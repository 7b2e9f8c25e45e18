"""benchmarks/collect_run.sh: packs a detached run's logs and results (never its bulky files),
exits 0 when the run is done, 3 when the time limit came first, 4 when the run died;
benchmarks/device_chain.sh runs the pipeline from private copies; the scripts pass shellcheck."""
import os
import shutil
import subprocess
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "collect_run.sh")
CHAIN_SCRIPT = os.path.join(ROOT, "benchmarks", "device_chain.sh")
AUTOTUNE_SCRIPT = os.path.join(ROOT, "benchmarks", "autotune_cache.sh")
AUTOTUNE_DIR = "xla_gpu_per_fusion_autotune_cache_dir"   # JAX's name, under the cache folder


def _run(work, out, limit):
    return subprocess.run(["bash", SCRIPT, str(work), str(out), str(limit)], capture_output=True,
                          text=True, timeout=60)


def test_collects_logs_and_results_but_not_audio_or_caches(tmp_path):
    work = tmp_path / "w"
    (work / "logs").mkdir(parents=True)
    (work / "results").mkdir()
    (work / "logs" / "pipeline.log").write_text("[+1s] start\n[+9s] DONE\n")
    (work / "results" / "semantic.json").write_text("{}")
    (work / "results" / "big.npz").write_bytes(b"x" * 100)
    (work / "logs" / "sample.wav").write_bytes(b"RIFF")
    (work / "eval_audio_flac.tar").write_bytes(b"tar")
    (work / "DONE").touch()
    started = time.monotonic()
    result = _run(work, tmp_path / "out", 30)
    assert result.returncode == 0 and time.monotonic() - started < 20, result.stderr
    assert "DONE" in result.stdout
    with tarfile.open(tmp_path / "out" / "run.tgz") as tar:
        names = set(tar.getnames())
    assert {"logs/pipeline.log", "results/semantic.json"} <= names
    assert not any(n.endswith((".npz", ".wav")) for n in names)
    assert (tmp_path / "out" / "pipeline.log").read_text().endswith("DONE\n")
    assert (tmp_path / "out" / "eval_audio_flac.tar.part00").read_bytes() == b"tar"


def test_audio_over_the_device_file_limit_comes_back_in_parts(tmp_path):
    """The device tool returns files of at most 16 MiB: a larger tar is split, and the parts
    rejoin to it; a second collection replaces the parts of the first."""
    work = tmp_path / "w"
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "pipeline.log").write_text("[+9s] DONE\n")
    (work / "DONE").touch()
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval_audio_flac.tar.part07").write_bytes(b"stale")
    audio = bytes(range(256)) * (17 * 4096)                       # 17 MiB
    (work / "eval_audio_flac.tar").write_bytes(audio)
    assert _run(work, out, 30).returncode == 0
    parts = sorted(out.glob("eval_audio_flac.tar.part*"))
    assert [p.name[-2:] for p in parts] == ["00", "01"]
    assert all(p.stat().st_size <= 15 * 2 ** 20 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == audio


def test_returns_3_when_the_run_is_still_going(tmp_path):
    work = tmp_path / "w"
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "pipeline.log").write_text("[+1s] start\n")
    (work / "eval_audio_flac.tar.tmp-7").write_bytes(b"half-written")   # pack_audio at work
    result = _run(work, tmp_path / "out", 1)
    assert result.returncode == 3
    assert (tmp_path / "out" / "run.tgz").exists()
    assert not list((tmp_path / "out").glob("eval_audio*"))
    (work / "eval_audio_flac.tar").write_bytes(b"tar")          # renamed into place: complete
    assert _run(work, tmp_path / "out", 1).returncode == 3
    assert (tmp_path / "out" / "eval_audio_flac.tar.part00").read_bytes() == b"tar"


def test_returns_4_at_once_when_the_run_died_without_done(tmp_path):
    work = tmp_path / "w"
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "pipeline.log").write_text("[+1s] start\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (work / "pipeline.pid").write_text(f"{dead.pid}\n")
    started = time.monotonic()
    result = _run(work, tmp_path / "out", 30)
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 10 and "ended without writing" in result.stderr
    assert (tmp_path / "out" / "run.tgz").exists()


# A stand-in pipeline: records where it ran and what it was handed, then finishes.
FAKE_PIPELINE = """#!/bin/bash
mkdir -p $WORK/logs $WORK/results; echo $$ > $WORK/pipeline.pid
printf '%s\\n' "$PWD" "$CORPUS" "$PAIRS" "$PYTHONPATH" "$MODE" "$AUTOTUNE" > $WORK/results/env.txt
ls $CORPUS > $WORK/results/corpus.txt
echo "[+0s] DONE" > $WORK/logs/pipeline.log; touch $WORK/DONE
"""


def _fake_snapshot(tmp_path):
    snap = tmp_path / "snap"
    (snap / "benchmarks").mkdir(parents=True)
    (snap / "benchmarks" / "small_world_pipeline.sh").write_text(FAKE_PIPELINE)
    shutil.copy(SCRIPT, snap / "benchmarks" / "collect_run.sh")
    shutil.copy(AUTOTUNE_SCRIPT, snap / "benchmarks" / "autotune_cache.sh")
    (tmp_path / "corpus" / "train").mkdir(parents=True)
    return snap


def test_device_chain_runs_the_pipeline_from_private_copies(tmp_path):
    snap = _fake_snapshot(tmp_path)
    chain, work = tmp_path / "chain", tmp_path / "w"
    env = dict(os.environ, CHAIN=str(chain), WORK=str(work), MODE="cpu")
    result = subprocess.run(["bash", CHAIN_SCRIPT, str(snap), str(tmp_path / "corpus"), "none",
                             "none", str(tmp_path / "out"), "30"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    cwd, corpus, pairs, pythonpath, mode = (work / "results" / "env.txt").read_text().split("\n")[:5]
    assert cwd == str(chain / "snap") and corpus == str(chain / "corpus")
    assert pairs == str(chain / "pairs") and pythonpath.split(":") == [str(chain / "site"), cwd]
    assert mode == "cpu" and (work / "results" / "corpus.txt").read_text() == "train\n"
    with tarfile.open(tmp_path / "out" / "run.tgz") as tar:
        assert "results/env.txt" in tar.getnames()
    assert (work / "results" / "env.txt").read_text().split("\n")[5] == ""   # no AUTOTUNE given


def test_autotuning_results_travel_from_machine_to_machine(tmp_path):
    """AUTOTUNE's entries reach the run's compilation cache through a private copy (the device
    tool may replace the checkout mid-run), and collect_run returns them with the run's new ones."""
    seed = tmp_path / "carry_autotune"
    (seed / "ab").mkdir(parents=True)
    (seed / "ab" / "old.textproto").write_text("old")
    snap = _fake_snapshot(tmp_path)
    shutil.copy(os.path.join(ROOT, "benchmarks", "chain_lib.sh"), snap / "benchmarks")
    # The stand-in pipeline sets up its cache as the chains do, then "compiles" a new entry.
    (snap / "benchmarks" / "small_world_pipeline.sh").write_text(
        '#!/bin/bash\nW=$WORK; . "$(dirname "$0")/chain_lib.sh"; chain_begin; chain_options\n'
        'echo new > "$(autotune_dir)/new.textproto"; log DONE; touch $W/DONE\n')
    chain, work = tmp_path / "chain", tmp_path / "w"
    env = dict(os.environ, CHAIN=str(chain), WORK=str(work), MODE="gpu", AUTOTUNE=str(seed))
    result = subprocess.run(["bash", CHAIN_SCRIPT, str(snap), str(tmp_path / "corpus"), "none",
                             "none", str(tmp_path / "out"), "30"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (chain / "autotune" / "ab" / "old.textproto").read_text() == "old"
    cache = work / "jax_cache" / AUTOTUNE_DIR
    assert sorted(p.name for p in cache.rglob("*.textproto")) == ["new.textproto", "old.textproto"]
    with tarfile.open(tmp_path / "out" / "autotune.tgz") as tar:
        names = {os.path.normpath(n) for n in tar.getnames()}
    assert {"ab/old.textproto", "new.textproto"} <= names


def test_autotune_begin_without_a_seed_and_end_without_a_cache(tmp_path):
    script = (f". {AUTOTUNE_SCRIPT}; "
              f"JAX_COMPILATION_CACHE_DIR={tmp_path}/c; autotune_begin {tmp_path}/missing; "
              f'ls -A "$(autotune_dir)" | wc -l; JAX_COMPILATION_CACHE_DIR={tmp_path}/none '
              f"autotune_end {tmp_path}/o.tgz; echo rc=$?")
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["0", "rc=0"] and (tmp_path / "c" / AUTOTUNE_DIR).is_dir()
    assert not (tmp_path / "o.tgz").exists()


def test_device_chain_runs_the_pipeline_named_by_PIPELINE(tmp_path):
    snap = _fake_snapshot(tmp_path)
    (snap / "benchmarks" / "piano_pipeline.sh").write_text(
        FAKE_PIPELINE.replace("$MODE", "piano-$MODE"))
    chain, work = tmp_path / "chain", tmp_path / "w"
    env = dict(os.environ, CHAIN=str(chain), WORK=str(work), MODE="cpu",
               PIPELINE="benchmarks/piano_pipeline.sh")
    result = subprocess.run(["bash", CHAIN_SCRIPT, str(snap), str(tmp_path / "corpus"), "none",
                             "none", str(tmp_path / "out"), "30"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / "results" / "env.txt").read_text().split("\n")[4] == "piano-cpu"
    env["PIPELINE"] = "benchmarks/nope.sh"
    result = subprocess.run(["bash", CHAIN_SCRIPT, str(snap), str(tmp_path / "corpus"), "none",
                             "none", str(tmp_path / "out"), "5"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "has no benchmarks/nope.sh" in result.stderr


def test_device_chain_refuses_a_missing_corpus(tmp_path):
    snap = _fake_snapshot(tmp_path)
    result = subprocess.run(["bash", CHAIN_SCRIPT, str(snap), str(tmp_path / "nope"), "none",
                             "none", str(tmp_path / "out"), "5"],
                            env=dict(os.environ, CHAIN=str(tmp_path / "chain"),
                                     WORK=str(tmp_path / "w")),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "nope is not a folder" in result.stderr


def test_pack_audio_writes_lossless_flac_named_by_folder(tmp_path):
    import sys

    import numpy as np
    import soundfile as sf
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from pack_audio import pack

    wav = (np.random.default_rng(0).standard_normal(8000) * 3000).astype(np.int16)
    (tmp_path / "gen" / "a").mkdir(parents=True)
    sf.write(tmp_path / "gen" / "a" / "x.wav", wav, 16000, subtype="PCM_16")
    (tmp_path / "gen" / "a" / "x.png").write_bytes(b"png")
    count, _ = pack(str(tmp_path / "o.tar"), [str(tmp_path / "gen"), str(tmp_path / "missing")])
    assert count == 1 and sorted(os.listdir(tmp_path)) == ["gen", "o.tar"]   # no temp left
    with tarfile.open(tmp_path / "o.tar") as tar:
        assert tar.getnames() == ["gen/a/x.flac"]
        tar.extractall(tmp_path / "x")
    back, rate = sf.read(tmp_path / "x" / "gen" / "a" / "x.flac", dtype="int16")
    assert rate == 16000 and np.array_equal(back, wav)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_benchmark_shell_scripts_pass_shellcheck():
    scripts = sorted(os.path.join(ROOT, "benchmarks", n) for n in os.listdir(
        os.path.join(ROOT, "benchmarks")) if n.endswith(".sh"))
    assert len(scripts) >= 2
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_chain_options_keep_the_callers_trainer_options(tmp_path):
    """CODEC / W2V from the environment reach the trainers in both modes (how a device call
    passes e.g. the codec's conv_policy to a chain)."""
    script = (f". {ROOT}/benchmarks/chain_lib.sh; W={tmp_path}; chain_options; "
              'echo "$CODEC|$W2V"')
    env = dict(os.environ, CODEC="--gin.X.a=1", W2V="--gin.Y.b=2")
    for mode in ("gpu", "cpu"):
        out = subprocess.run(["bash", "-c", script], env=dict(env, MODE=mode), check=True,
                             capture_output=True, text=True).stdout.strip()
        codec, w2v = out.split("|")
        assert codec.split()[-1] == "--gin.X.a=1" and w2v.split()[-1] == "--gin.Y.b=2"
        assert ("--gin.train.num_train_steps=2" in codec) == (mode == "cpu")
