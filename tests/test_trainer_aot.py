"""Ahead-of-time compilation of the train step on abstract shapes, with memory per device."""

import importlib.util

import jax
import pytest

from audiolm_jax.training.aot import compile_train_step
from audiolm_jax.training.mesh import MeshConfig
from tiny_models import make_gan_objective

BATCH = {"noise": ((16, 4), "float32"), "real": ((16, 8), "float32")}


def test_aot_reports_per_device_memory_of_a_sharded_step(capsys):
    sharded = compile_train_step(
        make_gan_objective(),
        BATCH,
        mesh_config=MeshConfig(2, 2, 2),
        compute_dtype="float32",
        device_memory_bytes=1,
    )
    single = compile_train_step(
        make_gan_objective(),
        BATCH,
        mesh_config=MeshConfig(1, 1, 1),
        devices=jax.devices()[:1],
        compute_dtype="float32",
        print_report=False,
    )
    out = capsys.readouterr().out
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}, per device" in out and "DOES NOT FIT" in out
    assert sharded.fits is False and single.fits is None
    # Params, optimizer state and batch are split over the mesh: less per device than on one.
    assert 0 < sharded.argument_bytes < single.argument_bytes
    assert sharded.alias_bytes > 0  # the state is donated
    assert sharded.peak_bytes > 0 and sharded.flops_per_device > 0


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed")
def test_tpu_topology_without_libtpu_says_what_to_install():
    with pytest.raises(RuntimeError, match="needs libtpu"):
        compile_train_step(make_gan_objective(), BATCH, topology="v5e:2x2", print_report=False)
