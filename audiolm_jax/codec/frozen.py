"""A trained codec, frozen, for the stages after it: `load_codec(checkpoint_dir) -> SoundStream`.

The codec trainer checkpoints a `CodecGAN` (generator + discriminators + optimizer state); the
tokenizer, the generation pipeline and the `audiolm-jax codec` command need only the generator.
`load_codec` reads the model item of the checkpoint untargeted, keeps the `generator` sub-tree
(or the whole tree, for a checkpoint of a bare SoundStream), checks it against the configured
SoundStream and returns the model with its trained RVQ codebooks.

The SoundStream's shape comes from gin: by default the operative config the trainer wrote beside
the checkpoints (`checkpoints/operative_config.gin`), else the given gin files. Only the
unscoped `SoundStreamConfig.*` bindings are read, by gin's own parser, without touching the
process's gin state -- a job that runs under its own gin config can load a codec safely.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flax import nnx

from audiolm_jax import config as gin_paths
from audiolm_jax.codec.soundstream import SoundStream, SoundStreamConfig
from audiolm_jax.gin_reader import dataclass_from_gin

OPERATIVE_CONFIG = "operative_config.gin"   # as written by audiolm_jax.training.checkpoint
_CODEC_KEYS = frozenset({"encoder", "quantizer", "decoder"})


# --- the model's config from gin text, without gin's global state ------------------------------

def soundstream_config_from_gin(texts: Sequence[tuple[str, str]]) -> SoundStreamConfig:
    """The SoundStreamConfig bound by gin `texts` ([(text, source name)], later ones win).

    Unbound fields keep the dataclass defaults (the paper's speech codec); scoped bindings
    (`scope/SoundStreamConfig.x`) are ignored, as the codec trainer binds none.
    """
    return dataclass_from_gin(SoundStreamConfig, texts)


# --- where the checkpoint is -------------------------------------------------------------------

def resolve_checkpoint_dir(path: str | os.PathLike) -> tuple[str, int | None]:
    """(the directory holding step folders, a step or None) for a trainer workdir, its
    `checkpoints/` folder, or one step folder (`checkpoints/1000`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"codec checkpoint {path} does not exist; pass the codec "
                                "trainer's workdir, its checkpoints/ folder or one step folder")
    if path.name.isdigit() and (path / "model").is_dir():
        return str(path.parent), int(path.name)
    if (path / "checkpoints").is_dir() and not any(p.name.isdigit() for p in path.iterdir()):
        return str(path / "checkpoints"), None
    return str(path), None


def _plain(tree: Any) -> Any:
    return {str(k): _plain(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _codec_tree(saved: Mapping, where: str) -> Mapping:
    if "generator" in saved and _CODEC_KEYS <= set(saved["generator"]):
        return saved["generator"]
    if _CODEC_KEYS <= set(saved):
        return saved
    raise ValueError(f"{where}: no SoundStream in this checkpoint (top-level entries "
                     f"{sorted(saved)[:10]}); is it a codec checkpoint?")


# --- the loader --------------------------------------------------------------------------------

def load_codec(checkpoint_dir: str | os.PathLike, gin_file: str | Sequence[str] | None = None, *,
               gin_bindings: Sequence[str] = (), step: int | None = None,
               compute_dtype: str | None = None) -> SoundStream:
    """The trained SoundStream of a codec checkpoint, params and RVQ codebooks restored.

    checkpoint_dir: the trainer's workdir, its `checkpoints/` folder, one step folder, or an
      export of the generator (`audiolm-jax export --prefix generator`).
    gin_file: gin file(s) (paths or names under gin/) that configure the codec; None reads the
      operative config beside the checkpoints. gin_bindings: extra `SoundStreamConfig.x = v`.
    step: None for the newest readable checkpoint (or the step folder given).
    compute_dtype: override the conv dtype it was trained with (e.g. "float32" on CPU).
    Raises FileNotFoundError (no checkpoint / no config), CheckpointMismatchError (the config
    does not fit the weights) or ValueError (not a codec checkpoint, bad gin).
    """
    from audiolm_jax.training.checkpoint import check_compatible, load_params  # noqa: PLC0415
    from audiolm_jax.training.state import from_pure, to_pure  # noqa: PLC0415

    from audiolm_jax.training import export  # noqa: PLC0415

    is_export = (Path(checkpoint_dir) / export.MANIFEST).is_file()
    ckpt_dir, folder_step = ((os.fspath(checkpoint_dir), None) if is_export
                             else resolve_checkpoint_dir(checkpoint_dir))
    step = folder_step if step is None else step
    if gin_file is None:
        operative = Path(ckpt_dir) / OPERATIVE_CONFIG
        if not operative.is_file():
            raise FileNotFoundError(
                f"{operative} is missing, so the codec's config is unknown; pass gin_file= "
                "(--gin_file) with the model config it was trained with, e.g. "
                "models/codec_paper_speech")
        texts = [(operative.read_text(), str(operative))]
    else:
        files = [gin_file] if isinstance(gin_file, (str, os.PathLike)) else list(gin_file)
        paths = [gin_paths.resolve_gin_file(os.fspath(f)) for f in files]
        texts = [(Path(p).read_text(), p) for p in paths]
    texts += [(binding, "--gin binding") for binding in gin_bindings]
    codec_config = soundstream_config_from_gin(texts)
    if compute_dtype is not None:
        codec_config = dataclasses.replace(codec_config, compute_dtype=compute_dtype)

    if is_export:  # `audiolm-jax export --prefix generator`: EMA statistics may be left out
        model = export.restore_model(lambda rngs: SoundStream(codec_config, rngs=rngs),
                                     export.load_export(ckpt_dir),
                                     optional=("embed_sum", "cluster_size"))
        model.eval()
        return model
    where = ckpt_dir if step is None else os.path.join(ckpt_dir, str(step))
    saved = _codec_tree(_plain(load_params(ckpt_dir, step)), where)
    graphdef, template = nnx.split(nnx.eval_shape(lambda: SoundStream(codec_config,
                                                                      rngs=nnx.Rngs(0))))
    check_compatible("generator", saved, to_pure(template), where)
    model = nnx.merge(graphdef, from_pure(template, saved))
    model.eval()
    return model
