"""w2v-BERT through the trainer core, configured by gin/experiments/w2v_bert_tiny_cpu.gin, on 8
simulated devices; then the semantic tokenizer fitted from the run's checkpoint."""
import types

import gin
import jax
import numpy as np
import pytest
from flax import nnx

from audiolm_jax import cli, config
from audiolm_jax.data.audio_reader import AudioCropReader
from audiolm_jax.semantic.fit import KMeansFitConfig, fit_tokenizer_from_checkpoint
from audiolm_jax.semantic.kmeans import kmeans_assign
from audiolm_jax.semantic.objective import code_usage_perplexity
from audiolm_jax.semantic.tokenizer import SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, valid_frames
from audiolm_jax.training.checkpoint import Checkpointer, load_model
from audiolm_jax.training.trainer import train
from corpus_trees import write_speech_tree

STEPS, BATCH = 10, 8
# Every clip fits in the 1 s crop, so a crop is the whole clip: unshuffled, every batch of the 8
# training clips is the same batch.
TREE = {"train": {("101", "7"): [0.9, 0.8, 1.0, 0.7], ("102", "7"): [1.0, 0.95, 0.6, 0.85]},
        "heldout_books": {("101", "9"): [1.0, 0.9, 0.8, 0.7], ("102", "9"): [1.0, 0.6, 0.9, 1.0]}}


def gin_flags(root, workdir) -> list[str]:
    """Overrides of the experiment for a fast, repeated-batch run (one block per module)."""
    return [f"audio_crop_batches.root = '{root}'", f"train.workdir = '{workdir}'",
            f"train.num_train_steps = {STEPS}", "audio_crop_batches.crop_seconds = 1.0",
            "train_crops/audio_crop_batches.shuffle = False", f"train.eval_every = {STEPS}",
            "train.eval_batches = 1", f"CheckpointConfig.every_steps = {STEPS}",
            "W2vBertConfig.num_contrastive_layers = 1",
            "W2vBertConfig.num_mlm_layers = 1", "OptimizerConfig.schedule = 'constant'",
            "OptimizerConfig.warmup_steps = 0", "OptimizerConfig.learning_rate = 1e-3",
            "train.log_every = 1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("w2v_bert_run")
    root, workdir = tmp / "corpus", tmp / "run"
    write_speech_tree(root, TREE)
    assert jax.device_count() == 8
    gin.clear_config()
    try:
        config.parse_gin(["experiments/w2v_bert_tiny_cpu"], gin_flags(root, workdir))
        model_config = W2vBertConfig()
        losses = {}
        result = train(on_step=lambda step, m: losses.__setitem__(step, float(m["model/loss"])),
                       progress=lambda _: None)
    finally:
        gin.clear_config()
    return types.SimpleNamespace(root=root, workdir=workdir, model_config=model_config,
                                 losses=losses, result=result)


def test_the_training_batch_repeats(run):
    # The premise of the loss test below, on the reader settings the run binds.
    reader = AudioCropReader(run.root, "libri_light", "train", 1.0, seed=0, batch_size=BATCH,
                             shuffle=False)
    first, second = next(reader), next(reader)
    np.testing.assert_array_equal(first["audio"], second["audio"])


def test_loss_falls_on_a_repeated_batch_over_eight_devices(run):
    losses = [run.losses[s] for s in range(1, STEPS + 1)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses
    assert run.result.step == STEPS and not run.result.preempted


def test_eval_reports_mlm_and_contrastive_accuracy_on_heldout_crops(run):
    metrics = run.result.eval_metrics
    assert {"eval/loss", "eval/mlm_accuracy", "eval/contrastive_accuracy", "eval/mlm_loss",
            "eval/contrastive_loss", "eval/code_perplexity", "eval/target_perplexity"} <= set(metrics)
    for name in ("eval/mlm_accuracy", "eval/contrastive_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0
    assert 1.0 <= metrics["eval/target_perplexity"] <= run.model_config.codebook_entries
    assert 0.0 < metrics["eval/mask_fraction"] < 1.0


def test_code_usage_perplexity_counts_valid_frames_only():
    ids = np.array([[0, 1, 2, 3], [0, 0, 0, 0]])[..., None]  # [batch, frames, groups]
    assert float(code_usage_perplexity(ids[1:], None, 16)) == pytest.approx(1.0)
    assert float(code_usage_perplexity(ids[:1], None, 16)) == pytest.approx(4.0)
    valid = np.array([[True, True, False, False], [False] * 4])
    assert float(code_usage_perplexity(ids, valid, 16)) == pytest.approx(2.0)


def test_throughput_counts_the_audio_seconds_of_a_batch(run):
    m = run.result.metrics
    assert m["perf/audio_sec_per_sec"] * m["perf/step_time"] == pytest.approx(BATCH * 1.0)


def test_the_cli_restores_the_run_from_its_checkpoint(run, capsys):
    # `audiolm-jax train` on the finished run: the configured model, optimizer and input state
    # restore from the checkpoint, and there is nothing left to do. (That a resumed run continues
    # bit for bit is the trainer's own test: tests/test_trainer_subprocess.py.)
    flags = [f"--gin.{b.replace(' = ', '=', 1)}" for b in gin_flags(run.root, run.workdir)]
    try:
        assert cli.main(["train", "--gin_file=experiments/w2v_bert_tiny_cpu", *flags]) == 0
    finally:
        gin.clear_config()
    assert f"resumed from {run.workdir / 'checkpoints'}/{STEPS}" in capsys.readouterr().out
    assert Checkpointer(run.workdir / "checkpoints").steps() == [STEPS]


def test_fit_kmeans_ids_equal_kmeans_assign_of_standardised_activations(run, tmp_path):
    fit = KMeansFitConfig(layer=1, clusters=8, crop_seconds=1.0, batch_size=3, iters=5, seed=1)
    report = fit_tokenizer_from_checkpoint(run.workdir, run.root, tmp_path / "tok", "train", fit,
                                           progress=lambda _: None)
    tokenizer = SemanticTokenizer.load(tmp_path / "tok")
    assert report["step"] == STEPS and tokenizer.num_clusters == 8 and tokenizer.layer == 1

    # The same crops (same reader settings and seed), all in one batch, through the checkpoint's
    # model; the standardisation recomputed in numpy (float64, population std).
    reader = AudioCropReader(run.root, "libri_light", "train", 1.0, seed=1, batch_size=BATCH,
                             shuffle=True, num_epochs=1)
    batch = next(reader)
    model = load_model(run.workdir / "checkpoints", lambda rngs: W2vBert(run.model_config, rngs=rngs))
    valid = valid_frames(batch["length"], batch["audio"].shape[1] // 640)
    h = nnx.jit(lambda m, w, v: m.mlm_layer_activations(w, 1, v))(model, batch["audio"], valid)
    frames = np.asarray(h, np.float64)[np.asarray(valid)]
    mean, std = frames.mean(0), frames.std(0)
    assert report["audio"] == {"crops": 8, "frames": len(frames),
                               "hours": pytest.approx(batch["length"].sum() / 16000 / 3600, abs=1e-6)}
    assert report["clustered_frames"] == len(frames)
    np.testing.assert_allclose(tokenizer.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tokenizer.std, std, rtol=1e-4, atol=1e-5)

    expected, _ = kmeans_assign((frames - mean) / std, tokenizer.centroids)
    ids = np.asarray(tokenizer.tokenize(batch["audio"], lengths=batch["length"]))
    np.testing.assert_array_equal(ids[np.asarray(valid)], np.asarray(expected))
    assert len(np.unique(ids[np.asarray(valid)])) > 1
