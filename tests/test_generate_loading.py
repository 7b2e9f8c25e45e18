"""Stage-LM configs and data hints read from a run's operative gin config (gin state untouched)."""
import shutil

import gin
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
