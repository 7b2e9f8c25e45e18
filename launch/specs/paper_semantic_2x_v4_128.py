"""The paper-size semantic stage on 2 x v4-128 (multislice, 32 hosts over the data-center
network): one queued resource with two nodes. The queued resource sets MEGASCALE_* on every
worker, and JAX spans both slices from them.
"""
from launch.specs import paper_semantic_v4_128


def get_config():
    config = paper_semantic_v4_128.get_config()
    config.name = "aj-paper-semantic-2x-v4-128"
    config.tpu.num_slices = 2
    config.experiment.gin_bindings = [
        f"train.workdir='{paper_semantic_v4_128.BUCKET}/paper/semantic 2x v4-128'"]
    return config
