"""Frozen exports: checkpoint -> checksummed npz shards -> the same model, no pickle."""
import jax
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.training.export import ExportError, export_checkpoint, load_export, restore_model
from audiolm_jax.training.mesh import MeshConfig
from audiolm_jax.training.trainer import train
from tiny_models import make_lm_objective, token_data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    objective = make_lm_objective()
    train(objective=objective, train_data=token_data(8), num_train_steps=2, workdir=str(workdir),
          mesh_config=MeshConfig(1, 1, 1), devices=jax.devices()[:1], compute_dtype="float32",
          progress=lambda _: None)
    return objective, workdir / "checkpoints"


def test_export_round_trip_restores_the_trained_values(trained, tmp_path):
    objective, ckpt = trained
    out = export_checkpoint(ckpt, tmp_path / "export", shard_bytes=2048)
    arrays = load_export(out)
    assert len(list(out.glob("arrays-*.npz"))) > 1  # the size cap splits shards
    assert (out / "operative_config.gin").exists()
    model = restore_model(objective.create_model, arrays)
    restored = {"/".join(map(str, p)): np.asarray(v.get_value())
                for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert restored and all(np.array_equal(arrays[k], v) for k, v in restored.items())
    with nnx.use_eager_sharding(False):
        untrained = objective.create_model(nnx.Rngs(0))
    fresh = {"/".join(map(str, p)): np.asarray(v.get_value())
             for p, v in nnx.to_flat_state(nnx.state(untrained, nnx.Param))}
    assert any(not np.array_equal(fresh[k], restored[k]) for k in restored)  # training moved them


def test_tampered_or_missing_shards_are_refused(trained, tmp_path):
    _, ckpt = trained
    out = export_checkpoint(ckpt, tmp_path / "export")
    shard = next(out.glob("arrays-*.npz"))
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="checksum mismatch"):
        load_export(out)
    shard.unlink()
    with pytest.raises(ExportError, match="shard missing"):
        load_export(out)
    with pytest.raises(ExportError, match="no manifest.json"):
        load_export(tmp_path)


def test_prefix_that_matches_nothing_is_an_error(trained, tmp_path):
    _, ckpt = trained
    with pytest.raises(ExportError, match="no variables under 'generator'"):
        export_checkpoint(ckpt, tmp_path / "x", prefix="generator")


def test_inference_export_drops_state_and_casts_floats(trained, tmp_path):
    objective, ckpt = trained
    out = export_checkpoint(ckpt, tmp_path / "small", exclude=("running_norm",),
                            float_dtype="bfloat16", keep_float32=("embedding",))
    arrays = load_export(out)
    assert "running_norm" not in arrays
    assert arrays["embed/embedding"].dtype == np.float32
    assert str(arrays["out/kernel"].dtype) == "bfloat16"
    with pytest.raises(ExportError, match="running_norm"):
        restore_model(objective.create_model, arrays)
    model = restore_model(objective.create_model, arrays, optional=("running_norm",))
    assert nnx.state(model, nnx.Param)["out"]["kernel"].get_value().dtype == np.float32
