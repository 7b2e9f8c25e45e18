"""Frozen-model exports: a checkpoint's variables as sharded .npz files with a checksummed manifest.

An export is what travels and what may be committed: no optimizer state, no pickle (arrays only,
loaded with `allow_pickle=False`), shards under a size cap (for transfers with per-file limits),
SHA-256 of every shard in `manifest.json`, and the operative gin config beside it.

    export_checkpoint("runs/codec/checkpoints", "exports/codec", prefix="generator")
    state = load_export("exports/codec")            # {path: np.ndarray}
    model = restore_model(make_model, state)        # an nnx.Module holding those values
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.training.checkpoint import load_params

MANIFEST = "manifest.json"
FORMAT = "audiolm-jax-export/1"


class ExportError(ValueError):
    """A malformed or tampered export; the message names the file and the fix."""


def _flat(state: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flat(value, path))
        else:
            out[path] = np.asarray(jax.device_get(value))
    return out


def _storable(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint16) if array.dtype == jnp.bfloat16 else array


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_export(arrays: Mapping[str, np.ndarray], out_dir: str | os.PathLike, *,
                 shard_bytes: int = 15 << 20, config_text: str | None = None,
                 info: Mapping | None = None) -> Path:
    """Writes {path: array} as shards of at most ~`shard_bytes` (one array never splits)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(arrays):
        array = np.asarray(arrays[name], order="C")  # (ascontiguousarray would make scalars 1-d)
        if shards[-1] and size + array.nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    entries = []
    for i, shard in enumerate(shards):
        fname = f"arrays-{i:05d}-of-{len(shards):05d}.npz"
        # .npz has no bfloat16: such arrays are stored as their uint16 bits, the manifest keeps
        # the real dtype and load_export views them back.
        np.savez(tmp / fname, **{k.replace("/", "|"): _storable(v) for k, v in shard.items()})
        entries.append({"file": fname, "sha256": _sha256(tmp / fname),
                        "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in shard.items()}})
    manifest = {"format": FORMAT, "shards": entries, "info": dict(info or {})}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if config_text is not None:
        (tmp / "operative_config.gin").write_text(config_text)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def export_checkpoint(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      prefix: str | None = None, step: int | None = None,
                      shard_bytes: int = 15 << 20, exclude: Sequence[str] = (),
                      float_dtype: str | None = None, keep_float32: Sequence[str] = ()) -> Path:
    """Exports the model variables of a trainer checkpoint.

    prefix: only variables under this module path (e.g. "generator" of the codec's
      generator+discriminator container), renamed relative to it.
    exclude: drop variables whose last path component is one of these (training-only state,
      e.g. the codec's EMA "embed_sum" and "cluster_size").
    float_dtype: cast floating arrays (e.g. "bfloat16" halves an inference export) except those
      whose last path component is in `keep_float32` (e.g. "codebooks").
    """
    state = load_params(ckpt_dir, step)
    arrays = _flat(state.to_pure_dict() if hasattr(state, "to_pure_dict") else dict(state))
    if prefix:
        arrays = {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        if not arrays:
            raise ExportError(f"{ckpt_dir}: no variables under {prefix!r}; check the prefix")
    arrays = {k: v for k, v in arrays.items() if k.rsplit("/", 1)[-1] not in set(exclude)}
    if float_dtype is not None:
        arrays = {k: (v.astype(jnp.dtype(float_dtype))
                      if jnp.issubdtype(v.dtype, jnp.floating) and k.rsplit("/", 1)[-1] not in set(keep_float32)
                      else v) for k, v in arrays.items()}
    config = Path(ckpt_dir) / "operative_config.gin"
    return write_export(arrays, out_dir, shard_bytes=shard_bytes,
                        config_text=config.read_text() if config.exists() else None,
                        info={"checkpoint": str(ckpt_dir), "prefix": prefix or "",
                              "excluded": list(exclude), "float_dtype": float_dtype or ""})


def load_export(export_dir: str | os.PathLike, *, verify: bool = True) -> dict[str, np.ndarray]:
    """{path: array} of an export; checks every shard's SHA-256 and the declared shapes."""
    root = Path(export_dir)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError as e:
        raise ExportError(f"{root}: no {MANIFEST}; pass a directory written by export_checkpoint") from e
    except json.JSONDecodeError as e:
        raise ExportError(f"{root / MANIFEST}: not valid JSON ({e}); re-export the model") from e
    except RecursionError as e:
        raise ExportError(f"{root / MANIFEST}: not valid JSON (nested too deeply); "
                          "re-export the model") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ExportError(f"{root / MANIFEST}: format {found!r}, expected {FORMAT!r}")
    try:
        return _load_shards(root, manifest["shards"], verify)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, ExportError):
            raise
        raise ExportError(f"{root / MANIFEST}: malformed manifest ({type(e).__name__}: {e}); "
                          "re-export the model") from e


def _load_shards(root: Path, shards: list, verify: bool) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for entry in shards:
        if Path(entry["file"]).name != entry["file"] or entry["file"] in ("", ".", ".."):
            raise ExportError(f"{root / MANIFEST}: shard name {entry['file']!r} is not a plain file "
                              "name in the export directory; re-export the model")
        path = root / entry["file"]
        if not path.is_file():
            raise ExportError(f"{path}: shard missing; copy the whole export directory")
        if verify and _sha256(path) != entry["sha256"]:
            raise ExportError(f"{path}: checksum mismatch (corrupt or modified); re-export or re-copy it")
        try:
            with np.load(path, allow_pickle=False) as data:
                for key in data.files:
                    arrays[key.replace("|", "/")] = data[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            # ValueError: an object array, which only pickle could load (never done here).
            raise ExportError(f"{path}: not a readable array shard ({e}); re-export or re-copy it") from e
        for name, (shape, dtype) in entry["arrays"].items():
            got = arrays.get(name)
            if got is not None and str(got.dtype) != dtype and got.dtype == np.uint16:
                got = arrays[name] = got.view(jnp.dtype(dtype))
            if got is None or list(got.shape) != shape or str(got.dtype) != dtype:
                raise ExportError(f"{path}: array {name!r} is not the declared {shape} {dtype}")
    return arrays


def restore_model(create_model: Callable[[nnx.Rngs], nnx.Module],
                  arrays: Mapping[str, np.ndarray], *, optional: Sequence[str] = ()) -> nnx.Module:
    """Builds `create_model` and sets every variable from `arrays` (cast to the model's dtype);
    variables named in `optional` (last path component) may be absent and keep their init."""
    with nnx.use_eager_sharding(False):
        model = create_model(nnx.Rngs(0))
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    for path, var in flat.items():
        name = "/".join(str(p) for p in path)
        if name not in arrays:
            if (name.endswith(("/key", "/count")) and "rngs" in name) or path[-1] in set(optional):
                continue  # rng streams and excluded training state are not part of a frozen model
            raise ExportError(f"export has no variable {name!r}; was it made from this model config?")
        value = arrays[name]
        old = var.get_value()
        if jax.dtypes.issubdtype(old.dtype, jax.dtypes.prng_key):
            continue
        if tuple(value.shape) != tuple(old.shape):
            raise ExportError(f"variable {name!r}: export has shape {value.shape}, the model "
                              f"{tuple(old.shape)}; use the gin config saved with the export")
        var.set_value(jax.numpy.asarray(value, old.dtype))
    return model
