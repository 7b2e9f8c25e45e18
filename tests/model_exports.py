"""Exports of tiny models for tests that load runs from disk (`training.export` format)."""
import jax
import numpy as np
from flax import nnx

from audiolm_jax.training.export import write_export


def export_model(model, path, gin_text: str) -> str:
    """`model`'s arrays (PRNG keys left out) written as an export with `gin_text` as its config."""
    arrays = {"/".join(map(str, p)): np.asarray(v.get_value())
              for p, v in nnx.to_flat_state(nnx.state(model))
              if not jax.dtypes.issubdtype(v.get_value().dtype, jax.dtypes.prng_key)}
    write_export(arrays, path, config_text=gin_text)
    return str(path)


def tiny_codec(seed: int = 0):
    """(the models/codec_tiny SoundStream in eval mode, its gin file)."""
    from audiolm_jax.codec.frozen import soundstream_config_from_gin
    from audiolm_jax.codec.soundstream import SoundStream
    from audiolm_jax.config import resolve_gin_file

    gin_file = resolve_gin_file("models/codec_tiny")
    codec = SoundStream(soundstream_config_from_gin([(open(gin_file).read(), gin_file)]),
                        rngs=nnx.Rngs(seed))
    codec.eval()
    return codec, gin_file
