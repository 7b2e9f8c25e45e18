"""The training loop in-process: progress line, TensorBoard, eval, best checkpoint, MFU, the
non-finite stop, input checks."""

import glob
import os
import re
from pathlib import Path

import gin
import jax
import pytest

from audiolm_jax.training.checkpoint import CheckpointConfig, Checkpointer
from audiolm_jax.training.mesh import MeshConfig
from audiolm_jax.training.objective import OptimizerGroup
from audiolm_jax.training.partitioning import DEFAULT_RULES, axis_rules
from audiolm_jax.training.program import build_optimizers
from audiolm_jax.training.trainer import NonFiniteError, train
from tiny_models import TokenData, make_lm_objective, token_data


def test_train_logs_evaluates_and_keeps_the_best(tmp_path):
    lines = []
    result = train(
        objective=make_lm_objective(),
        train_data=token_data(8),
        num_train_steps=6,
        workdir=str(tmp_path),
        eval_data=token_data(8, seed=1),
        eval_every=3,
        eval_batches=2,
        mesh_config=MeshConfig(2, 2, 2),
        checkpoint=CheckpointConfig(every_steps=2, keep=1, best_metric="eval/loss"),
        compute_dtype="float32",
        log_every=2,
        peak_flops=1e9,
        progress=lines.append,
    )
    assert result.step == 6 and not result.preempted
    # One startup line, before the first step's: where a time-boxed run's first minutes went.
    startup = [i for i, line in enumerate(lines) if line.startswith("startup ")]
    assert len(startup) == 1 and startup[0] < min(
        i for i, line in enumerate(lines) if line.startswith("step "))
    phases = dict(re.findall(r"(program|state|first batch|cost|first step) ([0-9.]+) s",
                             lines[startup[0]]))
    assert list(phases) == ["program", "state", "first batch", "cost", "first step"]
    total = float(re.match(r"startup ([0-9.]+) s:", lines[startup[0]]).group(1))
    # each figure is rounded to 0.1 s: five roundings and the total's
    assert total == pytest.approx(sum(map(float, phases.values())), abs=0.3)
    assert set(result.eval_metrics) == {"eval/loss", "eval/accuracy"}
    step_lines = [line for line in lines if line.startswith("step 6/6")]
    assert step_lines and all(
        key in step_lines[0] for key in ("model/loss", "tok/s", "ms/step", "MFU", "mem")
    )
    metrics = result.metrics
    tokens = 8 * 7
    assert metrics["perf/tokens_per_sec"] == pytest.approx(tokens / metrics["perf/step_time"])
    flops = make_lm_objective().step_cost({"tokens": jax.ShapeDtypeStruct((8, 8), "int32")}).flops
    assert metrics["perf/mfu"] == pytest.approx(flops / metrics["perf/step_time"] / (1e9 * 8))
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    assert os.path.exists(tmp_path / "checkpoints" / "operative_config.gin")
    evals = {
        int(line.split()[1]): float(line.split("eval/loss ")[1])
        for line in lines
        if "eval/loss" in line
    }
    best = min(evals, key=evals.get)
    assert sorted(evals) == [3, 6]
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.steps() == sorted({best, 6})
    assert (
        train(
            objective=make_lm_objective(),
            train_data=token_data(8),
            num_train_steps=6,
            workdir=str(tmp_path),
            mesh_config=MeshConfig(2, 2, 2),
        ).step
        == 6
    )  # nothing to do


def test_a_nonfinite_streak_stops_the_run_with_the_last_good_checkpoint(tmp_path):
    def unresumable(shard_index=0, shard_count=1):  # a plain generator: no get_state()
        data = TokenData(8, 0, shard_index, shard_count)
        while True:
            yield next(data)

    with (
        pytest.warns(UserWarning, match="no get_state"),
        pytest.raises(NonFiniteError, match=r"2 steps in a row(.|\n)*Last good checkpoint: .*/2"),
    ):
        train(
            objective=make_lm_objective(poison_steps=(2, 3, 4)),
            train_data=unresumable,
            num_train_steps=8,
            workdir=str(tmp_path),
            mesh_config=MeshConfig(1, 1, 1),
            devices=jax.devices()[:1],
            checkpoint=CheckpointConfig(every_steps=2),
            compute_dtype="float32",
            log_every=100,
            max_nonfinite_streak=2,
            progress=lambda _: None,
        )
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.steps() == [2]


def test_a_batch_the_mesh_cannot_split_is_reported_before_compiling(tmp_path):
    with pytest.raises(
        ValueError, match=r"6 rows, not divisible by num_microbatches \(2\) x data\*fsdp"
    ):
        train(
            objective=make_lm_objective(),
            train_data=token_data(6),
            num_train_steps=2,
            workdir=str(tmp_path),
            mesh_config=MeshConfig(2, 2, 2),
            num_microbatches=2,
        )


def test_gin_defaults_and_per_group_optimizer_scopes():
    gin.clear_config()
    try:
        gin.add_config_file_search_path(str(Path(__file__).resolve().parents[1] / "gin"))
        gin.parse_config_files_and_bindings(
            ["training/defaults.gin"],
            [
                "MeshConfig.fsdp = 2",
                "train.num_train_steps = 3",
                "OptimizerConfig.learning_rate = 0.1",
                "generator/OptimizerConfig.learning_rate = 0.5",
            ],
        )
        assert MeshConfig() == MeshConfig(data=-1, fsdp=2)
        assert axis_rules() == DEFAULT_RULES
        assert CheckpointConfig().keep == 3 and gin.query_parameter("train.num_train_steps") == 3
        loss = make_lm_objective().optimizer_groups()[0].loss_fn
        _, schedules = build_optimizers(
            [OptimizerGroup("discriminator", loss), OptimizerGroup("generator", loss)], 10
        )
        assert float(schedules["generator"](0)) == pytest.approx(0.5)
        assert float(schedules["discriminator"](0)) == pytest.approx(0.1)
    finally:
        gin.clear_config()


def _train_one_device_with_eval(workdir, eval_data, num_train_steps):
    return train(
        objective=make_lm_objective(),
        train_data=token_data(8),
        num_train_steps=num_train_steps,
        workdir=str(workdir),
        eval_data=eval_data,
        eval_every=2,
        mesh_config=MeshConfig(1, 1, 1),
        devices=jax.devices()[:1],
        compute_dtype="float32",
        progress=lambda _: None,
    )


def test_an_eval_killed_by_the_preemption_signal_still_saves(tmp_path):
    """SIGTERM to the process group can kill a compiler subprocess mid-eval: save anyway."""
    import os
    import signal

    def dying_eval(shard_index=0, shard_count=1):
        os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("ptxas exited with non-zero error code 15")
        yield  # pragma: no cover - makes this a generator

    result = _train_one_device_with_eval(tmp_path, dying_eval, num_train_steps=6)
    assert result.preempted and result.step == 2
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.steps() == [2]


def test_an_eval_error_without_preemption_is_raised(tmp_path):
    def broken_eval(shard_index=0, shard_count=1):
        raise RuntimeError("eval data is broken")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="eval data is broken"):
        _train_one_device_with_eval(tmp_path, broken_eval, num_train_steps=4)
