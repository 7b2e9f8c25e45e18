"""The training loop: `train(...)`, gin-configurable, everything injectable.

A gin experiment binds it like this (the `audiolm-jax train` command calls `train()`):

    include 'training/defaults.gin'           # axis rules, mesh, checkpoint and optimizer defaults
    train.objective = @SemanticLMObjective()  # any audiolm_jax.training.Objective
    train.train_data = @semantic_train_data   # factory(shard_index=, shard_count=) -> iterator
    train.eval_data = @semantic_eval_data     # optional, same form
    train.num_train_steps = 400000
    train.workdir = '/path/to/run'
    train.eval_every = 5000
    MeshConfig.fsdp = 4
    CheckpointConfig.every_steps = 2000
    CheckpointConfig.best_metric = 'eval/loss'
    OptimizerConfig.learning_rate = 5e-4      # or scoped: generator/OptimizerConfig.learning_rate

Input iterators yield this process's rows of the global batch as dicts of numpy arrays
`[batch / processes, ...]`, and implement `get_state()` / `set_state(state)` (JSON-able) so a
resumed run reads exactly the batches it would have read.

Workdir layout: checkpoints/<step>/ (Orbax), checkpoints/operative_config.gin, tensorboard/.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.device_specs import peak_flops_per_device
from audiolm_jax.training import distributed, partitioning
from audiolm_jax.training.checkpoint import CheckpointConfig, Checkpointer, write_operative_config
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.metrics import (
    MetricsWriter,
    Throughput,
    mean_metrics,
    memory_in_use,
    progress_line,
)
from audiolm_jax.training.objective import Objective
from audiolm_jax.training.preemption import PreemptionWatcher
from audiolm_jax.training.program import Program, build_program, seed_rng
from audiolm_jax.training.step import StepOptions

log = logging.getLogger(__name__)
DataFactory = Callable[..., Iterator[Mapping[str, np.ndarray]]]


class NonFiniteError(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint was kept."""


@dataclasses.dataclass
class TrainResult:
    """step: steps done. preempted: stopped by SIGTERM after saving. metrics: last logged train
    metrics. eval_metrics: last eval. seconds_per_step: host wall time per step after the first
    (includes the loop's own work; excludes compilation and the final save)."""

    step: int
    preempted: bool
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    seconds_per_step: float
    checkpoint_dir: str


class _Batches:
    """Host batches -> global arrays sharded over (data, fsdp)."""

    def __init__(self, program: Program, shard_count: int):
        self.sharding, self.shard_count = program.batch_sharding, shard_count

    def global_shapes(
        self, local: Mapping[str, np.ndarray]
    ) -> dict[str, tuple[tuple[int, ...], Any]]:
        return {
            k: (
                (v.shape[0] * self.shard_count,) + tuple(v.shape[1:]),
                jax.dtypes.canonicalize_dtype(v.dtype),
            )
            for k, v in local.items()
        }

    def __call__(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        return {
            k: jax.make_array_from_process_local_data(self.sharding, np.asarray(v), shape)
            for (k, v), (shape, _) in zip(local.items(), self.global_shapes(local).values())
        }


def _check_batch(shapes: Mapping[str, tuple], program: Program, num_microbatches: int) -> None:
    mesh = program.mesh
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    for name, (shape, _) in shapes.items():
        if not shape:
            raise ValueError(
                f"batch['{name}'] is a scalar; every batch entry needs a leading batch dim."
            )
        if shape[0] % (num_microbatches * shards):
            raise ValueError(
                f"global batch['{name}'] has {shape[0]} rows, not divisible by num_microbatches "
                f"({num_microbatches}) x data*fsdp mesh size ({shards}); change the batch size, "
                f"train.num_microbatches or MeshConfig."
            )


def _iterator_state(it: Any, warned: list) -> Any:
    if hasattr(it, "get_state"):
        return it.get_state()
    if not warned:
        warnings.warn(
            f"{type(it).__name__} has no get_state(); a resumed run will restart its data."
        )
        warned.append(True)
    return None


def _next_batch(data: Iterator, step: int) -> Mapping[str, np.ndarray]:
    try:
        return next(data)
    except StopIteration:
        raise RuntimeError(
            f"train_data ran out at step {step}; make the iterator repeat (epochs) or "
            "lower train.num_train_steps."
        ) from None


class _Startup:
    """Wall time from `train`'s start to its first finished step, by phase, for one progress
    line: where a time-boxed run's first minutes went (state = init or restore; first step =
    compilation, mostly)."""

    def __init__(self):
        self.phases: list[tuple[str, float]] = []
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases.append((phase, now - self._last))
        self._last = now

    def line(self) -> str:
        total = sum(seconds for _, seconds in self.phases)
        parts = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.phases)
        return f"startup {total:.1f} s: {parts}"


def _make_objective(objective: Objective | Callable[[], Objective]) -> Objective:
    obj = objective if isinstance(objective, Objective) else objective()
    if not isinstance(obj, Objective):
        raise TypeError(
            f"train.objective gave {type(obj).__name__}, not an audiolm_jax.training.Objective."
        )
    return obj


def _xla_flops(lowered: Any) -> float:
    """FLOPs per global step from XLA's cost analysis of the lowered (unpartitioned) program."""
    try:
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float((cost or {}).get("flops", 0.0))
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return 0.0


@gin.configurable
def train(
    objective: Objective | Callable[[], Objective] = gin.REQUIRED,
    train_data: DataFactory = gin.REQUIRED,
    num_train_steps: int = gin.REQUIRED,
    workdir: str = gin.REQUIRED,
    *,
    eval_data: DataFactory | None = None,
    eval_every: int = 0,
    eval_batches: int | None = None,
    mesh_config: MeshConfig | None = None,
    axis_rules: Sequence[tuple[str, Any]] | None = None,
    checkpoint: CheckpointConfig | None = None,
    num_microbatches: int = 1,
    compute_dtype: str = "bfloat16",
    seed: int = 0,
    log_every: int = 100,
    max_nonfinite_streak: int = 10,
    peak_flops: float | None = None,
    devices: Sequence[jax.Device] | None = None,
    on_step: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Trains `objective` for `num_train_steps` optimizer steps, resuming from `workdir`.

    mesh_config / axis_rules / checkpoint: default to the gin-bound MeshConfig(), axis_rules(),
      CheckpointConfig(). compute_dtype: forward-pass dtype of the params (f32 masters kept).
    eval_every: steps between evals over `eval_data` (up to `eval_batches` batches); 0 disables.
    max_nonfinite_streak: NaN/Inf steps in a row (updates skipped) before NonFiniteError.
    peak_flops: per-device peak FLOP/s for MFU (default from the device kind; None on CPU).
    devices: the devices to lay the mesh over (default: all, across processes).
    on_step(step, metrics): per-step host callback (synchronises every step; tests use it).
    progress: receives the progress line (default: print on process 0).
    Returns a TrainResult; on SIGTERM saves at the next step boundary and returns (preempted).
    """
    startup = _Startup()
    distributed.initialize()
    obj = _make_objective(objective)
    mesh = make_mesh(mesh_config or MeshConfig(), devices)
    rules = (
        partitioning.axis_rules(axis_rules) if axis_rules is not None else partitioning.axis_rules()
    )
    ckpt_config = checkpoint or CheckpointConfig()
    options = StepOptions(
        num_microbatches=num_microbatches,
        compute_dtype=jnp.dtype(compute_dtype),
        max_nonfinite_streak=max_nonfinite_streak,
    )
    program = build_program(obj, mesh, rules, options, num_train_steps)
    if eval_every and (eval_data is None or program.eval_step is None):
        raise ValueError("train.eval_every is set but eval_data or Objective.eval_step is missing.")
    if progress is None:
        progress = (
            (lambda line: print(line, flush=True)) if jax.process_index() == 0 else (lambda _: None)
        )

    ckpt_dir = os.path.join(os.fspath(workdir), "checkpoints")
    ckpt = Checkpointer(ckpt_dir, ckpt_config)
    writer = MetricsWriter(os.path.join(os.fspath(workdir), "tensorboard"))
    shard_index, shard_count = distributed.process_batch_shard(program.batch_sharding)
    data = train_data(shard_index=shard_index, shard_count=shard_count)
    to_global = _Batches(program, shard_count)
    warned: list = []
    startup.mark("program")
    try:
        # Installed before restore and compilation: a SIGTERM then waits for the first step boundary.
        with PreemptionWatcher() as watcher:
            restored = ckpt.restore(program.abstract_state)
            if restored is not None:
                state, step = restored.state, restored.step
                data_state = (restored.data_states or [None] * jax.process_count())[
                    jax.process_index()
                ]
                if data_state is not None and hasattr(data, "set_state"):
                    data.set_state(data_state)
                progress(f"resumed from {ckpt_dir}/{step}")
            else:
                state, step = program.init(seed_rng(seed)), 0
            if step >= num_train_steps:
                return TrainResult(step, False, {}, {}, 0.0, ckpt_dir)
            startup.mark("state")
            first = _next_batch(data, step)
            startup.mark("first batch")
            shapes = to_global.global_shapes(first)
            _check_batch(shapes, program, num_microbatches)
            abstract_batch = program.abstract_batch(shapes)
            cost = obj.step_cost(abstract_batch)
            flops = cost.flops or _xla_flops(
                program.train_step.lower(program.abstract_state, abstract_batch)
            )
            startup.mark("cost")
            throughput = Throughput(
                tokens=cost.tokens,
                audio_seconds=cost.audio_seconds,
                flops=flops,
                num_devices=mesh.devices.size,
                peak_flops=peak_flops or peak_flops_per_device(),
            )
            # The jitted function, not an AOT `Compiled`: its C++ dispatch path is much cheaper per call.
            train_step = program.train_step
            config_text = gin.operative_config_str()
            write_operative_config(ckpt_dir, config_text)

            def evaluate(state) -> dict[str, float]:
                history = []
                for i, batch in enumerate(
                    eval_data(shard_index=shard_index, shard_count=shard_count)
                ):
                    if eval_batches is not None and i >= eval_batches:
                        break
                    history.append(program.eval_step(state, to_global(batch)))
                if not history:
                    raise ValueError("eval_data yielded no batches.")
                out = {f"eval/{k}": v for k, v in mean_metrics(jax.device_get(history)).items()}
                if ckpt_config.best_metric and ckpt_config.best_metric not in out:
                    raise KeyError(
                        f"CheckpointConfig.best_metric={ckpt_config.best_metric!r} is not an eval "
                        f"metric; choose one of {sorted(out)}."
                    )
                writer.scalars(step, out)
                progress(
                    f"step {step} | " + " | ".join(f"{k} {v:.4f}" for k, v in sorted(out.items()))
                )
                return out

            history: list = []  # device metrics since the last log line
            previous = None  # the previous step's metrics, for the non-finite latch
            last_metrics: dict[str, float] = {}
            eval_metrics: dict[str, float] = {}
            preempted = False
            seconds = 0.0
            t_log, steps_since_log = time.perf_counter(), 0
            t_steady, steady_from = None, step
            batch = first
            while step < num_train_steps:
                state, metrics = train_step(state, to_global(batch))
                step += 1
                steps_since_log += 1
                if previous is not None and bool(previous["halted"]):  # keeps one step in flight
                    break
                history.append(metrics)
                previous = metrics
                if t_steady is None:
                    jax.block_until_ready(metrics)
                    t_steady, steady_from = time.perf_counter(), step
                    startup.mark("first step")
                    progress(startup.line())
                if on_step is not None:
                    on_step(step, jax.device_get(metrics))
                final = step == num_train_steps
                eval_now = bool(eval_every) and (step % eval_every == 0 or final)
                stop = watcher.should_stop(step)
                save_now = (
                    final
                    or stop
                    or (ckpt_config.every_steps and step % ckpt_config.every_steps == 0)
                    or (eval_now and ckpt_config.best_metric is not None)
                )
                if step % log_every == 0 or final or save_now:
                    host = mean_metrics(jax.device_get(history))
                    history = []
                    if host["halted"]:
                        break
                    now = time.perf_counter()
                    host.update(throughput.rates((now - t_log) / max(steps_since_log, 1)))
                    host.update(memory_in_use())
                    t_log, steps_since_log = now, 0
                    writer.scalars(step, host, prefix="train/")
                    progress(progress_line(step, num_train_steps, host))
                    last_metrics = host
                if eval_now:
                    try:
                        eval_metrics = evaluate(state)
                    except Exception as e:  # noqa: BLE001
                        # A scheduler's SIGTERM often reaches the whole process group, compiler
                        # subprocesses (ptxas) included: an eval compiling at that moment fails, but the
                        # train state is intact and must still be saved.
                        if not watcher.signalled:
                            raise
                        logging.warning(
                            "eval at step %d failed during preemption (%s); saving without it",
                            step,
                            e,
                        )
                        eval_now, stop, save_now = False, True, True
                if save_now:
                    if final or stop:
                        jax.block_until_ready(state)
                        seconds = (time.perf_counter() - t_steady) / max(step - steady_from, 1)
                    data_state = _iterator_state(data, warned)
                    ckpt.save(
                        step,
                        state,
                        data_states=distributed.allgather_json(data_state),
                        metrics=eval_metrics if eval_now else None,
                        config_text=config_text,
                    )
                if stop:
                    preempted = True
                    progress(f"preempted: saved step {step} to {ckpt_dir}")
                    break
                if not final:
                    batch = _next_batch(data, step)
            halted = bool(jax.device_get(state.halted))
            ckpt.wait()
            if halted:
                latest = ckpt.latest_step()
                raise NonFiniteError(
                    f"stopped at step {step}: {max_nonfinite_streak} steps in a row had a non-finite loss or "
                    f"gradient (updates skipped; {int(jax.device_get(state.nonfinite_total))} in all). "
                    f"Last good checkpoint: {ckpt_dir}/{latest}. Lower the learning rate or inspect the "
                    f"data near step {step}."
                )
            return TrainResult(
                step=step,
                preempted=preempted,
                metrics=last_metrics,
                eval_metrics=eval_metrics,
                seconds_per_step=seconds,
                checkpoint_dir=ckpt_dir,
            )
    finally:
        ckpt.close()
        writer.close()
