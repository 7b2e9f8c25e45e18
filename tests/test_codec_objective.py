"""CodecObjective through the trainer's compiled step on 8 simulated devices, and load_codec.

The model is experiments/codec_tiny_cpu (the tiny codec with a CPU-trimmed topology). Train steps
are compiled at XLA:CPU optimisation level 1 instead of the suite's 0: at level 0 the
convolution gradients inside the trainer's `lax.cond` (the discriminator's start step) run ~30x
slower, while level 1 compiles just as fast.
"""
import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax import config
from audiolm_jax.codec import api
from audiolm_jax.codec.frozen import load_codec, soundstream_config_from_gin
from audiolm_jax.codec.objective import CodecObjective, frame_aligned_audio
from audiolm_jax.training.checkpoint import (CheckpointMismatchError, Checkpointer,
                                             write_operative_config)
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.state import from_pure
from audiolm_jax.training.step import StepOptions

EXPERIMENT = "experiments/codec_tiny_cpu"
START = 5          # discriminator start step of the main run
STEPS = 9
CROP = 6400        # 0.4 s: 20 frames
LEVEL_1 = {"xla_backend_optimization_level": "1"}
TEST_BINDINGS = ["OptimizerConfig.warmup_steps = 0",
                 "generator/OptimizerConfig.learning_rate = 5e-3"]


def build(objective_factory, mesh=(4, 1, 2)):
    """(program, objective, operative gin text) under the experiment's gin config."""
    gin.clear_config()
    config.parse_gin([EXPERIMENT], TEST_BINDINGS, finalize=False)
    try:
        objective = objective_factory()
        devices = jax.devices()[:int(np.prod(mesh))]
        prog = build_program(objective, make_mesh(MeshConfig(*mesh), devices), axis_rules(),
                             StepOptions(compute_dtype=jnp.float32), 100)
        return prog, objective, gin.operative_config_str()
    finally:
        gin.clear_config()


def make_batch(prog):
    """8 harmonic tones of different pitch plus noise; the last clip has 4000 valid samples."""
    rng = np.random.default_rng(0)
    t = np.arange(CROP) / 16000
    wav = np.stack([0.3 * np.sin(2 * np.pi * f * t) + 0.15 * np.sin(4 * np.pi * f * t)
                    + 0.02 * rng.standard_normal(CROP) for f in np.linspace(120, 700, 8)])
    lengths = np.full(8, CROP, np.int32)
    lengths[-1] = 4000
    wav[-1, 4000:] = 0.0
    batch = {"audio": wav.astype(np.float32), "audio_length": lengths}
    return {k: jax.device_put(v, prog.batch_sharding) for k, v in batch.items()}


def disc_kernel(params):
    return np.asarray(params["discriminators"]["stft"]["stem"]["kernel"])


@pytest.fixture(scope="module")
def run():
    """STEPS train steps on one repeated batch, mesh (data 4, tensor 2), discriminator from START."""
    prog, objective, gin_text = build(lambda: CodecObjective(discriminator_start_step=START))
    batch = make_batch(prog)
    state = prog.init(seed_rng(0))
    init_state = jax.device_get(state)   # the step donates its input
    step_fn = prog.train_step.lower(state, batch).compile(compiler_options=LEVEL_1)
    history, disc, codebooks = [], [disc_kernel(state.params)], [
        np.asarray(state.model_state["generator"]["quantizer"]["codebooks"])]
    for _ in range(STEPS):
        state, metrics = step_fn(state, batch)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        disc.append(disc_kernel(state.params))
        codebooks.append(np.asarray(state.model_state["generator"]["quantizer"]["codebooks"]))
    return dict(prog=prog, objective=objective, gin_text=gin_text, batch=batch, state=state,
                init_state=init_state, history=history, disc=disc, codebooks=codebooks)


def test_groups_are_discriminator_then_generator():
    gin.clear_config()                           # the configs' defaults: the paper codec
    objective = CodecObjective(discriminator_start_step=7)
    disc, gen = objective.optimizer_groups()
    assert (disc.name, disc.start_step, disc.keep_state_updates) == ("discriminator", 7, False)
    assert (gen.name, gen.start_step, gen.keep_state_updates) == ("generator", 0, True)
    with pytest.raises(ValueError, match="discriminator_start_step"):
        CodecObjective(discriminator_start_step=-1)
    assert objective.eval_levels == (12, 4)      # the paper codec's 6 and 2 kbps
    assert CodecObjective(eval_num_quantizers=(1, 4, 16)).eval_levels == (12, 4, 1)


def test_params_are_sharded_and_the_generator_learns(run):
    state, history = run["state"], run["history"]
    kernel = state.params["generator"]["encoder"]["stem"]["conv"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")
    for metrics in history:
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        assert metrics["nonfinite"] == 0
    recon = [h["generator/reconstruction"] for h in history]
    # Quantizer dropout draws new bitrates each step, so single steps are noisy; means are not.
    assert np.mean(recon[-3:]) < 0.9 * np.mean(recon[:3]), recon
    assert history[-1]["generator/loss"] < history[0]["generator/loss"]
    cost = run["objective"].step_cost({"audio": jax.ShapeDtypeStruct((8, CROP + 100), np.float32)})
    assert cost.audio_seconds == pytest.approx(8 * 0.4)   # cut to whole frames


def test_discriminator_is_skipped_before_its_start_and_trained_after(run):
    history, disc = run["history"], run["disc"]
    for step, metrics in enumerate(history):
        moved = not np.array_equal(disc[step], disc[step + 1])
        assert moved == (step >= START), step
        if step < START:
            assert metrics["discriminator/loss"] == 0.0
            assert metrics["generator/adversarial"] == 0.0
            assert metrics["generator/feature_matching"] == 0.0
        else:
            assert metrics["discriminator/loss"] > 0.0
            assert metrics["generator/adversarial"] > 0.0
            assert metrics["generator/feature_matching"] > 0.0


def test_codebooks_move_in_the_generator_pass(run):
    codebooks = run["codebooks"]
    assert bool(run["state"].model_state["generator"]["quantizer"]["initialized"])
    assert not np.array_equal(codebooks[0], codebooks[1])   # k-means init on the first batch
    assert not np.array_equal(codebooks[-2], codebooks[-1])  # EMA updates after


def test_discriminator_pass_leaves_rvq_state_and_generator_alone(run):
    """A step of the discriminator group alone trains the discriminators and nothing else: its
    codec forward (train=True, so it would k-means-initialise the codebooks) is discarded."""
    class DiscriminatorOnly(CodecObjective):
        def optimizer_groups(self):
            return [dataclasses.replace(super().optimizer_groups()[0], start_step=0)]

    prog, _, _ = build(lambda: DiscriminatorOnly())
    init = run["init_state"]   # the main run's initial state, minus the generator's optimizer
    state = dataclasses.replace(init, opt_state={"discriminator": init.opt_state["discriminator"]})
    state, metrics = prog.train_step(state, run["batch"])
    params, model_state = jax.device_get((state.params, state.model_state))
    assert float(metrics["discriminator/loss"]) > 0.0
    assert not np.array_equal(disc_kernel(init.params), disc_kernel(params))
    jax.tree.map(np.testing.assert_array_equal, model_state, init.model_state)
    jax.tree.map(np.testing.assert_array_equal, params["generator"], init.params["generator"])
    assert not bool(model_state["generator"]["quantizer"]["initialized"])


def test_frame_aligned_audio_cuts_to_frames_and_masks_padding():
    batch = {"audio": jnp.ones((2, 700)), "audio_length": jnp.array([700, 100])}
    wav, mask = frame_aligned_audio(batch, 320)
    assert wav.shape == mask.shape == (2, 640)
    assert float(wav[1].sum()) == 100.0 and float(mask[0].sum()) == 640.0
    with pytest.raises(ValueError, match="crop_seconds"):
        frame_aligned_audio({"audio": jnp.ones((2, 100))}, 320)


def test_load_codec_gives_the_trained_generator(run, tmp_path):
    # The trained model as the run left it, gathered to the host: load_codec's arrays live on
    # one device too, so both models share one compiled encode (and Orbax saves host arrays
    # without a device-to-host copy program per array shape).
    prog, host = run["prog"], jax.device_get(run["state"])
    ckpt = Checkpointer(tmp_path / "checkpoints")      # what the trainer writes into a workdir
    ckpt.save(STEPS, host, config_text=run["gin_text"])
    ckpt.wait()
    ckpt.close()
    write_operative_config(tmp_path / "checkpoints", run["gin_text"])

    layout = prog.layout
    in_memory = layout.merge(from_pure(layout.params, host.params),
                             from_pure(layout.model_state, host.model_state)).generator
    loaded = load_codec(tmp_path)                     # the workdir; config from the run's gin
    assert loaded.config == in_memory.config
    np.testing.assert_array_equal(np.asarray(loaded.quantizer.codebooks[...]),
                                  np.asarray(in_memory.quantizer.codebooks[...]))
    wav = np.asarray(run["batch"]["audio"])[2, :5000]   # not a whole number of frames
    codes = api.encode(loaded, wav)
    assert codes.shape == (16, 4) and codes.dtype == np.int32
    np.testing.assert_array_equal(codes, api.encode(in_memory, wav))
    np.testing.assert_allclose(api.decode(loaded, codes), api.decode(in_memory, codes), atol=1e-6)

    step_folder = load_codec(tmp_path / "checkpoints" / str(STEPS), gin_file=EXPERIMENT)
    np.testing.assert_array_equal(api.encode(step_folder, wav), codes)
    with pytest.raises(CheckpointMismatchError, match="codebooks"):
        load_codec(tmp_path, gin_bindings=["SoundStreamConfig.codebook_size = 64"])
    (tmp_path / "checkpoints" / "operative_config.gin").unlink()
    with pytest.raises(FileNotFoundError, match="gin_file"):
        load_codec(tmp_path)


def test_codec_config_is_read_from_gin_text_without_touching_gin(tmp_path):
    base = tmp_path / "base.gin"
    base.write_text("include 'models/codec_tiny.gin'\nSoundStreamConfig.channels = 6\n")
    top = tmp_path / "top.gin"
    top.write_text("include 'base.gin'\nWIDTH = 8\nSoundStreamConfig.channels = %WIDTH\n"
                   "scoped/SoundStreamConfig.channels = 99\ntrain.objective = @CodecObjective()\n")
    gin.clear_config()
    cfg = soundstream_config_from_gin([(top.read_text(), str(top)),
                                       ("SoundStreamConfig.strides = [4, 80]", "cli")])
    assert (cfg.channels, cfg.codebook_size, cfg.num_quantizers) == (8, 32, 4)
    assert cfg.strides == (4, 80) and cfg.hop_length == 320
    assert cfg.embedding_dim == 16 and cfg.kernel_size == 7   # tiny binding, then the default
    assert gin.config_str() == ""                             # nothing bound globally
    with pytest.raises(ValueError, match="no field"):
        soundstream_config_from_gin([("SoundStreamConfig.widht = 3", "x.gin")])
    with pytest.raises(ValueError, match="macro"):
        soundstream_config_from_gin([("SoundStreamConfig.channels = %NOPE", "x.gin")])
