"""Numerics: bfloat16 overflow (huge inputs) and all-silence batches in the codec and w2v-BERT
objectives never leave a NaN/Inf in the parameters, the non-Param state (EMA codebooks) or the
optimizer state: the trainer's non-finite guard skips such a step, and training goes on after it.

The models are the tiny CPU experiments in bfloat16 (model and trainer compute dtype), on one
device, compiled at XLA:CPU level 1 (see tests/test_codec_objective.py for why not level 0).
The guard's streak/halt logic itself is tested in tests/test_trainer_loop.py.
"""
from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax import config
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.step import StepOptions

LEVEL_1 = {"xla_backend_optimization_level": "1"}
BF16_MAX = float(jnp.finfo(jnp.bfloat16).max)  # 3.39e38


def _objectives():
    from audiolm_jax.codec.objective import CodecObjective
    from audiolm_jax.semantic.objective import W2vBertObjective

    return {
        "codec": ("experiments/codec_tiny_cpu",
                  ["SoundStreamConfig.compute_dtype = 'bfloat16'", "OptimizerConfig.warmup_steps = 0"],
                  lambda: CodecObjective(discriminator_start_step=0), 3200),
        "w2v_bert": ("experiments/w2v_bert_tiny_cpu",
                     ["W2vBertObjective.dtype = 'bfloat16'", "OptimizerConfig.warmup_steps = 0",
                      "W2vBertConfig.num_contrastive_layers = 1", "W2vBertConfig.num_mlm_layers = 1"],
                     lambda: W2vBertObjective(), 16000),
    }


def build(name: str):
    experiment, bindings, make, samples = _objectives()[name]
    gin.clear_config()
    config.parse_gin([experiment], bindings, finalize=False)
    try:
        prog = build_program(make(), make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1]),
                             axis_rules(), StepOptions(compute_dtype=jnp.bfloat16), 100)
    finally:
        gin.clear_config()
    return prog, samples


def batch(kind: str, samples: int, rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    speech = (0.3 * rng.standard_normal((rows, samples))).astype(np.float32)
    audio = {"speech": speech, "silence": np.zeros((rows, samples), np.float32),
             "huge": np.full((rows, samples), 1e30, np.float32) * np.sign(speech),
             "bf16_max": np.full((rows, samples), BF16_MAX, np.float32)}[kind]
    return {"audio": audio, "audio_length": np.full(rows, samples, np.int32)}


def nonfinite_leaves(tree) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return [jax.tree_util.keystr(path) for path, leaf in leaves
            if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all()]


@pytest.mark.parametrize("name", ["codec", "w2v_bert"])
def test_overflow_and_silence_never_reach_the_parameters(name):
    prog, samples = build(name)
    state = prog.init(seed_rng(0))
    schedule = ["speech", "silence", "huge", "bf16_max", "silence", "speech"]
    step = prog.train_step.lower(state, batch("speech", samples)).compile(compiler_options=LEVEL_1)
    skipped = {}
    for kind in schedule:
        state, metrics = step(state, batch(kind, samples))
        skipped[kind] = skipped.get(kind, 0) + int(metrics["nonfinite"])
        for part in ("params", "model_state", "opt_state"):
            bad = nonfinite_leaves(getattr(state, part))
            assert not bad, f"{name}: after a {kind!r} batch, non-finite {part}: {bad[:5]}"
    # Silence and ordinary speech are trained on (finite losses), not skipped.
    assert skipped["speech"] == 0 and skipped["silence"] == 0, skipped
    assert int(state.step) == len(schedule) and not bool(state.halted)
