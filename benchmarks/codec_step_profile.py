"""Where a codec training step spends its time (issue #5: more codec steps per time box).

The small-world chains train SoundStream for a fixed time box (~1600 steps in 500 s on an H200
beside w2v-BERT), far from the hours the paper's quality needs, so the step's speed bounds the
codec. This times the step the trainer runs (`training.program.build_program` over the gin
experiment's CodecObjective: both optimizers, bf16 compute, state donated) on random audio in two
phases and profiles each on the GPU, summing kernel time by category (benchmarks/kernel_trace.py):

  reconstruction   before `discriminator_start_step`: generator losses only
  gan              after it: discriminators, adversarial and feature-matching terms too

with XLA's FLOP count of the compiled step and, since on the GPU that count misses the cuDNN
convolutions, the FLOPs of the phase's losses and gradients counted on HLO lowered for the CPU
(`loss_flops`), against the device's bf16 datasheet peak (audiolm_jax/device_specs.py: 989
TFLOP/s on an H100/H200). The kernel sums say what each phase really runs.

    python3 benchmarks/codec_step_profile.py --out results/codec_step_profile.json
    python3 benchmarks/codec_step_profile.py --gin experiments/codec_tiny_cpu --batch 2 \\
        --seconds 0.5 --steps 2 --no-profile --out /tmp/codec_step.json      # CPU smoke
    python3 benchmarks/codec_step_profile.py --phases gan       # one phase alone

`--out` is rewritten after each phase with the phases done so far ("complete": false until the
last one), so a run killed by a time limit keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from audiolm_jax.device_specs import peak_flops_per_device  # noqa: E402

PHASES = ("reconstruction", "gan")


def build(gin_file: str, bindings: list[str], start_step: int):
    """The trainer's Program for the gin experiment's codec objective, with the discriminators
    starting at `start_step`."""
    import gin  # noqa: PLC0415

    from audiolm_jax import config as gin_config  # noqa: PLC0415
    from audiolm_jax.codec.objective import CodecObjective  # noqa: PLC0415
    from audiolm_jax.training import partitioning  # noqa: PLC0415
    from audiolm_jax.training.mesh import MeshConfig, make_mesh  # noqa: PLC0415
    from audiolm_jax.training.program import build_program  # noqa: PLC0415
    from audiolm_jax.training.step import StepOptions  # noqa: PLC0415

    gin.clear_config()
    gin_config.parse_gin([gin_file], [*bindings,
                                      f"CodecObjective.discriminator_start_step = {start_step}"],
                         finalize=False)
    objective = CodecObjective()
    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    options = StepOptions(compute_dtype=jax.numpy.bfloat16 if jax.default_backend() != "cpu"
                          else jax.numpy.float32)
    return build_program(objective, mesh, partitioning.axis_rules(), options, 10**6), objective


def loss_flops(objective, audio_shape: tuple[int, int], phase: str) -> float:
    """FLOPs of one step's losses and the gradients the trainer takes (the generator loss with
    respect to the generator's parameters; in the gan phase also the discriminator loss, with
    the generator forward it repeats, with respect to the discriminators'), counted on the HLO
    lowered for the CPU. Why: on the GPU the convolutions are cuDNN custom calls that XLA's cost
    analysis counts as 0 (session 8: "0.4 TFLOP/s" for a step of ~2.5 TFLOP); lowered for the
    CPU they stay convolutions. Optimizer updates and RVQ bookkeeping are not counted."""
    from flax import nnx  # noqa: PLC0415

    from audiolm_jax.training.state import from_pure, to_pure  # noqa: PLC0415

    model = nnx.eval_shape(lambda: objective.create_model(nnx.Rngs(0)))
    groups = (nnx.All(nnx.Param, nnx.PathContains("generator")),
              nnx.All(nnx.Param, nnx.PathContains("discriminators")), ...)
    graph, *templates = nnx.split(model, *groups)
    # Pure arrays in, Variables rebuilt inside the trace (as the trainer's step does), so the RVQ
    # state the forward writes belongs to the traced function.
    pure = [to_pure(t) for t in templates]
    merge = lambda parts: nnx.merge(graph, *(from_pure(t, p)  # noqa: E731
                                             for t, p in zip(templates, parts)))
    batch = {"audio": jax.ShapeDtypeStruct(audio_shape, np.float32)}
    key = jax.random.key(0)
    cfg = objective.loss_config

    def reconstruction(gan, batch):   # the generator loss before the discriminators start
        _, _, spectral, out = objective.reconstruction_terms(gan, batch, key)
        return cfg.reconstruction_weight * spectral + out.commitment_loss

    def objective_loss(method):
        return lambda gan, batch: method(gan, batch, key, 10**9)[0]

    # (loss of the model, index of the parameter group its gradient is taken for)
    losses = [(reconstruction, 0)] if phase == "reconstruction" else [
        (objective_loss(objective.generator_loss), 0),
        (objective_loss(objective.discriminator_loss), 1)]
    total = 0.0
    for loss, group in losses:
        def of_group(own, others, batch, loss=loss, group=group):
            parts = list(others)
            parts.insert(group, own)
            return loss(merge(parts), batch)
        others = [p for i, p in enumerate(pure) if i != group]
        lowered = jax.jit(jax.grad(of_group)).trace(pure[group], others, batch).lower(
            lowering_platforms=("cpu",))
        cost = lowered.cost_analysis()
        total += float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    return total


def time_phase(program, batch: dict, steps: int, warmup: int = 2) -> dict:
    state = program.init(jax.random.key_data(jax.random.key(0)))
    start = time.perf_counter()
    state, metrics = program.train_step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        state, metrics = program.train_step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = program.train_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return {"ms_per_step": 1e3 * float(np.median(times)),
            "ms_all": [round(1e3 * t, 2) for t in times],
            "first_call_s_with_compile": round(compile_s, 2), "state": state}


def xla_flops(program, state, batch: dict) -> float:
    """XLA's FLOP count of the lowered step (no second compile: on a fresh GPU machine that is
    minutes of autotuning again, and session 28's run was cut during it before printing its
    step time)."""
    cost = program.train_step.lower(state, batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def profile(program, state, batch: dict, steps: int) -> dict:
    from kernel_trace import kernel_summary  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(steps):
                state, metrics = program.train_step(state, batch)
            jax.block_until_ready(metrics)
        return kernel_summary(directory, steps)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gin", default="experiments/codec_speech_small_world")
    p.add_argument("--gin-binding", action="append", default=[])
    p.add_argument("--batch", type=int, default=32, help="crops per step (the config's: 32)")
    p.add_argument("--seconds", type=float, default=2.0, help="crop length (the config's: 2 s)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma list of phases to run, in order (default {','.join(PHASES)})")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--profile-steps", type=int, default=3,
                   help="steps traced by the GPU kernel profile (default 3)")
    p.add_argument("--out", default="results/codec_step_profile.json")
    args = p.parse_args(argv)
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if not phases or any(x not in PHASES for x in phases) or len(set(phases)) < len(phases):
        p.error(f"--phases {args.phases!r}: a comma list of distinct names from {PHASES}")
    if args.profile_steps < 1:
        p.error(f"--profile-steps must be >= 1, got {args.profile_steps}")

    from audiolm_jax.eval.run_info import (command_line, machine_info,  # noqa: PLC0415
                                           utc_now, write_json)

    rng = np.random.default_rng(0)
    samples = int(args.seconds * 16000)
    audio = (0.1 * rng.standard_normal((args.batch, samples))).astype(np.float32)
    result = {"benchmark": "codec_step_profile", "gin": args.gin, "bindings": args.gin_binding,
              "batch": args.batch, "crop_seconds": args.seconds, "backend": jax.default_backend(),
              "device": jax.devices()[0].device_kind, "phases_requested": phases, "phases": {},
              "complete": False, "command": command_line(), "machine": machine_info()}
    for phase in phases:
        program, objective = build(args.gin, args.gin_binding,
                                   10**9 if phase == "reconstruction" else 0)
        batch = {"audio": jax.device_put(audio, program.batch_sharding)}
        row = time_phase(program, batch, args.steps)
        state = row.pop("state")
        seconds = row["ms_per_step"] / 1e3
        row["audio_seconds_per_second"] = args.batch * args.seconds / seconds
        print(f"{phase}: {row['ms_per_step']:.1f} ms/step, "
              f"{row['audio_seconds_per_second']:.0f} audio-s/s, first call "
              f"{row['first_call_s_with_compile']:.1f} s", flush=True)
        result["phases"][phase] = row
        write_json(args.out, result)    # the step time first: the counts below take a while
        row["xla_flops_per_step"] = xla_flops(program, state, batch)
        row["xla_tflops_per_s"] = row["xla_flops_per_step"] / seconds / 1e12
        try:   # jax 0.11 on a GPU machine: cost analysis of a CPU lowering can be None
            row["loss_flops_per_step_cpu_count"] = loss_flops(objective, audio.shape, phase)
        except (TypeError, KeyError) as error:
            print(f"loss_flops: {error!r}; the CPU-lowered FLOP count is left out", flush=True)
            row["loss_flops_per_step_cpu_count"] = 0.0
        row["loss_tflops_per_s"] = row["loss_flops_per_step_cpu_count"] / seconds / 1e12
        peak = peak_flops_per_device()
        if peak:
            row["mfu_xla_flops"] = row["xla_flops_per_step"] / seconds / peak
            row["mfu_loss_flops"] = row["loss_flops_per_step_cpu_count"] / seconds / peak
        if not args.no_profile and jax.default_backend() == "gpu":
            row["kernels"] = profile(program, state, batch, args.profile_steps)
        print(f"{phase}: {row['xla_tflops_per_s']:.1f} TFLOP/s (XLA count), "
              f"{row['loss_tflops_per_s']:.1f} TFLOP/s (losses and gradients, CPU-lowered "
              "count)", flush=True)
        del state
        result["complete"] = phase == phases[-1]
        result["date"] = utc_now()
        write_json(args.out, result)    # after every phase: a killed run keeps the ones done
        print(f"wrote {args.out} ({len(result['phases'])}/{len(phases)} phases)", flush=True)
    return result


if __name__ == "__main__":
    main()
