"""Orbax checkpoints: async saves, keep last K + best by an eval metric, exact resume, fallback
past a damaged newest checkpoint, read-only params for the next stage.

A checkpoint step directory holds the items
  model      {"params": ..., "state": ...}: the model as pure nested dicts (f32 params and the
             non-Param variables: EMA codebooks, counters, rng streams as uint32 key data)
  optimizer  {group: optax state}, the same pure-dict form inside
  progress   step, rng, non-finite counters
  data       the input iterators' `get_state()`, one per process (JSON)
  config     the operative gin config of the run that wrote it (JSON: {"gin": text})
Orbax writes each step into a temporary directory and renames it when complete, so a crash
during a save leaves the previous checkpoints as they were.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import gin
import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers as policies

from audiolm_jax.training.state import TrainState, from_pure, to_pure

ARRAY_ITEMS = ("model", "optimizer", "progress")
JSON_ITEMS = ("data", "config")
OPERATIVE_CONFIG = "operative_config.gin"


class CheckpointMismatchError(ValueError):
    """The checkpoint's arrays do not fit the configured model/optimizer."""


class NoCheckpointError(FileNotFoundError):
    """No readable checkpoint in the directory."""


class CheckpointSaveError(OSError):
    """A save failed (disk full, I/O error); the committed checkpoints are untouched."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """every_steps: save period (0: only at the end and on preemption). keep: the last K are kept.
    best_metric: an eval metric name (e.g. "eval/loss"); the `keep_best` checkpoints best by it are
      kept too (a checkpoint is saved at every eval step when set). best_mode: "min" or "max".
    async_save: write in a background thread (the host copy is made before `save` returns)."""

    every_steps: int = 1000
    keep: int = 3
    best_metric: str | None = None
    best_mode: str = "min"
    keep_best: int = 1
    async_save: bool = True


# --- items ----------------------------------------------------------------------------------


def state_items(state: TrainState) -> dict[str, Any]:
    """The array items of a train state (concrete or abstract)."""
    return {
        "model": {"params": state.params, "state": state.model_state},
        "optimizer": state.opt_state,
        "progress": {
            "step": state.step,
            "rng": state.rng,
            "nonfinite_streak": state.nonfinite_streak,
            "nonfinite_total": state.nonfinite_total,
            "halted": state.halted,
        },
    }


def state_from_items(items: Mapping[str, Any]) -> TrainState:
    progress = items["progress"]
    return TrainState(
        step=progress["step"],
        params=items["model"]["params"],
        model_state=items["model"]["state"],
        opt_state=items["optimizer"],
        rng=progress["rng"],
        nonfinite_streak=progress["nonfinite_streak"],
        nonfinite_total=progress["nonfinite_total"],
        halted=progress["halted"],
    )


# --- mismatch check ---------------------------------------------------------------------------


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _shapes(tree: Any) -> dict[str, tuple]:
    """{"a/b/c": shape} for every array-like leaf; None leaves (empty optax states) dropped."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(_key_name(k) for k in path): tuple(leaf.shape)
        for path, leaf in leaves
        if leaf is not None and hasattr(leaf, "shape")
    }


def check_compatible(item: str, saved: Any, wanted: Any, where: str) -> None:
    """Raises CheckpointMismatchError naming the first parameters whose presence or shape differ."""
    have, want = _shapes(saved), _shapes(wanted)
    problems = []
    for name in sorted(want.keys() - have.keys()):
        problems.append(f"{item}/{name}: missing in the checkpoint (the model has {want[name]})")
    for name in sorted(have.keys() - want.keys()):
        problems.append(f"{item}/{name}: in the checkpoint {have[name]} but not in the model")
    for name in sorted(have.keys() & want.keys()):
        if have[name] != want[name]:
            problems.append(
                f"{item}/{name}: checkpoint shape {have[name]} != configured {want[name]}"
            )
    if problems:
        shown = "\n  ".join(problems[:8]) + (
            f"\n  ... {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise CheckpointMismatchError(
            f"checkpoint {where} does not match the configured model:\n  {shown}\n"
            f"Fix: use the gin config that wrote it ({OPERATIVE_CONFIG} beside the checkpoints, or its "
            f"'config' item), or start a fresh workdir."
        )


# --- the manager ------------------------------------------------------------------------------


@dataclasses.dataclass
class Restored:
    step: int
    state: TrainState
    data_states: list | None


def _handlers(items: Sequence[str]) -> dict[str, ocp.CheckpointHandler]:
    out: dict[str, ocp.CheckpointHandler] = {}
    for name in items:
        out[name] = (
            ocp.StandardCheckpointHandler() if name in ARRAY_ITEMS else ocp.JsonCheckpointHandler()
        )
    return out


class Checkpointer:
    """Saves and restores train states under `directory` (one subdirectory per step)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        config: CheckpointConfig | None = None,
        *,
        read_only: bool = False,
        items: Sequence[str] = ARRAY_ITEMS + JSON_ITEMS,
    ):
        directory = os.fspath(directory)
        # Orbax refuses relative paths ("Checkpoint path should be absolute"); URLs stay as given.
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.config = config = config or CheckpointConfig()
        if config.best_mode not in ("min", "max"):
            raise ValueError(
                f"CheckpointConfig.best_mode={config.best_mode!r}; use 'min' or 'max'."
            )
        keep: list[Any] = [policies.LatestN(n=max(config.keep, 1))]
        best_fn = None
        if config.best_metric:
            sign = -1.0 if config.best_mode == "min" else 1.0
            metric = config.best_metric
            best_fn = lambda m: sign * float(m[metric])  # noqa: E731 - larger is better
            keep.append(
                policies.BestN(
                    get_metric_fn=best_fn,
                    n=config.keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        # best_fn only makes Orbax write (and reload) per-step metrics; preservation_policy decides.
        options = ocp.CheckpointManagerOptions(
            read_only=read_only,
            create=not read_only,
            enable_async_checkpointing=config.async_save,
            best_fn=best_fn,
            preservation_policy=policies.AnyPreservationPolicy(keep),
            cleanup_tmp_directories=not read_only,
        )
        self._saving: int | None = None  # the step of the latest save started
        self._failed = False
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=_handlers(items)
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The kept step best by `config.best_metric` among those saved with it; None when the
        config names no metric or no step carries it (e.g. a run cut before its first eval)."""
        # Orbax ranks the steps saved with metrics by the manager's best_fn (set from the config).
        return self._manager.best_step() if self.config.best_metric else None

    def save(
        self,
        step: int,
        state: TrainState,
        *,
        data_states: list | None = None,
        metrics: Mapping[str, float] | None = None,
        config_text: str = "",
    ) -> bool:
        """Starts an (async) save of `state` as step `step`; every process must call it."""
        items = state_items(state)
        args = {name: ocp.args.StandardSave(items[name]) for name in ARRAY_ITEMS}
        args["data"] = ocp.args.JsonSave(
            {"process_count": jax.process_count(), "states": data_states}
        )
        args["config"] = ocp.args.JsonSave({"gin": config_text})
        metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
        self.wait()  # Orbax waits for the previous save anyway; a failure is reported as its own
        self._saving = step
        try:
            return self._manager.save(
                step, args=ocp.args.Composite(**args), metrics=metrics, force=True
            )
        except Exception as e:  # noqa: BLE001 - a sync save, or the previous async one, failed
            raise self._save_failed(e) from e

    def _save_failed(self, error: Exception) -> CheckpointSaveError:
        """The error of a failed save, naming the step, what survives and the fix (raised once:
        Orbax re-raises a failed async save at every later call, close() included)."""
        self._failed = True
        where = os.path.join(self.directory, str(self._saving))
        kept = [s for s in self.steps() if s != self._saving]
        resume = f"a rerun resumes from step {kept[-1]}" if kept else "a rerun starts from scratch"
        return CheckpointSaveError(
            f"saving checkpoint {where} failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300] if str(error) else ''}); the committed "
            f"checkpoints {kept} are intact and {resume}. Fix: free space on that disk (or "
            f"point the workdir at a larger one) and rerun."
        )

    def restore(self, template: TrainState, step: int | None = None) -> Restored | None:
        """Restores into `template` (abstract state with shardings). step None: the newest readable
        checkpoint -- a damaged one is skipped with a warning. Returns None if there is none."""
        steps = [step] if step is not None else list(reversed(self.steps()))
        wanted = state_items(template)
        for s in steps:
            where = os.path.join(self.directory, str(s))
            try:
                meta = self._manager.item_metadata(s)
                saved = {name: getattr(meta[name], "tree", meta[name]) for name in ARRAY_ITEMS}
            except Exception as e:  # noqa: BLE001 - unreadable metadata = damaged checkpoint
                self._skip(s, where, e, step is not None)
                continue
            for name in ARRAY_ITEMS:
                check_compatible(name, saved[name], wanted[name], where)
            try:
                args = {name: ocp.args.StandardRestore(wanted[name]) for name in ARRAY_ITEMS}
                args["data"] = ocp.args.JsonRestore()
                out = self._manager.restore(s, args=ocp.args.Composite(**args))
            except Exception as e:  # noqa: BLE001 - truncated/corrupt files
                self._skip(s, where, e, step is not None)
                continue
            data = out["data"] or {}
            states = data.get("states")
            if states is not None and data.get("process_count") != jax.process_count():
                warnings.warn(
                    f"{where}: input state was saved by {data.get('process_count')} processes, "
                    f"this run has {jax.process_count()}; the data restarts from its beginning."
                )
                states = None
            return Restored(step=int(s), state=state_from_items(out), data_states=states)
        return None

    def _skip(self, step: int, where: str, error: Exception, explicit: bool) -> None:
        if explicit:
            raise NoCheckpointError(f"checkpoint {where} is unreadable: {error}") from error
        detail = str(error).split(" See full TensorStore")[0].splitlines()[0][:300]
        message = (
            f"checkpoint {where} is unreadable ({type(error).__name__}: {detail}); "
            f"falling back to the previous one."
        )
        logging.warning(message)
        warnings.warn(message)

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - the background save failed
            raise self._save_failed(e) from e

    def close(self) -> None:
        try:
            self._manager.close()
        except Exception as e:  # noqa: BLE001
            if self._failed:  # already raised to the caller; do not mask what it is handling
                logging.warning("closing %s after a failed save: %s", self.directory, e)
                return
            raise self._save_failed(e) from e

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_operative_config(directory: str | os.PathLike, text: str) -> None:
    """The operative gin config beside the checkpoints (process 0 writes it)."""
    if jax.process_index() != 0:
        return
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, OPERATIVE_CONFIG)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# --- read-only hand-off -----------------------------------------------------------------------


def _deep_merge(a: Mapping, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v)
            if isinstance(v, Mapping) and isinstance(out.get(k), Mapping)
            else v
        )
    return out


def _placeholder(meta) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(
        meta.shape, meta.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    )


def load_params(
    ckpt_dir: str | os.PathLike, step: int | None = None, *, target: nnx.State | None = None
) -> nnx.State:
    """The model's variables (params and non-Param state) from a checkpoint, read-only.

    target: the model's abstract state, e.g. `nnx.state(nnx.eval_shape(make_model))`, with
      shardings in its ShapeDtypeStructs to restore sharded; the result has its structure and
      Variable types, ready for `nnx.merge(graphdef, state)` / `nnx.update(model, state)`.
      Without it: a State of nested dicts of arrays on the first local device (rng streams as
      uint32 key data), for `nnx.replace_by_pure_dict`.
    step: None for the newest readable checkpoint.
    """
    ckpt = Checkpointer(ckpt_dir, read_only=True, items=("model",))
    try:
        steps = [step] if step is not None else list(reversed(ckpt.steps()))
        if not steps:
            raise NoCheckpointError(
                f"no checkpoint in {os.fspath(ckpt_dir)}; train first or pass the "
                "directory that holds the step subdirectories."
            )
        for s in steps:
            where = os.path.join(os.fspath(ckpt_dir), str(s))
            try:
                saved = ckpt._manager.item_metadata(s)["model"]
                saved = getattr(saved, "tree", saved)
            except Exception as e:  # noqa: BLE001
                ckpt._skip(s, where, e, step is not None)
                continue
            if target is not None:
                params, rest = nnx.split_state(target, nnx.Param, ...)
                wanted = {"params": to_pure(params), "state": to_pure(rest)}
                check_compatible("model", saved, wanted, where)
            else:
                wanted = jax.tree.map(_placeholder, saved)
            try:
                out = ckpt._manager.restore(
                    s, args=ocp.args.Composite(model=ocp.args.StandardRestore(wanted))
                )
            except Exception as e:  # noqa: BLE001
                ckpt._skip(s, where, e, step is not None)
                continue
            model = out["model"]
            if target is None:
                return nnx.State(_deep_merge(model["params"], model["state"]))
            return nnx.merge_state(
                from_pure(params, model["params"]), from_pure(rest, model["state"])
            )
        raise NoCheckpointError(f"no readable checkpoint in {os.fspath(ckpt_dir)}.")
    finally:
        ckpt.close()


def load_model(
    ckpt_dir: str | os.PathLike,
    create_model: Callable[[nnx.Rngs], nnx.Module],
    step: int | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence | None = None,
) -> nnx.Module:
    """A frozen model for the next stage: `create_model` traced abstractly, its variables read
    from the checkpoint (sharded over `mesh` by `rules` when given)."""
    from audiolm_jax.training.partitioning import axis_rules, tree_shardings  # noqa: PLC0415

    with nnx.use_eager_sharding(False):
        abstract = nnx.eval_shape(lambda: create_model(nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    if mesh is not None:
        shardings = tree_shardings(state, mesh, tuple(rules) if rules is not None else axis_rules())
        state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, shardings
        )
    else:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        state = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), state
        )
    return nnx.merge(graphdef, load_params(ckpt_dir, step, target=state))
