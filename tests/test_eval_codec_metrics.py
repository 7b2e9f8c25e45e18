"""Codec metrics on known cases, the codec restore used by the benchmarks, and tiny end-to-end
runs of benchmarks/codec_quality.py and benchmarks/codec_speed.py."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from audiolm_jax.audio import save_audio
from audiolm_jax.codec import SoundStream, SoundStreamConfig
from audiolm_jax.eval import codec_metrics as cm
from test_opus import speech_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import codec_quality  # noqa: E402
import codec_speed  # noqa: E402

# Tiny widths, but the paper's codebooks: Q=12 x N=1024 at 50 Hz gives the real 1.5-6 kbps rates.
TINY_GIN = ["--gin_file", "models/codec_tiny", "--gin.SoundStreamConfig.num_quantizers=12",
            "--gin.SoundStreamConfig.codebook_size=1024"]
TINY = SoundStreamConfig(channels=4, embedding_dim=16, num_quantizers=12, codebook_size=1024)


@pytest.fixture(scope="module")
def pair():
    ref = speech_like(3.0)
    noisy = (ref + 0.02 * np.random.default_rng(1).standard_normal(ref.size)).astype(np.float32)
    return ref, noisy


def test_identical_signals_score_best_and_noise_scores_lower(pair):
    ref, noisy = pair
    same, failures = cm.measure(ref, ref.copy())
    assert failures == {}
    assert same["pesq"] > 4.5 and same["stoi"] > 0.99 and same["visqol"] > 4.9
    assert same["mel_distance"] == 0.0
    worse, failures = cm.measure(ref, noisy)
    assert failures == {}
    assert worse["pesq"] < same["pesq"] - 1.0
    assert worse["stoi"] < same["stoi"] - 0.05
    assert worse["visqol"] < same["visqol"] - 1.0
    assert worse["mel_distance"] > 0.5


def test_more_noise_is_further_in_mel_distance(pair):
    ref, noisy = pair
    louder = ref + 5 * (noisy - ref)
    assert cm.mel_distance(ref, louder) > cm.mel_distance(ref, noisy)
    assert cm.log_mel(ref).shape == (1 + ref.size // 256, 80)


def test_unscorable_pairs_are_reported_per_metric_not_raised(pair):
    ref, _ = pair
    scores, failures = cm.measure(ref, np.zeros_like(ref))
    assert set(failures) == {"visqol", "pesq"} and "silent" in failures["pesq"]
    assert scores["mel_distance"] > 0
    scores, failures = cm.measure(ref[:2000], ref[:2000], metrics=("pesq", "stoi"))
    assert scores == {}
    assert "1/4 of a second" in failures["pesq"] and "too short" in failures["stoi"]


def test_bad_inputs_raise_with_the_fix(pair, monkeypatch):
    ref, _ = pair
    with pytest.raises(ValueError, match="trim or zero-pad"):
        cm.pesq_wb(ref, ref[:-1])
    with pytest.raises(ValueError, match="needs 16000 Hz"):
        cm.visqol_speech(ref, ref, sample_rate=8000)
    with pytest.raises(ValueError, match="int16 PCM"):
        cm.stoi((ref * 32767).astype(np.int16), ref)
    with pytest.raises(ValueError, match="unknown metric"):
        cm.measure(ref, ref, metrics=("snr",))
    monkeypatch.setitem(sys.modules, "pystoi", None)  # as if not installed
    with pytest.raises(cm.MetricUnavailable, match="pip install pystoi"):
        cm.stoi(ref, ref)



def test_quantizers_for_maps_bitrates_to_levels():
    model = nnx.eval_shape(lambda: SoundStream(TINY, rngs=nnx.Rngs(0)))
    assert [codec_quality.quantizers_for(model, k) for k in (1.5, 2, 3, 6)] == [3, 4, 6, 12]
    with pytest.raises(ValueError, match="choose from 0.5, 1, 1.5"):
        codec_quality.quantizers_for(model, 2.2)


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    values = np.random.default_rng(0).normal(3.0, 1.0, 40)
    lo, hi = codec_quality.bootstrap_ci(values, seed=5)
    assert lo < values.mean() < hi and 0.3 < hi - lo < 1.0
    assert codec_quality.bootstrap_ci(values, seed=5) == (lo, hi)
    assert codec_quality.bootstrap_ci([2.0]) == (2.0, 2.0)


def synthetic_corpus(root, seconds=(2.5, 3.0)):
    """Two utterances by two speakers in the Libri-Light layout."""
    for i, s in enumerate(seconds):
        speaker = f"voice{i}"
        save_audio(root / "heldout_voices" / speaker / "book" / f"{speaker}-book-0000.flac",
                   speech_like(s, seed=i))
    return root


@pytest.mark.needs_tools
@pytest.mark.skipif(shutil.which("opusenc") is None, reason="opus-tools not installed")
def test_quality_benchmark_end_to_end(tmp_path):
    corpus = synthetic_corpus(tmp_path / "corpus")
    out = tmp_path / "results" / "codec_quality.json"
    result = codec_quality.main([
        "--corpus", str(corpus), "--split", "heldout_voices", "--random-init", *TINY_GIN,
        "--num-utterances", "40", "--codec-kbps", "6", "--opus-kbps", "6",
        "--opus-modes", "vbr", "hard-cbr", "--workers", "2", "--num-examples", "1",
        "--examples-dir", str(tmp_path / "examples"), "--out", str(out)])
    saved = json.loads(out.read_text())
    for metric in ("visqol", "pesq"):
        assert set(saved[metric]) == {"codec_6kbps", "opus_6kbps", "opus_hard-cbr_6kbps"}
        assert saved[metric]["opus_6kbps"] > 1.0  # Opus at 6 kbps is far from the floor
    opus6 = saved["conditions"]["opus_hard-cbr_6kbps"]
    assert opus6["payload_kbps"]["mean"] == pytest.approx(6.0, rel=0.05)
    assert opus6["real_kbps"]["mean"] > opus6["payload_kbps"]["mean"]
    assert saved["conditions"]["codec_6kbps"]["num_quantizers"] == 12
    ci = opus6["metrics"]["stoi"]["ci95"]
    assert ci[0] <= opus6["metrics"]["stoi"]["mean"] <= ci[1]
    comparison = saved["comparisons"]["codec_6kbps_vs_opus_6kbps"]
    assert comparison["codec_better_on_visqol_and_pesq"] in (True, False)  # an untrained codec
    assert saved["corpus"]["utterances_used"] == 2 and saved["utterances"] == [
        "voice0-book-0000", "voice1-book-0000"]
    assert saved["model"]["random_init"] and saved["model"]["config"]["codebook_size"] == 1024
    assert saved["command"].startswith("python ") and "--random-init" in saved["command"]
    assert len(saved["per_utterance"]["pesq"]["codec_6kbps"]) == 2
    example = tmp_path / "examples" / "voice0-book-0000"
    assert sorted(os.listdir(example)) == ["codec_6kbps.wav", "opus_6kbps.wav",
                                           "opus_hard-cbr_6kbps.wav", "original.wav"]
    assert result["visqol"] == saved["visqol"]


def test_reconstructions_only_writes_each_rate_as_the_codec_decodes_it(tmp_path):
    """--reconstructions-dir: a GPU machine without the scorers writes what
    score_reconstructions.py later matches to the corpus (no Opus, no metrics needed)."""
    import score_reconstructions as sr
    corpus = synthetic_corpus(tmp_path / "corpus")
    out_dir = tmp_path / "recon"
    written = codec_quality.main([
        "--corpus", str(corpus), "--random-init", *TINY_GIN, "--codec-kbps", "1.5", "6",
        "--reconstructions-dir", str(out_dir), "--out", str(tmp_path / "unused.json")])
    assert written == {"codec_1.5kbps": 2, "codec_6kbps": 2}
    assert not (tmp_path / "unused.json").exists()
    model, _ = codec_quality.build_codec(["models/codec_tiny"], [b[len("--gin."):] for b in TINY_GIN[2:]],
                                         checkpoint=None,
                                         step=None, seed=0)
    pairs = sr.matched_pairs(str(corpus), str(out_dir / "codec_6kbps"))
    assert [uid for uid, _, _ in pairs] == ["voice0-book-0000", "voice1-book-0000"]
    for uid, ref, deg in pairs:
        expect = codec_quality.codec_reconstructions(model, [ref], [12])[12][0]
        assert deg.shape == ref.shape
        # 16-bit WAV: rounding, and clipping of the untrained codec's loud samples
        np.testing.assert_allclose(deg, np.clip(expect, -1, 1), atol=2e-4)
    low = sr.matched_pairs(str(corpus), str(out_dir / "codec_1.5kbps"))
    assert not np.allclose(low[0][2], pairs[0][2], atol=1e-3)   # 3 levels, not 12


def test_speed_benchmark_end_to_end_keeps_one_run_per_backend(tmp_path):
    out = tmp_path / "codec_speed.json"
    result = codec_speed.main(["--random-init", *TINY_GIN, "--seconds", "0.5",
                               "--batch-sizes", "1", "2", "--programs", "encode_decode",
                               "--warmup", "1", "--repeats", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    run = saved["runs"]["cpu"]
    assert set(saved["rtf"]) == {"cpu_batch_1", "cpu_batch_2"} and saved["rtf"]["cpu_batch_1"] > 0
    timing = run["batches"]["2"]["encode_decode"]
    assert timing["rtf"] == pytest.approx(2 * 0.5 / timing["median_s"])
    assert set(run["batches"]["1"]) == {"encode_decode"}
    assert run["num_quantizers"] == 12 and run["kbps"] == 6.0
    assert saved["target"]["met"] is None  # no GPU run yet
    gpu = dict(run, backend="gpu", rtf={"batch_1": 300.0, "batch_64": 2500.0})
    merged = codec_speed.merge_runs(saved, gpu)
    assert set(merged["runs"]) == {"cpu", "gpu"} and merged["target"]["met"] is True
    assert merged["rtf"]["gpu_batch_64"] == 2500.0 and result["runs"]["cpu"]["rtf"]


def test_speed_benchmark_imports_neither_tensorflow_nor_librosa():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import codec_speed; "
            "bad = [m for m in ('tensorflow', 'librosa', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.needs_tools
@pytest.mark.skipif(shutil.which("opusenc") is None, reason="opus-tools not installed")
def test_score_reconstructions_matches_files_to_originals_and_orders_by_quality(tmp_path):
    import score_reconstructions as sr
    corpus = synthetic_corpus(tmp_path / "corpus")
    rng = np.random.default_rng(0)
    for level in ("clean", "noisy"):
        (tmp_path / level).mkdir()
        for i in range(2):
            ref = speech_like(2.0, seed=i)[:16000]   # sources may have been cut: 1 s of 2 s
            noise = {"clean": 0.001, "noisy": 0.05}[level] * rng.standard_normal(ref.size)
            save_audio(tmp_path / level / f"voice{i}-book-0000.wav", ref + noise.astype(np.float32))
    scores = {level: sr.score(sr.matched_pairs(str(corpus), str(tmp_path / level)), 6.0,
                              ("stoi", "mel_distance"), workers=0) for level in ("clean", "noisy")}
    assert scores["clean"]["utterances"] == ["voice0-book-0000", "voice1-book-0000"]
    assert scores["clean"]["stoi"]["codec"]["mean"] > scores["noisy"]["stoi"]["codec"]["mean"]
    assert scores["clean"]["mel_distance"]["codec"]["mean"] < 0.2
    diff = scores["clean"]["codec_minus_opus"]["opus_6kbps"]["mel_distance"]
    assert diff["n"] == 2 and diff["mean"] < 0   # near-clean audio is closer than Opus at 6 kbps
    (tmp_path / "clean" / "stranger-book-0000.wav").write_bytes(
        (tmp_path / "clean" / "voice0-book-0000.wav").read_bytes())
    with pytest.raises(SystemExit, match="stranger-book-0000.wav.*are not utterances"):
        sr.matched_pairs(str(corpus), str(tmp_path / "clean"))


def test_a_pesq_crash_is_a_metric_error_and_the_next_pair_still_scores(pair):
    """The pesq C library segfaults on 200 s of this tone (seen; 100 s scores): the crash stays
    in pesq_wb's child process."""
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 200) / 16000
    ref = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
           + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    deg = ref + 0.01 * rng.standard_normal(t.size).astype(np.float32)
    with pytest.raises(cm.MetricError,
                       match=r"crashed in the pesq C library \(exit code -11\) on 200.0 s"):
        cm.pesq_wb(ref, deg)
    short, noisy = pair
    assert cm.pesq_wb(short, short) > 4.5
