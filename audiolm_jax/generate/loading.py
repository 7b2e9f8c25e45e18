"""A trained stage LM, frozen, from a trainer run or an export: `load_stage_model(run)`.

A stage run is a trainer workdir whose operative gin config (`checkpoints/operative_config.gin`,
copied into exports) binds `lm.TransformerConfig`; the model is rebuilt from those bindings with
`audiolm_jax.gin_reader` (gin's global state untouched) and its variables restored read-only.
The same config may bind the stage data (`stage_batches.num_coarse`, `.crop_seconds`), which
generation reads as hints (`stage_data_hints`). A run whose config kept checkpoints best by a
held-out metric (`CheckpointConfig.best_metric`) is loaded at that best step, not its newest: a
stage trained on a small corpus memorises it, and its newest step is its most overfitted.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from audiolm_jax.gin_reader import configurable_bindings, dataclass_from_gin
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.training.checkpoint import OPERATIVE_CONFIG

_DATA_CONFIGURABLE = "stage_batches"


def _locate(run: str | os.PathLike) -> tuple[str, int | None, bool]:
    """(directory holding the steps or the export, step or None, is an export)."""
    from audiolm_jax.codec.frozen import resolve_checkpoint_dir  # noqa: PLC0415
    from audiolm_jax.training import export  # noqa: PLC0415

    if not Path(run).exists():
        raise FileNotFoundError(f"stage run {run} does not exist; pass the stage trainer's "
                                "workdir, its checkpoints/ folder, one step folder or an export")
    if (Path(run) / export.MANIFEST).is_file():
        return os.fspath(run), None, True
    ckpt_dir, step = resolve_checkpoint_dir(run)
    return ckpt_dir, step, False


def _operative_text(ckpt_dir: str, what: str) -> tuple[str, str]:
    path = Path(ckpt_dir) / OPERATIVE_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing, so the {what} model's architecture is "
                                "unknown; pass the stage trainer's workdir (or an export of it), "
                                "which keeps the operative gin config beside the checkpoints")
    return path.read_text(), str(path)


def stage_config_from_run(run: str | os.PathLike, what: str = "stage") -> TransformerConfig:
    """The TransformerConfig a stage run trained with (from its operative gin config)."""
    ckpt_dir, _, _ = _locate(run)
    return dataclass_from_gin(TransformerConfig, [_operative_text(ckpt_dir, what)],
                              require_any=True)


def stage_data_hints(run: str | os.PathLike) -> dict[str, Any]:
    """Unscoped `stage_batches.*` bindings of a stage run (e.g. num_coarse, crop_seconds);
    empty when the run's config binds none or has no operative config."""
    ckpt_dir, _, _ = _locate(run)
    try:
        texts = [_operative_text(ckpt_dir, "stage")]
    except FileNotFoundError:
        return {}
    return {k: v for k, (v, _) in configurable_bindings(texts, _DATA_CONFIGURABLE).items()}


def best_checkpoint_step(run: str | os.PathLike) -> int | None:
    """The step of a trainer run best by the held-out metric its config kept checkpoints by
    (`CheckpointConfig.best_metric` / `best_mode`); None when it names none or no kept step was
    saved with it."""
    from audiolm_jax.training.checkpoint import CheckpointConfig, Checkpointer  # noqa: PLC0415

    ckpt_dir, _, is_export = _locate(run)
    if is_export:
        return None
    bound = configurable_bindings([_operative_text(ckpt_dir, "stage")], "CheckpointConfig")
    if not bound.get("best_metric", (None,))[0]:
        return None
    config = CheckpointConfig(best_metric=bound["best_metric"][0],
                              best_mode=bound.get("best_mode", ("min",))[0], async_save=False)
    with Checkpointer(ckpt_dir, config, read_only=True, items=("model",)) as ckpt:
        return ckpt.best_step()


def load_stage_model(run: str | os.PathLike, *, step: int | None = None,
                     dtype: str | None = None, what: str = "stage") -> Transformer:
    """The stage Transformer of a run (workdir, its checkpoints/ folder, one step folder, or an
    `audiolm-jax export`), variables restored; `dtype` overrides the compute dtype (e.g.
    "float32" on CPUs). `what` names the stage in errors. Without `step` (and not given a step
    folder), a workdir loads at its best held-out step when it kept one, else its newest."""
    from audiolm_jax.training import export  # noqa: PLC0415
    from audiolm_jax.training.checkpoint import load_model  # noqa: PLC0415

    ckpt_dir, folder_step, is_export = _locate(run)
    config = stage_config_from_run(run, what)
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    make = lambda rngs: Transformer(config, rngs=rngs)  # noqa: E731
    if is_export:
        return export.restore_model(make, export.load_export(ckpt_dir))
    if step is None:
        step = folder_step if folder_step is not None else best_checkpoint_step(run)
    if step is not None:
        logging.getLogger(__name__).info("%s model: %s at step %d", what, ckpt_dir, step)
    return load_model(ckpt_dir, make, step)
