"""Fit the semantic tokenizer from a w2v-BERT training run: checkpoint + corpus -> tokenizer dir.

    checkpoints/<step>/  (Orbax, written by `audiolm-jax train`)  -> frozen W2vBert
    corpus split         -> crops [batch, samples] + lengths      -> MLM layer L activations
      -> streamed per-dimension mean/std (every valid frame)       (standardize.py)
      -> k-means with K clusters on the standardised frames        (kmeans.py)
      -> SemanticTokenizer.save(out)  + out/fit.json (what was fitted on, and how it went)

The model's architecture is read from the run's operative gin config beside the checkpoints
(`operative_config.gin`), so a checkpoint is all the command needs. Layer, K and the data
settings are `KMeansFitConfig` fields (gin-bindable; the CLI flags override them).

Audio: one random crop of up to `crop_seconds` per utterance and epoch (the crop reader of
training, shuffled, so `max_hours` and `max_vectors` take an unbiased sample). Batches keep one
shape -- the last is padded with empty rows -- so the model compiles once.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import gin
import jax
import numpy as np

from audiolm_jax.audio import SAMPLE_RATE
from audiolm_jax.data.audio_reader import AudioCropReader
from audiolm_jax.gin_reader import configurable_bindings
from audiolm_jax.semantic.tokenizer import fit_semantic_tokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, num_frames
from audiolm_jax.training.checkpoint import OPERATIVE_CONFIG, Checkpointer, load_model

FIT_REPORT = "fit.json"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class KMeansFitConfig:
    """How the tokenizer is fitted. Defaults are AudioLM's (MLM layer 7 of the XL, K = 1024).

    layer: MLM-module layer, 1-based. clusters: K.
    crop_seconds, batch_size: audio per row and rows per forward pass.
    epochs: passes over the split (each takes a fresh random crop of every utterance).
    max_hours: stop reading after this much real (unpadded) audio; None: the whole split.
    max_vectors: frames kept for k-means (the first ones of the shuffled stream; the statistics
      use every frame); None keeps all. 500k frames of the XL's 1024 dims are 2 GB (float32).
    iters: Lloyd iterations, or mini-batch steps when `minibatch` (points per batch) is set.
    seed: crop order and k-means seeding. layout: corpus layout (see data/corpus.py).
    """
    layer: int = 7
    clusters: int = 1024
    crop_seconds: float = 10.0
    batch_size: int = 8
    epochs: int = 1
    max_hours: float | None = None
    max_vectors: int | None = 500_000
    iters: int = 20
    minibatch: int | None = None
    seed: int = 0
    layout: str = "libri_light"


# --- the checkpoint --------------------------------------------------------------------------

def checkpoint_steps(path: str | os.PathLike) -> tuple[Path, list[int]]:
    """(the directory holding the step subdirectories, its steps, oldest first).

    `path` is that directory or a training workdir holding it as `checkpoints/`.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory; pass the training workdir "
                                f"(train.workdir) or its checkpoints/ folder")
    if (path / "checkpoints").is_dir() and not (path / OPERATIVE_CONFIG).is_file():
        path = path / "checkpoints"
    manager = Checkpointer(path, read_only=True)
    try:
        steps = manager.steps()
    finally:
        manager.close()
    if not steps:
        raise FileNotFoundError(f"{path}: holds no checkpoint (no step directories); train first "
                                f"(audiolm-jax train ...) or pass the run's workdir")
    return path, steps


def model_config_from_gin(text: str, source: str = "<gin>") -> W2vBertConfig:
    """The W2vBertConfig a run used, from its operative gin config (unscoped bindings only)."""
    values = {name: value for name, (value, _) in
              configurable_bindings([(text, source)], "W2vBertConfig").items()}
    if not values:
        raise ValueError(f"{source}: binds no W2vBertConfig parameter; it is not the config of "
                         f"a w2v-BERT run (train.objective = @W2vBertObjective())")
    try:
        return W2vBertConfig.from_dict(values)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def run_model_config(ckpt: Path) -> W2vBertConfig:
    """The W2vBertConfig of the run whose checkpoint directory is `ckpt` (see checkpoint_steps)."""
    gin_file = ckpt / OPERATIVE_CONFIG
    if not gin_file.is_file():
        raise FileNotFoundError(f"{gin_file}: missing; the model's architecture is read from the "
                                f"operative gin config that `audiolm-jax train` writes there")
    return model_config_from_gin(gin_file.read_text(), str(gin_file))


def load_checkpoint_model(path: str | os.PathLike, step: int | None = None
                          ) -> tuple[W2vBert, int, Path]:
    """(frozen float32 W2vBert, its step, the checkpoint directory) from a training run; step
    None takes the newest."""
    ckpt, steps = checkpoint_steps(path)
    config = run_model_config(ckpt)
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"{ckpt}: no checkpoint for step {step}; it has steps {steps}")
    model = load_model(ckpt, lambda rngs: W2vBert(config, rngs=rngs), step)
    return model, step, ckpt


# --- the audio -------------------------------------------------------------------------------

@dataclasses.dataclass
class AudioTally:
    """What the fit read: rows (utterance crops), real samples and 25 Hz frames."""
    rows: int = 0
    samples: int = 0
    frames: int = 0

    @property
    def hours(self) -> float:
        return self.samples / SAMPLE_RATE / 3600.0


def crop_batches(reader: AudioCropReader, tally: AudioTally, max_hours: float | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(wav float32 [batch, samples], lengths int32 [batch]) of `reader`, every batch full: a
    short last batch is padded with empty rows (length 0: no valid frame). Stops once
    `max_hours` of real audio were yielded. Counts what it yields into `tally`."""
    limit = None if max_hours is None else max_hours * 3600.0 * SAMPLE_RATE
    for batch in reader:
        wav, lengths = batch["audio"], batch["length"].astype(np.int32)
        missing = reader.batch_size - wav.shape[0]
        if missing:
            wav = np.concatenate([wav, np.zeros((missing, wav.shape[1]), wav.dtype)])
            lengths = np.concatenate([lengths, np.zeros(missing, np.int32)])
        tally.rows += int(np.count_nonzero(lengths))
        tally.samples += int(lengths.sum())
        tally.frames += int(sum(num_frames(int(n)) for n in lengths))
        yield wav, lengths
        if limit is not None and tally.samples >= limit:
            return


def _enough_frames(batches: Iterator, tally: AudioTally, clusters: int, where: str) -> Iterator:
    """`batches`, then an error before k-means starts if they held fewer frames than clusters."""
    yield from batches
    if tally.frames < clusters:
        raise ValueError(
            f"{where}: {tally.frames} frames of 25 Hz audio ({tally.rows} crops, "
            f"{tally.hours * 3600:.1f} s) are too few for K={clusters} clusters; lower --clusters "
            f"to at most {tally.frames}, or give more audio (a bigger split, --max-hours, "
            f"longer crops or more epochs)")


# --- the fit ---------------------------------------------------------------------------------

def fit_tokenizer_from_checkpoint(checkpoint: str | os.PathLike, corpus: str | os.PathLike,
                                  out: str | os.PathLike, split: str = "train",
                                  config: KMeansFitConfig | None = None, step: int | None = None,
                                  progress: Callable[[str], None] = print,
                                  choose_layer: Callable[[W2vBert], tuple[int, dict]] | None = None
                                  ) -> dict:
    """Fits and saves a SemanticTokenizer (see the module docstring); returns the fit report,
    also written to `out/fit.json`. choose_layer: picks the layer from the loaded model instead
    of `config.layer` (e.g. eval.semantic_abx.choose_layer_by_abx), returning (layer, a report
    kept in fit.json as "layer_selection")."""
    config = config or KMeansFitConfig()
    ckpt, _ = checkpoint_steps(checkpoint)
    n_layers = run_model_config(ckpt).num_mlm_layers
    if choose_layer is None and not 1 <= config.layer <= n_layers:
        raise ValueError(f"layer {config.layer} is out of range for {ckpt}: its model has MLM layers "
                         f"1..{n_layers} (1-based); pick one of them with --layer")
    if config.clusters < 1:
        raise ValueError(f"clusters={config.clusters}; K must be a positive number of clusters")
    model, step, ckpt = load_checkpoint_model(ckpt, step)
    selection = None
    if choose_layer is not None:
        layer, selection = choose_layer(model)
        if not 1 <= layer <= n_layers:
            raise ValueError(f"the layer chooser picked layer {layer}; {ckpt} has 1..{n_layers}")
        config = dataclasses.replace(config, layer=layer)
    reader = AudioCropReader(corpus, config.layout, split, config.crop_seconds, config.seed,
                             batch_size=config.batch_size, shuffle=True, num_epochs=config.epochs,
                             drop_remainder=False)
    progress(f"fitting layer {config.layer}, K={config.clusters} of {ckpt}/{step} on "
             f"{len(reader.examples)} utterances of {reader.index.root}/{split}")
    tally = AudioTally()
    batches = _enough_frames(crop_batches(reader, tally, config.max_hours), tally,
                             config.clusters, f"{reader.index.root}/{split}")
    tokenizer, result = fit_semantic_tokenizer(
        model, config.layer, batches, config.clusters, jax.random.key(config.seed),
        iters=config.iters, max_vectors=config.max_vectors, batch_size=config.minibatch)
    tokenizer.save(out)
    counts = np.asarray(result.counts)
    usage = counts[counts > 0] / counts.sum()
    report = {
        "checkpoint": str(ckpt), "step": int(step), "corpus": str(reader.index.root),
        "split": split, "config": dataclasses.asdict(config),
        "audio": {"crops": tally.rows, "hours": round(tally.hours, 6), "frames": tally.frames},
        "clustered_frames": int(counts.sum()),
        "inertia_per_frame": float(result.inertia) / max(int(counts.sum()), 1),
        "empty_clusters": int(np.sum(counts == 0)),
        "cluster_perplexity": float(np.exp(-np.sum(usage * np.log(usage)))),
        "skipped_files": dict(reader.skipped),
    }
    if selection is not None:
        report["layer_selection"] = selection
    Path(out, FIT_REPORT).write_text(json.dumps(report, indent=2, sort_keys=True))
    progress(f"saved {out}: {tally.frames} frames ({tally.hours:.3f} h), "
             f"{report['empty_clusters']} empty clusters, cluster perplexity "
             f"{report['cluster_perplexity']:.1f} of {config.clusters}")
    return report
