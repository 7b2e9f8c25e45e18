"""The SoundStream a codec benchmark measures: its config from gin, and its weights either random
(speed does not depend on them) or read-only from a training checkpoint.

Checkpoints are read with `audiolm_jax.training.checkpoint.load_params`, untargeted, so the saved
model may be the bare SoundStream or a training module holding it (a GAN objective's generator
and discriminators): the sub-tree with SoundStream's `encoder`, `quantizer` and `decoder` is used.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

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


def latest_step(checkpoint_dir: str | os.PathLike) -> int:
    """The newest step saved under `checkpoint_dir`; NoCheckpointError if there is none."""
    from audiolm_jax.training.checkpoint import Checkpointer, NoCheckpointError  # noqa: PLC0415
    ckpt = Checkpointer(checkpoint_dir, read_only=True, items=("model",))
    try:
        step = ckpt.latest_step()
    finally:
        ckpt.close()
    if step is None:
        raise NoCheckpointError(f"no checkpoint step directories in {os.fspath(checkpoint_dir)}; "
                                "pass the directory that holds them (the trainer's checkpoint dir)")
    return step


def _plain(tree: Any) -> Any:
    return {str(k): _plain(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def find_codec_tree(saved: Mapping, where: str) -> Mapping:
    """The sub-dict of a saved model that holds a SoundStream's variables."""
    found: list[tuple[str, Mapping]] = []
    stack: list[tuple[str, Any]] = [("", saved)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if _CODEC_KEYS <= set(node):
            found.append((path or "/", node))
            continue
        stack += [(f"{path}/{k}", v) for k, v in node.items()]
    if len(found) != 1:
        tops = sorted(saved)[:12]
        detail = (f"several ({[p for p, _ in found]})" if found
                  else f"none (top-level keys {tops})")
        raise ValueError(f"{where}: expected exactly one SoundStream sub-tree (keys encoder, "
                         f"quantizer, decoder) in the saved model, found {detail}; is this a "
                         "codec checkpoint?")
    return found[0][1]


def restore_codec(config: SoundStreamConfig, checkpoint_dir: str | os.PathLike,
                  step: int | None = None) -> tuple[SoundStream, int]:
    """(the SoundStream with the checkpoint's variables, the step read). step None: the newest.
    Raises CheckpointMismatchError naming the parameters when `config` does not fit the weights."""
    from audiolm_jax.training.checkpoint import check_compatible, load_params  # noqa: PLC0415
    from audiolm_jax.training.state import from_pure, to_pure  # noqa: PLC0415
    step = latest_step(checkpoint_dir) if step is None else step
    where = os.path.join(os.fspath(checkpoint_dir), str(step))
    saved = find_codec_tree(_plain(load_params(checkpoint_dir, step)), where)
    graphdef, template = nnx.split(nnx.eval_shape(lambda: SoundStream(config, rngs=nnx.Rngs(0))))
    check_compatible("codec", saved, to_pure(template), where)
    return nnx.merge(graphdef, from_pure(template, saved)), step


def build_codec(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), *,
                checkpoint: str | os.PathLike | None = None, step: int | None = None,
                seed: int = 0) -> tuple[SoundStream, dict]:
    """The benchmark's model and a JSON-able description of where it came from: from
    `checkpoint` if given, else randomly initialised with `seed`."""
    cfg = codec_config(gin_files, gin_bindings)
    source: dict[str, Any] = {"gin_files": list(gin_files), "gin_bindings": list(gin_bindings)}
    if checkpoint is not None:
        model, step = restore_codec(cfg, checkpoint, step)
        source.update(checkpoint=os.path.abspath(os.fspath(checkpoint)), checkpoint_step=step,
                      random_init=False)
    else:
        model = init_codec(cfg, seed)
        source.update(checkpoint=None, checkpoint_step=None, random_init=True, seed=seed)
    source["num_params"] = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    source["config"] = dataclasses.asdict(cfg)
    return model, source
