"""Stage-LM configs and data hints read from a run's operative gin config (gin state untouched)."""
import dataclasses
import shutil

import gin
import numpy as np
import pytest

from audiolm_jax.config import resolve_gin_file
from audiolm_jax.generate.loading import stage_config_from_run, stage_data_hints


def _run_dir(tmp_path, gin_name, extra=""):
    ckpt = tmp_path / "run" / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copy(resolve_gin_file(gin_name), ckpt / "operative_config.gin")
    if extra:
        with open(ckpt / "operative_config.gin", "a") as f:
            f.write(extra)
    (ckpt / "7").mkdir()   # a step folder, so the workdir resolves to checkpoints/
    return tmp_path / "run"


def test_stage_experiment_config_and_hints(tmp_path):
    gin.clear_config()
    run = _run_dir(tmp_path, "experiments/stage_coarse_speech_small_world",
                   "VOCAB_SIZE = 999\n")
    config = stage_config_from_run(run)
    assert config.vocab_size == 999                   # the macro, resolved (last word wins)
    hints = stage_data_hints(run)
    assert hints["num_coarse"] == 4 and hints["crop_seconds"] == 10.0
    assert gin.config_str() == ""                     # nothing bound globally


def test_runs_without_a_transformer_config_are_refused(tmp_path):
    run = _run_dir(tmp_path, "models/codec_tiny")
    with pytest.raises(ValueError, match="TransformerConfig"):
        stage_config_from_run(run)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        stage_config_from_run(tmp_path / "nowhere")
    (tmp_path / "bare" / "3" / "model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="operative_config.gin is missing"):
        stage_config_from_run(tmp_path / "bare")


STAGE_GIN = """lm.TransformerConfig.vocab_size = 40
lm.TransformerConfig.num_layers = 1
lm.TransformerConfig.num_heads = 2
lm.TransformerConfig.d_model = 16
lm.TransformerConfig.d_ff = 32
"""


def _stage_run(directory, extra_gin, losses):
    """A stage workdir whose steps 1.. hold differently initialised models, saved with the
    eval losses `losses` (None: saved without metrics, like a preemption save)."""
    import jax
    import jax.numpy as jnp

    from audiolm_jax.lm.config import TransformerConfig
    from audiolm_jax.lm.objective import StageObjective
    from audiolm_jax.training.checkpoint import CheckpointConfig, Checkpointer
    from audiolm_jax.training.mesh import MeshConfig, make_mesh
    from audiolm_jax.training.optim import OptimizerConfig
    from audiolm_jax.training.partitioning import axis_rules
    from audiolm_jax.training.program import build_program, seed_rng
    from audiolm_jax.training.step import StepOptions

    config = TransformerConfig(vocab_size=40, num_layers=1, num_heads=2, d_model=16, d_ff=32)
    prog = build_program(StageObjective(config, OptimizerConfig()),
                         make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1]), axis_rules(),
                         StepOptions(compute_dtype=jnp.float32), 100)
    ckpt_dir = directory / "checkpoints"
    saved = {}
    with Checkpointer(ckpt_dir, CheckpointConfig(keep=10, best_metric="eval/loss", keep_best=10,
                                                  async_save=False)) as ckpt:
        for step, loss in enumerate(losses, start=1):
            state = dataclasses.replace(prog.init(seed_rng(step)),
                                        step=jnp.asarray(step, jnp.int32))
            ckpt.save(step, state, metrics=None if loss is None else {"eval/loss": loss})
            saved[step] = np.asarray(state.params["embedding"])
    (ckpt_dir / "operative_config.gin").write_text(STAGE_GIN + extra_gin)
    return directory, saved


def _embedding(model):
    return np.asarray(model.embedding[...])


def test_a_run_that_kept_its_best_checkpoint_loads_at_that_step(tmp_path):
    from audiolm_jax.generate.loading import best_checkpoint_step, load_stage_model

    best = "CheckpointConfig.best_metric = 'eval/loss'\n"
    run, saved = _stage_run(tmp_path / "best", best, [3.0, 1.0, 2.0, None])
    assert best_checkpoint_step(run) == 2
    np.testing.assert_array_equal(_embedding(load_stage_model(run)), saved[2])
    np.testing.assert_array_equal(_embedding(load_stage_model(run, step=4)), saved[4])
    np.testing.assert_array_equal(_embedding(load_stage_model(run / "checkpoints" / "3")),
                                  saved[3])      # a step folder is that step
    run, saved = _stage_run(tmp_path / "max", best + "CheckpointConfig.best_mode = 'max'\n",
                            [3.0, 1.0, 2.0])
    assert best_checkpoint_step(run) == 1
    # No metric named, or none saved yet (cut before its first eval): the newest step.
    run, saved = _stage_run(tmp_path / "plain", "", [3.0, 1.0])
    assert best_checkpoint_step(run) is None
    np.testing.assert_array_equal(_embedding(load_stage_model(run)), saved[2])
    run, saved = _stage_run(tmp_path / "early", best, [None, None])
    assert best_checkpoint_step(run) is None
    np.testing.assert_array_equal(_embedding(load_stage_model(run)), saved[2])
