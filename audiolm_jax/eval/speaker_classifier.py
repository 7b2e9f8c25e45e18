"""The paper's audio classifier (AudioLM sec. IV-D), used as the speaker classifier and, with two
classes, as the synthetic-speech detector (sec. IV-H).

Input: log-mel of 1 s crops (25 ms window, 10 ms hop, 64 bins): `[batch, 100, 64]` at 16 kHz.
Six blocks, each a 3x1 convolution (along time) then a 1x3 convolution (along frequency), ReLU,
batch norm; channels [64, 128, 256, 256, 512, 512]. "Whenever the number of channels is
increased, max pooling with a stride of 2 is also applied along both time and frequency": the
input has one channel, so blocks 1, 2, 3 and 5 pool (`pooling_plan`), 100 x 64 -> 6 x 4. What
the paper leaves open, chosen here: a batch norm over the mel bins normalises the input (log-mel
levels are otherwise arbitrary), and the head is a global mean over time and frequency followed
by one dense layer to the classes. Params are unnamed for sharding (replicated): the model is
small and runs data-parallel.

Inference on longer audio (`predict_log_probs`): 1 s windows with a 250 ms hop; the utterance's
score is the mean over windows of the per-window log-probabilities (a product of experts; one
confident silent window cannot outvote the rest the way a max could), and its prediction is the
arg-max of that mean. Audio shorter than 1 s is zero-padded to one window.

`ClassifierObjective` trains it through the project trainer on `{"audio", "audio_length",
"label"}` batches (`speaker_data.speaker_crop_batches`, `detector.detector_crop_batches`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from audiolm_jax.audio.features import LogMelConfig, log_mel
from audiolm_jax.training.objective import Objective, OptimizerGroup, StepCost
from audiolm_jax.training.optim import OptimizerConfig

PAPER_CHANNELS = (64, 128, 256, 256, 512, 512)
SAMPLE_RATE = 16000


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """labels: the class names, in logit order (speaker ids, or ("original", "generated")).
    channels: per block (the paper's plan; the tiny CPU config divides it by 4).
    crop_seconds / hop_seconds: training crop and inference window (1 s), inference hop (250 ms).
    """

    labels: tuple[str, ...] = ()
    channels: tuple[int, ...] = PAPER_CHANNELS
    n_mels: int = 64
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms
    crop_seconds: float = 1.0
    hop_seconds: float = 0.25
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.labels) < 2:
            raise ValueError(f"ClassifierConfig.labels={self.labels}: a classifier needs at least "
                             "two class names (bind ClassifierConfig.labels in the gin experiment)")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"ClassifierConfig.labels has duplicates: {self.labels}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"ClassifierConfig.channels={self.channels}; use positive widths")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def window_samples(self) -> int:
        return int(round(self.crop_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_seconds * self.sample_rate))

    def log_mel_config(self) -> LogMelConfig:
        n_fft = 1 << (self.win_length - 1).bit_length()
        return LogMelConfig(sample_rate=self.sample_rate, win_length=self.win_length,
                            hop_length=self.hop_length, n_fft=n_fft, n_mels=self.n_mels)

    @classmethod
    def from_dict(cls, values: Mapping) -> "ClassifierConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ClassifierConfig has no field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


def pooling_plan(channels: Sequence[int], in_channels: int = 1) -> tuple[bool, ...]:
    """Which blocks max-pool (stride 2 in time and frequency): those that grow the channel count.
    The paper's plan pools in blocks 1, 2, 3 and 5: (True, True, True, False, True, False)."""
    previous, out = in_channels, []
    for c in channels:
        out.append(c > previous)
        previous = c
    return tuple(out)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    # [batch, time, freq, channels]; odd trailing rows/columns are dropped (VALID), as in Keras.
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class ConvBlock(nnx.Module):
    """3x1 conv (time) -> 1x3 conv (frequency) -> ReLU -> batch norm [-> 2x2 max pool]."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, *, rngs: nnx.Rngs):
        self.time_conv = nnx.Conv(in_channels, out_channels, (3, 1), padding="SAME", rngs=rngs)
        self.freq_conv = nnx.Conv(out_channels, out_channels, (1, 3), padding="SAME", rngs=rngs)
        self.norm = nnx.BatchNorm(out_channels, momentum=0.9, rngs=rngs)
        self.pool = pool

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = jax.nn.relu(self.freq_conv(self.time_conv(x)))
        x = self.norm(x, use_running_average=not train)
        return _max_pool_2x2(x) if self.pool else x


class AudioClassifier(nnx.Module):
    """`wav [batch, samples]` -> logits `[batch, classes]` (f32). Any length >= one mel hop works;
    training uses 1 s crops, inference `predict_log_probs`."""

    def __init__(self, config: ClassifierConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.input_norm = nnx.BatchNorm(config.n_mels, momentum=0.9, rngs=rngs)
        plan = pooling_plan(config.channels)
        widths = (1,) + config.channels
        self.blocks = nnx.List([ConvBlock(widths[i], widths[i + 1], plan[i], rngs=rngs)
                                for i in range(len(config.channels))])
        self.head = nnx.Linear(config.channels[-1], config.num_classes, rngs=rngs)

    def features(self, wav: jax.Array) -> jax.Array:
        """log-mel `[batch, frames, n_mels]` of 16 kHz audio `[batch, samples]`."""
        return log_mel(wav.astype(jnp.float32), self.config.log_mel_config())

    def __call__(self, wav: jax.Array, train: bool = False) -> jax.Array:
        x = self.input_norm(self.features(wav), use_running_average=not train)
        x = x[..., None]  # [batch, time, freq, 1]
        for block in self.blocks:
            x = block(x, train)
        return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


# --- inference on audio longer than a crop -----------------------------------------------------

def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the 1 s windows over a clip: 0, hop, 2 hop, ... while the window fits;
    one window at 0 (zero-padded) when the clip is shorter than a window."""
    if window < 1 or hop < 1:
        raise ValueError(f"window={window}, hop={hop}; both must be >= 1 sample")
    if num_samples <= window:
        return np.zeros(1, np.int64)
    return np.arange(0, num_samples - window + 1, hop, dtype=np.int64)


def frame_windows(wav: np.ndarray, window: int, hop: int) -> np.ndarray:
    """`wav [samples]` -> `[windows, window]` float32 (see `window_starts`)."""
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"frame_windows expects mono audio [samples], got shape {wav.shape}")
    if wav.size < window:
        wav = np.pad(wav, (0, window - wav.size))
    starts = window_starts(wav.size, window, hop)
    return np.stack([wav[s:s + window] for s in starts])


def aggregate_log_probs(log_probs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean over the valid windows of per-window log-probabilities:
    `[windows, classes]` (+ bool `[windows]`) -> `[classes]`."""
    lp = np.asarray(log_probs, np.float64)
    m = np.ones(lp.shape[0], bool) if mask is None else np.asarray(mask, bool)
    if not m.any():
        raise ValueError("aggregate_log_probs: no valid window to aggregate")
    return lp[m].mean(axis=0)


_WINDOW_BUCKET = 16  # windows per compiled call: one program for every utterance length


@nnx.jit
def _window_log_probs(model: AudioClassifier, windows: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(model(windows, train=False), axis=-1)


def predict_log_probs(model: AudioClassifier, wav: np.ndarray) -> np.ndarray:
    """Aggregated log-probabilities `[classes]` of one utterance `wav [samples]` (16 kHz):
    the mean of the per-window log-softmax over 1 s windows with a 250 ms hop."""
    cfg = model.config
    windows = frame_windows(wav, cfg.window_samples, cfg.hop_samples)
    out = []
    for i in range(0, len(windows), _WINDOW_BUCKET):
        chunk = windows[i:i + _WINDOW_BUCKET]
        padded = np.zeros((_WINDOW_BUCKET, chunk.shape[1]), np.float32)
        padded[:len(chunk)] = chunk
        out.append(np.asarray(_window_log_probs(model, jnp.asarray(padded)))[:len(chunk)])
    return aggregate_log_probs(np.concatenate(out))


def predict_label(model: AudioClassifier, wav: np.ndarray) -> str:
    return model.config.labels[int(np.argmax(predict_log_probs(model, wav)))]


# --- training through the trainer --------------------------------------------------------------

def _cross_entropy(model: AudioClassifier, batch, train: bool):
    logits = model(batch["audio"], train=train)
    labels = batch["label"].astype(jnp.int32)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    return loss, {"accuracy": accuracy}


@gin.configurable
class ClassifierObjective(Objective):
    """Cross-entropy over 1 s crops; `eval/accuracy` is crop-level (utterance-level accuracy, with
    window aggregation, comes from `audiolm-jax eval speaker`). Config: gin `ClassifierConfig`."""

    def __init__(self, config: ClassifierConfig | None = None,
                 optimizer: OptimizerConfig | None = None):
        self.config = config or ClassifierConfig()
        self.optimizer = optimizer  # None: gin's `classifier/OptimizerConfig` (or unscoped)

    def create_model(self, rngs: nnx.Rngs) -> AudioClassifier:
        return AudioClassifier(self.config, rngs=rngs)

    def optimizer_groups(self) -> Sequence[OptimizerGroup]:
        return [OptimizerGroup("classifier", self.loss, optimizer=self.optimizer)]

    def loss(self, model, batch, rng, step):
        del rng, step
        return _cross_entropy(model, batch, train=True)

    def eval_step(self, model, batch):
        loss, metrics = _cross_entropy(model, batch, train=False)
        return {"loss": loss, **metrics}

    def step_cost(self, batch) -> StepCost:
        rows, samples = batch["audio"].shape
        return StepCost(audio_seconds=rows * samples / self.config.sample_rate)


# --- loading a trained classifier ---------------------------------------------------------------

def config_from_gin(text: str, source: str = "<gin>") -> ClassifierConfig:
    """The ClassifierConfig a run used, from its operative gin config (macros resolved)."""
    from audiolm_jax.gin_reader import dataclass_from_gin  # noqa: PLC0415

    return dataclass_from_gin(ClassifierConfig, [(text, source)], require_any=True)


def load_classifier(path: str | os.PathLike, step: int | None = None,
                    config: ClassifierConfig | None = None) -> AudioClassifier:
    """The trained classifier of a run (its workdir or checkpoints/ folder), in eval mode;
    labels and widths come from the run's operative gin config, or from `config` for runs
    trained without gin (the detector: `detector.load_detector`)."""
    from audiolm_jax.semantic.fit import checkpoint_steps  # noqa: PLC0415
    from audiolm_jax.training.checkpoint import OPERATIVE_CONFIG, load_model  # noqa: PLC0415

    ckpt, steps = checkpoint_steps(path)
    gin_file = Path(ckpt) / OPERATIVE_CONFIG
    if config is None and not gin_file.is_file():
        raise FileNotFoundError(f"{gin_file}: missing; the classifier's labels are read from the "
                                "operative gin config that `audiolm-jax train` writes there")
    if config is None:
        config = config_from_gin(gin_file.read_text(), str(gin_file))
    if step is not None and step not in steps:
        raise FileNotFoundError(f"{ckpt}: no checkpoint for step {step}; it has steps {steps}")
    model = load_model(ckpt, lambda rngs: AudioClassifier(config, rngs=rngs), step)
    model.eval()
    return model
