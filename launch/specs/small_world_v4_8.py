"""Small-world semantic stage on one v4-8 host (4 chips, 1 worker): the cheapest real TPU run.

    python -m launch.tpu create  --spec launch/specs/small_world_v4_8.py
    python -m launch.tpu install --spec launch/specs/small_world_v4_8.py
    python -m launch.tpu run     --spec launch/specs/small_world_v4_8.py
    python -m launch.tpu delete  --spec launch/specs/small_world_v4_8.py

The committed tree at HEAD is shipped with scp (no repository URL needed). Edit BUCKET and
ZONE for your project; the corpus and token cache are read from where the gin files point.
"""
from launch import spec

BUCKET = "gs://audiolm-jax-runs"  # your GCS bucket
ZONE = "us-central2-b"            # a zone with v4 quota


def get_config():
    config = spec.tpu_job()
    config.name = "aj-small-world-semantic"
    config.tpu.zone = ZONE
    config.tpu.accelerator_type = "v4-8"
    config.tpu.capacity = "spot"
    config.source.method = "scp"
    config.source.ref = "HEAD"
    config.experiment.gin_files = ["experiments/stage_semantic_speech_small_world.gin"]
    config.experiment.gin_bindings = [f"train.workdir='{BUCKET}/small-world/semantic'"]
    config.experiment.env = {"TF_CPP_MIN_LOG_LEVEL": "3"}
    return config
