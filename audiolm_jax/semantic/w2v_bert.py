"""w2v-BERT (Chung et al. 2021): the self-supervised speech model behind AudioLM's semantic tokens.

    wav [batch, samples] 16 kHz
      -> log-mel [batch, samples // 160, 80]                         (audio.features, 100 Hz)
      -> feature encoder: two 3x3 stride-(2, 2) convs + linear + norm  z [batch, frames, embed], 25 Hz
      -> quantizer(z)                       targets (contrastive) and target ids (MLM), unmasked
                                            (its gradient does not reach the encoder by default)
      -> mask spans of z (masked frames replaced by random vectors)
      -> linear -> contrastive module (Conformer x Nc) -> context c   (compared with the targets)
      -> MLM module (Conformer x Nm) -> per-layer activations -> MLM head (logits over code ids)

frames = samples // 640: the log-mel frames are cut to a multiple of 4 before the convolutions.
`W2vBert(wav, mask=, rng=, return_layers=)` runs it all (`forward_features` from z); the losses live
in objectives.py, `mlm_layer_activations(wav, layer)` serves the tokenizer.
AudioLM's semantic tokens are k-means ids of one MLM-module layer's activations (7 of the XL).

XL as the paper (recalled from its Table 1, worth re-checking against the PDF): 12 contrastive + 12
MLM Conformer layers, model dim 1024, 8 heads, ff 4096, conv kernel 5 (613,434,240 parameters
here, the paper's "0.6B"); one codebook of 1024 entries. Pretraining (`objectives.py`): mask p = 0.065, span 10; 100 distractors,
temperature 0.1; diversity weight 0.1; L = L_contrastive + 0.1 L_diversity + L_mlm. Choices not
fixed by the paper: 128 channels in the subsampling convs, codevector dim 1024 and a 768-dim
contrastive space (as wav2vec 2.0 large), LayerNorm in the conv module (see conformer.py).
Deviation: the quantiser's input is stop-gradient (W2vBertConfig.quantizer_input_grad = 0): the
encoder learns only through the context path; end-to-end (1.0) collapsed or reshuffled the codes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import gin
import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.audio.features import LogMelConfig, log_mel
from audiolm_jax.dropout import dropout
from audiolm_jax.semantic.conformer import (
    KERNEL_INIT,
    ConformerBlock,
    ConformerConfig,
    dense,
    layer_norm,
    partitioned,
)
from audiolm_jax.semantic import draws
from audiolm_jax.semantic.quantizer import GumbelQuantizer, Quantized

SUBSAMPLING = 4  # two stride-2 convolutions: 100 Hz log-mel -> 25 Hz


@gin.configurable
@dataclasses.dataclass(frozen=True)
class W2vBertConfig:
    """Architecture and pretraining objective. Defaults are the XL of the paper."""

    # Architecture.
    model_dim: int = 1024
    num_heads: int = 8
    ff_dim: int = 4096
    conv_kernel: int = 5
    dropout: float = 0.1
    num_contrastive_layers: int = 12
    num_mlm_layers: int = 12
    subsample_channels: int = 128
    n_mels: int = 80
    # Per-utterance mean and variance normalisation of each log-mel bin over the valid frames
    # (`normalize_log_mel`), before the feature encoder. Raw log-mels sit around -8 (floor -11.5)
    # with a spread of ~3: every frame then points the same way, a random-init encoder's features
    # have cosine ~0.94 between any two frames and its quantiser uses ~2 codes, which the
    # pretraining never recovers from (see quantizer.py).
    normalize_log_mel: bool = True
    codebook_groups: int = 1
    codebook_entries: int = 1024
    codevector_dim: int = 1024
    contrastive_dim: int = 768
    # Gradient scale from the quantiser back into the feature encoder (`scale_gradient`); the
    # quantiser's own weights always learn. 1.0 is the papers' end-to-end setting; 0.0 (default)
    # trains the encoder only through the masked context path. With 1.0 the straight-through
    # and diversity gradients reshape the encoder's features under the targets: on the
    # small-world corpus the codes collapsed to ~2 within 100 steps at diversity weight 0.1
    # (contrastive and MLM accuracy then trivially high) or, at weight 1.0, stayed diverse but
    # were reshuffled every step so that neither loss left chance. With 0.0 the codes stay in
    # the tens and both accuracies rise (tests/test_w2v_bert_learning.py).
    quantizer_input_grad: float = 0.0
    # Pretraining objective (objectives.py).
    mask_prob: float = 0.065
    mask_span: int = 10
    num_distractors: int = 100
    contrastive_temperature: float = 0.1
    diversity_weight: float = 0.1
    contrastive_weight: float = 1.0
    mlm_weight: float = 1.0
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995

    @property
    def conformer(self) -> ConformerConfig:
        return ConformerConfig(self.model_dim, self.num_heads, self.ff_dim, self.conv_kernel,
                               self.dropout)

    @property
    def log_mel(self) -> LogMelConfig:
        return LogMelConfig(n_mels=self.n_mels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "W2vBertConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"W2vBertConfig: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def num_frames(num_samples: int, config: W2vBertConfig | None = None) -> int:
    """25 Hz frames for `num_samples` at 16 kHz: samples // 640."""
    hop = (config.log_mel if config else LogMelConfig()).hop_length
    return (num_samples // hop) // SUBSAMPLING


def normalize_utterance(mel: jnp.ndarray, mel_valid: jnp.ndarray | None = None,
                        eps: float = 1e-5) -> jnp.ndarray:
    """Each bin of mel [batch, mel_frames, n_mels] minus its mean over the utterance's valid
    frames (bool [batch, mel_frames], None: all), divided by its std there (padding is zeroed)."""
    mel = mel.astype(jnp.float32)
    w = (jnp.ones(mel.shape[:2], jnp.float32) if mel_valid is None
         else mel_valid.astype(jnp.float32))[..., None]
    count = jnp.maximum(w.sum(1, keepdims=True), 1.0)
    mean = (mel * w).sum(1, keepdims=True) / count
    var = (jnp.square(mel - mean) * w).sum(1, keepdims=True) / count
    return (mel - mean) * jax.lax.rsqrt(var + eps) * w


def scale_gradient(x: jnp.ndarray, scale: float) -> jnp.ndarray:
    """x in the forward pass; its gradient multiplied by `scale` (0: stop_gradient)."""
    if scale == 1.0:
        return x
    frozen = jax.lax.stop_gradient(x)
    return frozen if scale == 0.0 else frozen + scale * (x - frozen)


def valid_frames(lengths: jnp.ndarray, frames: int, config: W2vBertConfig | None = None) -> jnp.ndarray:
    """bool [batch, frames]: True on 25 Hz frames inside each utterance (`lengths` [batch] in samples)."""
    hop = (config.log_mel if config else LogMelConfig()).hop_length
    return jnp.arange(frames)[None, :] < (jnp.asarray(lengths) // (hop * SUBSAMPLING))[:, None]


class FeatureEncoder(nnx.Module):
    """Two 3x3 stride-(2, 2) convolutions (ReLU) over [time, mel], flatten, linear, LayerNorm."""

    def __init__(self, cfg: W2vBertConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        c = cfg.subsample_channels
        conv_init = partitioned(KERNEL_INIT, (None, None, None, None))
        bias_init = partitioned(nnx.initializers.zeros_init(), (None,))

        def conv(cin: int) -> nnx.Conv:
            return nnx.Conv(cin, c, (3, 3), strides=(2, 2), padding="SAME", dtype=dtype,
                            param_dtype=jnp.float32, kernel_init=conv_init, bias_init=bias_init,
                            rngs=rngs)

        self.conv1, self.conv2 = conv(1), conv(c)
        mel_out = math.ceil(math.ceil(cfg.n_mels / 2) / 2)
        self.proj = dense(c * mel_out, cfg.model_dim, (None, "embed"), rngs=rngs, dtype=dtype)
        self.norm = layer_norm(cfg.model_dim, rngs=rngs)

    def __call__(self, mel: jnp.ndarray) -> jnp.ndarray:
        """mel [batch, mel_frames, n_mels] -> z float32 [batch, mel_frames // 4, embed]."""
        frames = mel.shape[1] // SUBSAMPLING
        if frames == 0:
            raise ValueError(f"FeatureEncoder: {mel.shape[1]} log-mel frames give no 25 Hz frame; "
                             f"pass at least 640 samples (40 ms)")
        x = mel[:, :frames * SUBSAMPLING, :, None]
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))  # [batch, frames, mel / 4, channels]
        return self.norm(self.proj(x.reshape(x.shape[0], frames, -1)))


class W2vBertOutput(NamedTuple):
    context: jnp.ndarray  # [batch, frames, contrastive_dim] contrastive module, projected
    targets: jnp.ndarray  # [batch, frames, contrastive_dim] quantised features, projected
    quantized: Quantized  # codes and logits of the quantiser (unmasked features)
    mlm_logits: jnp.ndarray  # float32 [batch, frames, groups, entries]
    mlm_layers: tuple  # per MLM layer [batch, frames, embed] (layer l at index l - 1), or ()


class W2vBert(nnx.Module):
    """w2v-BERT: feature encoder, quantiser, contrastive module, MLM module and heads.

    `dtype` is the compute dtype (params are float32); bfloat16 on accelerators.
    """

    def __init__(self, config: W2vBertConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config, self.dtype = config, dtype
        d, ccfg = config.model_dim, config.conformer
        self.feature_encoder = FeatureEncoder(config, rngs=rngs, dtype=dtype)
        self.quantizer = GumbelQuantizer(d, config.codebook_groups, config.codebook_entries,
                                         config.codevector_dim, rngs=rngs, dtype=dtype)
        self.input_proj = dense(d, d, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.contrastive_layers = nnx.List(
            [ConformerBlock(ccfg, rngs=rngs, dtype=dtype) for _ in range(config.num_contrastive_layers)])
        self.mlm_layers = nnx.List(
            [ConformerBlock(ccfg, rngs=rngs, dtype=dtype) for _ in range(config.num_mlm_layers)])
        self.context_proj = dense(d, config.contrastive_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.target_proj = dense(config.codevector_dim, config.contrastive_dim, ("embed", "mlp"),
                                 rngs=rngs, dtype=dtype)
        self.mlm_head = dense(d, config.codebook_groups * config.codebook_entries,
                              ("embed", "vocab"), rngs=rngs, dtype=dtype)

    def num_frames(self, num_samples: int) -> int:
        return num_frames(num_samples, self.config)

    def encode(self, wav: jnp.ndarray, valid: jnp.ndarray | None = None) -> jnp.ndarray:
        """wav [batch, samples] -> unmasked features z float32 [batch, samples // 640, embed].

        valid: bool [batch, samples // 640] (see `valid_frames`): the frames whose log-mels set
        the per-utterance normalisation (config.normalize_log_mel); None: all frames.
        """
        mel = log_mel(wav, self.config.log_mel)
        if self.config.normalize_log_mel:
            frames = mel.shape[1] // SUBSAMPLING
            mel = mel[:, :frames * SUBSAMPLING]
            mel_valid = None if valid is None else jnp.repeat(valid, SUBSAMPLING, axis=1)
            mel = normalize_utterance(mel, mel_valid)
        return self.feature_encoder(mel)

    def _contrastive(self, z, valid, keys):
        x = self.input_proj(z)
        for layer, key in zip(self.contrastive_layers, keys):
            x = layer(x, valid, key)
        return x

    def __call__(self, wav: jnp.ndarray, *, mask: jnp.ndarray | None = None,
                 valid: jnp.ndarray | None = None, rng: jax.Array | None = None, gumbel_tau=1.0,
                 return_layers: bool = False) -> W2vBertOutput:
        """Full forward pass from audio.

        Args:
          wav: float [batch, samples] at 16 kHz.
          mask: bool [batch, frames] frames to mask (see masking.span_mask), or None.
          valid: bool [batch, frames], False on padding (see `valid_frames`), or None.
          rng: key for dropout, Gumbel noise and the random vectors of masked frames; None is
            evaluation mode (no dropout, argmax codes). Masking needs an rng.
          gumbel_tau: Gumbel-softmax temperature (quantizer.gumbel_temperature).
          return_layers: also return every MLM-module layer's activations.
        """
        return self.forward_features(self.encode(wav, valid), mask=mask, valid=valid, rng=rng,
                                     gumbel_tau=gumbel_tau, return_layers=return_layers)

    def forward_features(self, z: jnp.ndarray, *, mask: jnp.ndarray | None = None,
                         valid: jnp.ndarray | None = None, rng: jax.Array | None = None,
                         gumbel_tau=1.0, return_layers: bool = False) -> W2vBertOutput:
        """Forward pass from encoded features z [batch, frames, embed] (see `encode`)."""
        cfg = self.config
        n_layers = cfg.num_contrastive_layers + cfg.num_mlm_layers
        if rng is None:
            if mask is not None:
                raise ValueError("W2vBert: masking replaces frames with random vectors; pass rng=")
            noise_key = gumbel_key = feature_key = None
            layer_keys = [None] * n_layers
        else:
            noise_key, gumbel_key, feature_key, layers_key = jax.random.split(rng, 4)
            layer_keys = list(jax.random.split(layers_key, n_layers))
        quantized = self.quantizer(scale_gradient(z, cfg.quantizer_input_grad), gumbel_tau,
                                   gumbel_key)
        x = dropout(z, cfg.dropout, feature_key)
        if mask is not None:  # w2v-BERT replaces masked frames with random vectors
            noise = draws.normal(noise_key, x.shape, x.dtype)
            x = jnp.where(mask[..., None], noise, x)
        context = self._contrastive(x, valid, layer_keys[:cfg.num_contrastive_layers])
        h, layers = context, []
        for layer, key in zip(self.mlm_layers, layer_keys[cfg.num_contrastive_layers:]):
            h = layer(h, valid, key)
            layers.append(h)
        logits = self.mlm_head(h).astype(jnp.float32)
        logits = logits.reshape(*h.shape[:-1], cfg.codebook_groups, cfg.codebook_entries)
        return W2vBertOutput(
            context=self.context_proj(context).astype(jnp.float32),
            targets=self.target_proj(quantized.vectors).astype(jnp.float32),
            quantized=quantized, mlm_logits=logits,
            mlm_layers=tuple(layers) if return_layers else ())

    def mlm_layer_activations(self, wav: jnp.ndarray, layer: int,
                              valid: jnp.ndarray | None = None) -> jnp.ndarray:
        """Activations of MLM-module layer `layer` (1-based, as "layer 7" in AudioLM), evaluation
        mode, no masking; layers above it are not run.

        wav [batch, samples] -> float32 [batch, samples // 640, embed].
        """
        if not 1 <= layer <= self.config.num_mlm_layers:
            raise ValueError(f"W2vBert: MLM layer {layer} out of range 1..{self.config.num_mlm_layers}")
        h = self._contrastive(self.encode(wav, valid), valid, [None] * self.config.num_contrastive_layers)
        for block in self.mlm_layers[:layer]:
            h = block(h, valid)
        return h.astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
    """Number of parameters (nnx.Param leaves)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
