"""GPU-cluster launcher: an sbatch script that runs a gin experiment on every GPU of N nodes
through jax.distributed.

    python -m launch.slurm --spec launch/specs/paper_semantic_gpu_2x8.py [--dry-run]
    (--spec.FIELD=VALUE overrides a field, e.g. --spec.slurm.nodes=4)

--dry-run prints the script and runs nothing; otherwise it is written to slurm.script_path and
submitted with `sbatch`.

Processes: `slurm.process_per='gpu'` (default) starts one task per GPU, which is what
`jax.distributed.initialize()` assumes when it detects SLURM by itself (it then restricts each
process to GPU $SLURM_LOCALID). `'node'` starts one task per node that drives all its GPUs (one
input pipeline per host, as on TPU); the script then sets JAX_LOCAL_DEVICE_IDS to all of them,
because auto-detection alone would leave each process only GPU 0.

The explicit rendezvous, for a trainer that passes it on (jax itself reads the first and last):
  JAX_COORDINATOR_ADDRESS  host:port of process 0 (first host of the allocation)
  JAX_NUM_PROCESSES        total processes (nodes x gpus_per_node, or nodes)
  JAX_PROCESS_ID           this process ($SLURM_PROCID)
  JAX_LOCAL_DEVICE_IDS     GPUs this process drives ($SLURM_LOCALID, or 0,...,G-1)
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import ml_collections

from launch.spec import SpecError, env_pairs, experiment_argv, load_spec, validate_slurm_job

# jax's own SLURM detection picks this port from the job id; the fallback agrees with it.
_PORT_FROM_JOB_ID = "$((SLURM_JOB_ID % 4096 + 61440))"
# Per task, so evaluated inside the task: SLURM_PROCID / SLURM_LOCALID differ per process.
_TASK_GPU = 'export JAX_PROCESS_ID="$SLURM_PROCID" JAX_LOCAL_DEVICE_IDS="$SLURM_LOCALID"; exec "$@"'
_TASK_NODE = 'export JAX_PROCESS_ID="$SLURM_PROCID"; exec "$@"'


def num_processes(config: ml_collections.ConfigDict) -> int:
    s = config.slurm
    return s.nodes * (s.gpus_per_node if s.process_per == "gpu" else 1)


def script_path(config: ml_collections.ConfigDict) -> str:
    return config.slurm.script_path or f"outputs/launch/{config.name}.sbatch"


def submit_commands(config: ml_collections.ConfigDict) -> list[list[str]]:
    """What a real launch runs on the submit host: the output folder must exist before the job
    starts (SLURM opens --output before the script runs), then sbatch."""
    out_dir = Path(config.slurm.workdir) / Path(config.slurm.output).parent
    return [["mkdir", "-p", str(out_dir)], ["sbatch", script_path(config)]]


def _program(config: ml_collections.ConfigDict) -> list[str]:
    venv = config.slurm.venv.rstrip("/")
    return experiment_argv(config.experiment, f"{venv}/bin/audiolm-jax")


def sbatch_script(config: ml_collections.ConfigDict, spec_path: str = "<spec>") -> str:
    """The whole sbatch script. #SBATCH values are validated to hold no spaces (sbatch, not a
    shell, reads them); every shell word below is quoted with shlex."""
    s = config.slurm
    per_node = s.gpus_per_node if s.process_per == "gpu" else 1
    total = num_processes(config)
    directives = [
        f"--job-name={config.name}",
        f"--nodes={s.nodes}",
        f"--ntasks-per-node={per_node}",
        f"--gpus-per-node={s.gpus_per_node}",
        *([f"--cpus-per-task={s.cpus_per_task}"] if s.cpus_per_task else []),
        f"--time={s.time}",
        *([f"--partition={s.partition}"] if s.partition else []),
        *([f"--account={s.account}"] if s.account else []),
        *(["--exclusive"] if s.exclusive else []),
        f"--chdir={s.workdir}",
        f"--output={s.output}",
        *[str(x) for x in s.extra_sbatch],
    ]
    port = str(s.coordinator_port) if s.coordinator_port else _PORT_FROM_JOB_ID
    lines = ["#!/bin/bash", *[f"#SBATCH {d}" for d in directives],
             f"# audiolm-jax on SLURM: {config.name} (spec {spec_path})".replace("\n", " "),
             f"# {s.nodes} node(s) x {s.gpus_per_node} GPU(s), one process per {s.process_per}: "
             f"{total} JAX process(es).",
             "set -euo pipefail", "",
             "# jax.distributed rendezvous: process 0 runs on the first host of the allocation.",
             'mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
             f"export JAX_COORDINATOR_PORT={port}",
             'export JAX_COORDINATOR_ADDRESS="${hosts[0]}:${JAX_COORDINATOR_PORT}"',
             f"export JAX_NUM_PROCESSES={total}"]
    if s.process_per == "node":
        lines.append("export JAX_LOCAL_DEVICE_IDS=" + ",".join(str(i) for i in range(s.gpus_per_node)))
    lines += ["# NVLink multicast (NVLS) off: NCCL tries it on NVSwitch systems, where it needs",
              "# driver/fabric support not every cluster has; rings and trees work everywhere.",
              "export NCCL_NVLS_ENABLE=0"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env_pairs(config.experiment.env)]
    srun = ["srun", f"--nodes={s.nodes}", f"--ntasks={total}", f"--ntasks-per-node={per_node}",
            "--kill-on-bad-exit=1", "--gpu-bind=none", "bash", "-c", _TASK_GPU if s.process_per == "gpu" else _TASK_NODE,
            "audiolm-jax-task", *_program(config)]
    lines += ["",
              "# One task per process; a task exports its own id, then execs the trainer with the",
              "# argv below untouched (\"$@\"). Single quotes are intended: expanded in the task.",
              "# --gpu-bind=none: every task sees all GPUs of its node, so ids index them.",
              "# shellcheck disable=SC2016",
              shlex.join(srun), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.slurm", allow_abbrev=False,
        description="Write (and submit) an sbatch script for an audiolm-jax experiment.",
        epilog="Override spec fields with --spec.FIELD=VALUE, e.g. --spec.slurm.nodes=4.")
    parser.add_argument("--spec", required=True, help="job spec, e.g. launch/specs/paper_semantic_gpu_2x8.py")
    parser.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    args, overrides = parser.parse_known_args(argv)
    try:
        config = load_spec(args.spec, overrides)
        validate_slurm_job(config, args.spec)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = sbatch_script(config, args.spec)
    path = script_path(config)
    commands = submit_commands(config)
    if args.dry_run:
        print(text, end="")
        runs = "; ".join(shlex.join(c) for c in commands)
        print(f"# dry run: would write {path}, then run: {runs}", file=sys.stderr)
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch is not on PATH: run this on the cluster's login node, or pass --dry-run",
              file=sys.stderr)
        return 2
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    for command in commands:
        rc = subprocess.run(command, check=False).returncode
        if rc:
            print(f"error: {shlex.join(command)} exited with {rc}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
