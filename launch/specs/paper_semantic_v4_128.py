"""Paper-size semantic stage (12 layers, 16 heads, d=1024) on a v4-128 pod slice: 64 chips on
16 hosts, one JAX process per host; `install` and `run` reach all 16 with --worker=all.

The committed tree at HEAD is copied to every worker; to have the workers clone instead, pass
--spec.source.method=git --spec.source.repo_url=URL --spec.source.ref=REF.
"""
from launch import spec

BUCKET = "gs://audiolm-jax-runs"  # your GCS bucket
ZONE = "us-central2-b"            # a zone with v4 pod quota


def get_config():
    config = spec.tpu_job()
    config.name = "aj-paper-semantic-v4-128"
    config.tpu.zone = ZONE
    config.tpu.accelerator_type = "v4-128"
    config.source.method = "scp"
    config.source.ref = "HEAD"
    config.experiment.gin_files = ["experiments/stage_semantic_speech_paper.gin"]
    config.experiment.gin_bindings = [f"train.workdir='{BUCKET}/paper/semantic v4-128'"]
    return config
