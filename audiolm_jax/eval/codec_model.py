"""The SoundStream a codec benchmark measures: its config from gin, and its weights either random
(speed does not depend on them) or read-only from a training checkpoint.

Checkpoints are read with `audiolm_jax.training.checkpoint.load_params`, untargeted, so the saved
model may be the bare SoundStream or a training module holding it (a GAN objective's generator
and discriminators): the sub-tree with SoundStream's `encoder`, `quantizer` and `decoder` is used.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import gin
import jax
from flax import nnx

from audiolm_jax import config as gin_config
from audiolm_jax.codec.soundstream import SoundStream, SoundStreamConfig

_CODEC_KEYS = frozenset({"encoder", "quantizer", "decoder"})


def codec_config(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> SoundStreamConfig:
    """The SoundStreamConfig bound by `gin_files` (paths or names under gin/, e.g.
    "models/codec_paper_speech") and `gin_bindings` ("SoundStreamConfig.channels = 8").
    Clears the process's gin config before and after: the config is returned, not left bound."""
    gin.clear_config()
    try:
        gin_config.parse_gin(gin_files, gin_bindings, finalize=False)
        return SoundStreamConfig()
    finally:
        gin.clear_config()


def init_codec(config: SoundStreamConfig, seed: int = 0) -> SoundStream:
    """A randomly initialised SoundStream, built in one jitted program (one compile instead of
    one per parameter shape). The "rbg" PRNG and, on CPU, an unoptimised compile keep this
    one-off program quick to build (3-4x faster than threefry at full optimisation)."""
    def make():
        return SoundStream(config, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))
    graphdef = nnx.graphdef(nnx.eval_shape(make))
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()), compiler_options=options)())


def build_codec(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), *,
                checkpoint: str | os.PathLike | None = None, step: int | None = None,
                seed: int = 0) -> tuple[SoundStream, dict]:
    """The benchmark's model and a JSON-able description of where it came from: from
    `checkpoint` if given, else randomly initialised with `seed`."""
    cfg = codec_config(gin_files, gin_bindings)
    source: dict[str, Any] = {"gin_files": list(gin_files), "gin_bindings": list(gin_bindings)}
    if checkpoint is not None:
        from audiolm_jax.codec.frozen import load_codec  # noqa: PLC0415
        model = load_codec(checkpoint, list(gin_files) or None, gin_bindings=gin_bindings, step=step)
        cfg = model.config
        source.update(checkpoint=os.path.abspath(os.fspath(checkpoint)), checkpoint_step=step,
                      random_init=False)
    else:
        model = init_codec(cfg, seed)
        source.update(checkpoint=None, checkpoint_step=None, random_init=True, seed=seed)
    source["num_params"] = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    source["config"] = dataclasses.asdict(cfg)
    return model, source
