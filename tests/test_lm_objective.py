"""The stage LM through the trainer core: training, throughput accounting, AOT fit check."""
import gin
import jax
import numpy as np
import pytest

from audiolm_jax import cli
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.flops import flops_per_token
from audiolm_jax.lm.objective import StageObjective
from audiolm_jax.training.aot import compile_train_step
from audiolm_jax.training.mesh import MeshConfig
from audiolm_jax.training.optim import OptimizerConfig
from audiolm_jax.training.trainer import train

TINY = TransformerConfig(vocab_size=40, num_layers=2, num_heads=2, d_model=32, d_ff=64,
                         dropout_rate=0.0)


class RepeatedBatch:
    """One fixed stage batch forever (a memorisation target), with resumable state."""

    def __init__(self, shard_index=0, shard_count=1, batch=8, length=16):
        rng = np.random.default_rng(0)
        seq = rng.integers(3, 40, size=(batch, length + 1)).astype(np.int32)
        mask = np.ones((batch, length), np.int32)
        mask[:, : length // 4] = 0  # a prefix the stage conditions on but does not predict
        self.batch = {"inputs": seq[:, :-1], "targets": seq[:, 1:], "loss_mask": mask}
        self.step = 0

    def __next__(self):
        self.step += 1
        return self.batch

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = state["step"]


def test_stage_lm_trains_sharded_and_counts_tokens(tmp_path):
    losses = []
    fast = OptimizerConfig(learning_rate=1e-2, schedule="constant")
    result = train(objective=StageObjective(TINY, fast), train_data=RepeatedBatch, num_train_steps=12,
                   workdir=str(tmp_path), mesh_config=MeshConfig(2, 2, 2), compute_dtype="float32",
                   log_every=4, on_step=lambda step, m: losses.append(float(m["model/loss"])),
                   progress=lambda _: None)
    assert result.step == 12
    assert losses[-1] < 0.8 * losses[0]
    assert result.metrics["perf/tokens_per_sec"] == pytest.approx(
        8 * 16 / result.metrics["perf/step_time"])


def test_step_cost_uses_the_palm_flop_count():
    cost = StageObjective(TINY).step_cost({"inputs": jax.ShapeDtypeStruct((4, 16), "int32")})
    assert cost.tokens == 64 and cost.flops == pytest.approx(64 * flops_per_token(TINY, 16))


def test_aot_compile_reports_memory_without_allocating():
    batch = {k: ((8, 16), "int32") for k in ("inputs", "targets", "loss_mask")}
    report = compile_train_step(StageObjective(TINY), batch, mesh_config=MeshConfig(1, 8, 1),
                                compute_dtype="float32", print_report=False)
    assert report.mesh_shape == {"data": 1, "fsdp": 8, "tensor": 1}
    assert report.argument_bytes > 0 and report.flops_per_device > 0


def test_compile_command_reads_gin(capsys):
    try:
        assert cli.main(["compile", "--gin_file=runs/aot_semantic_paper",
                         "--gin.lm.TransformerConfig.num_layers=1",
                         "--gin.lm.TransformerConfig.d_model=32", "--gin.lm.TransformerConfig.num_heads=2",
                         "--gin.lm.TransformerConfig.d_ff=64", "--gin.lm.TransformerConfig.vocab_size=40",
                         "--gin.compile_train_step.batch={'inputs': ((8, 16), 'int32'), "
                         "'targets': ((8, 16), 'int32'), 'loss_mask': ((8, 16), 'int32')}"]) == 0
    finally:
        gin.clear_config()
    assert "AOT train step" in capsys.readouterr().out
