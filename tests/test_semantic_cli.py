"""`audiolm-jax semantic fit-kmeans` and `tokenize`: outputs, consistency and error messages.

The checkpoint is written the way the trainer writes one (Checkpointer + operative gin config) from
a freshly initialised tiny w2v-BERT: these tests are about the commands, not about training
(tests/test_semantic_training.py fits from a trained run).
"""
import dataclasses
import os
import json

import gin
import jax
import numpy as np
import pytest
import soundfile as sf

from audiolm_jax import cli
from audiolm_jax.semantic.objective import W2vBertObjective
from audiolm_jax.semantic.tokenizer import SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBertConfig
from audiolm_jax.training.checkpoint import Checkpointer, write_operative_config
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import DEFAULT_RULES
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.step import StepOptions
from corpus_trees import tone, write_speech_tree

TINY = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                     num_mlm_layers=1, subsample_channels=8, codebook_entries=16,
                     codevector_dim=16, contrastive_dim=16, num_distractors=10, dropout=0.0)
K = 4
TREE = {"train": {("101", "7"): [1.3, 0.4, 2.0], ("102", "7"): [0.9, 0.9]}}
FRAMES = sum(round(s * 16000) // 640 for clips in TREE["train"].values() for s in clips)  # 136
FIT_FLAGS = ["--gin.KMeansFitConfig.crop_seconds=2.0", "--gin.KMeansFitConfig.batch_size=2",
             "--gin.KMeansFitConfig.iters=3"]


def semantic(*args: str) -> int:
    try:
        return cli.main(["semantic", *map(str, args)])
    finally:
        gin.clear_config()  # fit-kmeans parses (and locks) gin flags


def fails(*args: str) -> str:
    """The message of a command that must fail."""
    with pytest.raises(SystemExit) as e:
        semantic(*args)
    return str(e.value.code)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("semantic_cli")
    corpus, run = tmp / "corpus", tmp / "run" / "checkpoints"
    write_speech_tree(corpus, TREE)
    device = jax.devices()[:1]
    program = build_program(W2vBertObjective(TINY), make_mesh(MeshConfig(1, 1, 1), device),
                            DEFAULT_RULES, StepOptions(), num_train_steps=1)
    text = "\n".join(f"W2vBertConfig.{k} = {v!r}" for k, v in dataclasses.asdict(TINY).items())
    checkpointer = Checkpointer(run)
    checkpointer.save(3, program.init(seed_rng(0)), config_text=text)
    checkpointer.wait()
    checkpointer.close()
    write_operative_config(run, text)
    tokenizer = tmp / "tokenizer"
    assert semantic("fit-kmeans", "--checkpoint", run.parent, "--corpus", corpus, "--layer", 1,
                    "--clusters", K, "--out", tokenizer, *FIT_FLAGS) == 0
    return tmp, corpus, run.parent, tokenizer


def test_fit_kmeans_writes_a_tokenizer_and_its_report(world):
    _, _, run, tokenizer = world
    tok = SemanticTokenizer.load(tokenizer)
    assert tok.num_clusters == K and tok.layer == 1 and tok.config == TINY
    report = json.loads((tokenizer / "fit.json").read_text())
    assert report["step"] == 3 and report["checkpoint"] == str(run / "checkpoints")
    # 5 crops, the last batch padded with an empty row that adds no frame.
    assert report["audio"]["crops"] == 5 and report["audio"]["frames"] == FRAMES
    assert report["clustered_frames"] == FRAMES and report["config"]["crop_seconds"] == 2.0


def test_tokenize_a_wav(world):
    tmp, _, _, tokenizer = world
    wav = tone(1.3, seed=7)
    sf.write(tmp / "one.wav", wav, 16000, subtype="FLOAT")
    assert semantic("tokenize", "--tokenizer", tokenizer, tmp / "one.wav", "--out", tmp / "one.npy") == 0
    ids = np.load(tmp / "one.npy", allow_pickle=False)
    assert ids.dtype == np.int32 and ids.shape == (len(wav) // 640,) == (32,)
    assert ids.min() >= 0 and ids.max() < K
    meta = json.loads((tmp / "one.json").read_text())
    assert meta["frames"] == 32 and meta["frame_rate_hz"] == 25 and meta["num_clusters"] == K
    # Bucketing changes nothing: any padding of at least one frame gives the same ids.
    tok = SemanticTokenizer.load(tokenizer)
    direct = tok.tokenize(np.pad(wav, (0, 700)), lengths=[len(wav)])
    np.testing.assert_array_equal(ids, np.asarray(direct)[:32])


def test_tokenize_a_directory_mirrors_it_and_skips_bad_files(world):
    tmp, corpus, _, tokenizer = world
    (corpus / "train" / "102" / "7" / "broken.flac").write_bytes(b"fLaC" + b"\0" * 50)
    sf.write(corpus / "train" / "short.wav", np.zeros(300, np.float32), 16000)
    out = tmp / "ids"
    try:
        assert semantic("tokenize", "--tokenizer", tokenizer, corpus / "train", "--out", out) == 0
    finally:
        (corpus / "train" / "102" / "7" / "broken.flac").unlink()
        (corpus / "train" / "short.wav").unlink()
    manifest = json.loads((out / "tokens.json").read_text())
    assert sorted(manifest["files"]) == [f"{s}/7/{s}-7-{k:04d}.npy"
                                         for s, n in (("101", 3), ("102", 2)) for k in range(n)]
    assert sorted(manifest["skipped"]) == ["102/7/broken.flac", "short.wav"]
    assert "40 ms" in manifest["skipped"]["short.wav"]
    first = out / "101" / "7" / "101-7-0000.npy"
    assert np.load(first).shape == (int(1.3 * 16000) // 640,)
    # The same ids as tokenizing that file alone.
    assert semantic("tokenize", "--tokenizer", tokenizer, corpus / "train" / "101" / "7" /
                    "101-7-0000.flac", "--out", tmp / "alone.npy") == 0
    np.testing.assert_array_equal(np.load(first), np.load(tmp / "alone.npy"))


def test_fit_kmeans_errors_name_the_problem_and_the_fix(world):
    tmp, corpus, run, tokenizer = world
    common = ["--corpus", corpus, "--out", tmp / "unused"]
    message = fails("fit-kmeans", "--checkpoint", tmp / "nowhere", *common)
    assert str(tmp / "nowhere") in message and "train.workdir" in message
    (tmp / "empty").mkdir()
    assert "holds no checkpoint" in fails("fit-kmeans", "--checkpoint", tmp / "empty", *common)
    message = fails("fit-kmeans", "--checkpoint", run, "--layer", 2, *common)
    assert "layer 2 is out of range" in message and "1..1" in message
    message = fails("fit-kmeans", "--checkpoint", run, "--layer", 1, "--clusters", 500, *common,
                    *FIT_FLAGS)
    assert f"{FRAMES} frames" in message and "K=500" in message and f"at most {FRAMES}" in message
    assert "heldout" in fails("fit-kmeans", "--checkpoint", run, "--layer", 1, "--split", "heldout",
                              *common)
    assert not (tmp / "unused").exists()


def test_tokenize_errors(world):
    tmp, corpus, _, tokenizer = world
    wav = corpus / "train" / "101" / "7" / "101-7-0000.flac"
    assert "config.json: missing" in fails("tokenize", "--tokenizer", tmp, wav, "--out", tmp / "x.npy")
    assert "name it OUT.npy" in fails("tokenize", "--tokenizer", tokenizer, wav, "--out", tmp / "x")
    # Never overwrite the corpus' own metadata JSON beside the audio.
    message = fails("tokenize", "--tokenizer", tokenizer, wav, "--out", wav.with_suffix(".npy"))
    assert "refusing to overwrite" in message
    assert "no such audio file" in fails("tokenize", "--tokenizer", tokenizer, tmp / "no.wav",
                                         "--out", tmp / "x.npy")


def test_fit_kmeans_with_a_layer_chooser_records_its_choice(world, tmp_path):
    from audiolm_jax.semantic.fit import KMeansFitConfig, fit_tokenizer_from_checkpoint

    _, corpus, run, _ = world
    seen = []

    def chooser(model):
        seen.append(model.config)
        return 1, {"criterion": "abx_across", "abx_across": {"layer_1": 0.25}}

    config = KMeansFitConfig(layer=99, clusters=K, crop_seconds=2.0, batch_size=2, iters=3)
    report = fit_tokenizer_from_checkpoint(run, corpus, tmp_path / "tok", config=config,
                                           progress=lambda _: None, choose_layer=chooser)
    assert seen == [TINY] and report["config"]["layer"] == 1
    assert report["layer_selection"]["abx_across"] == {"layer_1": 0.25}
    assert SemanticTokenizer.load(tmp_path / "tok").layer == 1
    with pytest.raises(ValueError, match="picked layer 3"):
        fit_tokenizer_from_checkpoint(run, corpus, tmp_path / "bad", config=config,
                                      progress=lambda _: None, choose_layer=lambda m: (3, {}))


def test_select_layer_on_refuses_layer_and_splits_without_phones(world):
    tmp, corpus, run, _ = world
    common = ["--corpus", corpus, "--clusters", K, "--out", tmp / "sel", *FIT_FLAGS]
    assert "exclude each other" in fails("fit-kmeans", "--checkpoint", run, "--layer", 1,
                                         "--select-layer-on", "train", *common)
    message = fails("fit-kmeans", "--checkpoint", run, "--select-layer-on", "train", *common)
    assert "train" in message and ("phone" in message or "no utterance" in message), message


def test_select_layer_on_runs_as_a_fresh_process_with_gin_flags(world, tmp_path):
    """The chooser's modules import before gin parses (and locks) the flags: a fresh process,
    as users run it, not this test process where everything is imported already."""
    import subprocess
    import sys

    from corpus_trees import write_phone_tree

    _, _, run, _ = world
    write_phone_tree(tmp_path / "phones", np.random.default_rng(0))
    result = subprocess.run(
        [sys.executable, "-m", "audiolm_jax.cli", "semantic", "fit-kmeans", "--checkpoint",
         str(run), "--corpus", str(tmp_path / "phones"), "--split", "heldout_voices",
         "--select-layer-on", "heldout_voices", "--clusters", str(K), "--out",
         str(tmp_path / "tok"), *FIT_FLAGS], capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "tok" / "fit.json").read_text())
    assert report["layer_selection"]["layer"] == 1 == report["config"]["layer"]
    assert set(report["layer_selection"]["abx_across"]) == {"layer_1"}
