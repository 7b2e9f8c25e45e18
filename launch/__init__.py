"""Launchers for audiolm-jax experiments: Cloud TPU (`python -m launch.tpu`) and SLURM GPU
clusters (`python -m launch.slurm`), driven by ml_collections job specs (launch/specs/).

Nothing here imports JAX or the library: a laptop with ml_collections and gcloud can launch.
"""
