"""The paper-size semantic stage on a SLURM cluster: 2 nodes x 8 GPUs, one process per GPU.

    python -m launch.slurm --spec launch/specs/paper_semantic_gpu_2x8.py [--dry-run]

WORKDIR is the checkout on the shared filesystem, with its venv at WORKDIR/.venv
(`python3.11 -m venv .venv && .venv/bin/pip install -e .[data] 'jax[cuda12]==0.10.2'`).
"""
from launch import spec

WORKDIR = "/shared/audiolm-jax"  # your checkout on the shared filesystem
PARTITION = "gpu"                # your GPU partition


def get_config():
    config = spec.slurm_job()
    config.name = "aj-paper-semantic-gpu-2x8"
    config.slurm.nodes = 2
    config.slurm.gpus_per_node = 8
    config.slurm.process_per = "gpu"
    config.slurm.cpus_per_task = 12
    config.slurm.time = "2-00:00:00"
    config.slurm.partition = PARTITION
    config.slurm.workdir = WORKDIR
    config.experiment.gin_files = ["experiments/stage_semantic_speech_paper.gin"]
    config.experiment.gin_bindings = ["train.workdir='/shared/runs/paper/semantic gpu-2x8'"]
    return config
