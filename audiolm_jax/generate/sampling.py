"""Compiled, KV-cached sampling from a stage Transformer.

One jitted program per (model, shapes, sampling settings): a prefill of the prompts, then one
token per iteration of a `lax.fori_loop` (a `lax.while_loop` when rows may stop at an EOS id)
over the KV cache (no Python loop per token). Each
generated position t may be restricted to an id range `allowed[t] = [low, high)`, which keeps
acoustic tokens on the level the row-major layout puts there and semantic tokens in their range.

Prompts of different lengths share a batch by LEFT padding: row b's prompt occupies positions
[P - length_b, P) and the cache ignores keys before P - length_b (`decode_step(key_start=)`).
The T5 relative bias sees only key - query offsets, so a left-padded row decodes exactly as it
would alone. When every range is narrow, each step computes only the logits of a window of ids
that holds its range (`logit_window_width`). With `num_samples` > 1 the prompts are prefilled
once and their caches repeated: rows come out prompt-major (prompt 0's samples first).

Shapes may be bucketed (`shape_buckets` per octave, off by default): the prompt width is left-padded
up to a bucket and the loop runs to a bucketed token count whose extra tokens are dropped. Both
compute the same thing (the extra padding is masked like any padding; a token never sees later
ones, and step t's key is `fold_in(rng, t)` whatever the count: tested token for token on the
CPU in f32; on a GPU other shapes may order a sum differently, so a near-tie can flip a sampled
token), and they let calls of nearby lengths (the
acoustic generation of utterances of different durations, say) share one compiled program
instead of compiling one each.

With `cache_phases` = P > 1 the decoding loop is P consecutive loops over near-equal step
ranges, and phase p's attention reads only the cache slots its last step needs (a static slice
of the fixed-length cache): keys beyond a query's position are masked to an exact zero weight
anyway, so it computes the same thing (same caveat), while a large batch, whose steps are bound by reading the
cache, reads on average about (1 + 1/P) / 2 of it instead of all of it. Each phase is its own
loop body in the program (P times the compile work).

Sampling order per step: range mask, temperature (0 = argmax), top-k, top-p, then a
categorical draw with the key `fold_in(rng, step)`; the same seed gives the same tokens.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.lm.attention import DECODE_ATTENTION, KV_CACHES
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.int8 import WEIGHTS, Int8Weight
from audiolm_jax.lm.layouts import PAD
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.shape_buckets import geometric_bucket



@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """temperature: 0 takes the argmax. top_k: keep the k most likely ids (0: off).
    top_p: keep the smallest set of ids whose probability reaches top_p (1.0: off)."""
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"SamplingConfig.temperature={self.temperature}: use 0 (argmax) or a "
                             "positive temperature")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k={self.top_k}: use 0 (off) or a positive k")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p={self.top_p}: use a value in (0, 1]")


@dataclasses.dataclass(frozen=True)
class DecodeLoop:
    """How the decoding loop is compiled: `shape_buckets` per octave of prompt widths and token
    counts (None: exact shapes), `cache_phases` loops that each read only the filled part of the
    KV cache (1: one loop over the whole cache); neither changes what is sampled (module
    docstring). `kv_cache`: "compute" keeps keys and values in the compute dtype; "int8" stores
    them as int8 with a scale per position and head (`lm.attention`), half the bytes a
    large-batch step reads, at the price of logits that differ slightly (a near-tie may then
    sample another token). `unroll`: steps per iteration of a fixed-length loop (XLA's loop
    control runs once per iteration; the same computation; no effect with an EOS id).
    `min_rows`: decode at least this many rows, padding with copies of the last prompt (dropped
    from the result): with one row XLA computes the weight products as matrix-vector reductions,
    with two as GEMMs (benchmarks/decode_projections.py). A padded call samples the kept rows
    from the same distribution but draws other random numbers (the noise is drawn per batch
    shape); greedy decoding is unchanged. `weights`: "compute" decodes with the weight matrices
    in the compute dtype; "int8" stores them as int8 with a scale per output entry
    (`lm.int8.Int8Weight`, `decoding_weights`): half the weight memory, with logits that differ
    slightly; on an H100 XLA dequantises the matrices outside the products, so a step reads
    more, not less (benchmarks/decode_projections.py: 557 vs 316 us at two rows).
    `attention`: "xla" attends to the cache with XLA's ops (`cached_attention`); "pallas" runs
    each step's attention as one Pallas kernel that streams the cache (`lm.decode_attention`;
    the same computation, summed in another order). The fields are `sample`'s keyword
    arguments of the same names."""
    shape_buckets: int | None = None
    cache_phases: int = 1
    kv_cache: str = "compute"
    unroll: int = 1
    min_rows: int = 1
    weights: str = "compute"
    attention: str = "xla"


def filter_logits(logits: jax.Array, config: SamplingConfig, low: jax.Array,
                  high: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    """float32 [batch, vocab] -> the logits to draw from: -inf outside [low, high) per row,
    divided by the temperature, then cut to the top-k and the top-p nucleus. `offset`: the id
    of column 0 (logits of a window of ids, `Transformer.decode_step(logit_window=)`)."""
    ids = offset + jnp.arange(logits.shape[-1])
    inside = (ids[None, :] >= low[:, None]) & (ids[None, :] < high[:, None])
    logits = jnp.where(inside, logits.astype(jnp.float32), -jnp.inf)
    if config.temperature > 0:
        logits = logits / config.temperature
    if config.top_k > 0 and config.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, config.top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if config.top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs          # mass of the more likely ids
        kept = jnp.where(before < config.top_p, ordered, jnp.inf)   # the first is always kept
        logits = jnp.where(logits >= jnp.min(kept, axis=-1, keepdims=True), logits, -jnp.inf)
    return logits


def sample_logits(logits: jax.Array, key: jax.Array, config: SamplingConfig, low: jax.Array,
                  high: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    """int32 [batch]: one id per row of float32 [batch, vocab] logits, inside [low, high);
    column j of the logits is id offset + j."""
    logits = filter_logits(logits, config, low, high, offset)
    if config.temperature == 0:
        index = jnp.argmax(logits, axis=-1)
    else:
        index = jax.random.categorical(key, logits, axis=-1)
    return (offset + index).astype(jnp.int32)


def _checked_prompts(prompts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The prompts as flat int32 arrays; a clear error unless each holds at least BOS."""
    prompts = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
    if not prompts or min(p.size for p in prompts) == 0:
        raise ValueError("every prompt needs at least one token (BOS); build prompts with "
                         "audiolm_jax.lm.layouts.prompt_tokens")
    return prompts


def left_pad(prompts: Sequence[np.ndarray], pad_id: int = PAD,
             width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token prompts of any lengths (each >= 1) -> (int32 [batch, width] left-padded, int32
    [batch] lengths); `width` defaults to the longest prompt."""
    prompts = _checked_prompts(prompts)
    longest = max(p.size for p in prompts)
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"left_pad: width {width} is shorter than the longest prompt ({longest})")
    out = np.full((len(prompts), width), pad_id, np.int32)
    for row, prompt in enumerate(prompts):
        out[row, width - prompt.size:] = prompt
    return out, np.array([p.size for p in prompts], np.int32)


def decoding_weights(state: nnx.State, dtype, weights: str = "compute") -> nnx.State:
    """The weight matrices cast to the compute dtype (or int8) once, before the decoding loop.

    Every step casts each f32 matrix to the compute dtype before its matmul; inside a
    `while_loop` that re-reads and converts all ~230M parameters per token (1.4 GB at paper size)
    unless XLA hoists it. Casting first is exact: the loop's casts become no-ops. The relative
    bias table (read in f32) and the 1-D norm scales keep their dtype. With `weights` "int8"
    the products' matrices become `Int8Weight`s, which the loop's casts dequantise; the
    embedding table stays in the compute dtype (it is gathered from, and a tied model reads it
    as its output projection too)."""
    def cast(path, x):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if (x.ndim >= 2 and jnp.issubdtype(x.dtype, jnp.floating)
                and "relative_bias" not in names):
            if weights == "int8" and "embedding" not in names:
                return Int8Weight.quantize(x)
            return x.astype(dtype)
        return x
    return jax.tree_util.tree_map_with_path(cast, state)


def logit_window_width(allowed: np.ndarray, config: TransformerConfig) -> int | None:
    """The logits a step computes: a window as wide as the widest allowed range, rounded up to
    the model's `vocab_multiple` (None: the whole vocabulary, when that would not halve it).
    Each step's window starts at its range's low id, so the output projection reads only those columns
    (an acoustic step of the coarse stage: 1024 of 13315) and the draw is over them; the ids
    outside the range get probability zero either way, so the distribution is the same (the
    random numbers are drawn for the window's shape, so a seed samples other tokens)."""
    widest, multiple = int(np.max(allowed[:, 1] - allowed[:, 0])), config.vocab_multiple
    width = min(-(-widest // multiple) * multiple, config.padded_vocab_size)
    return width if 2 * width <= config.padded_vocab_size else None


def cache_phase_bounds(num_tokens: int, phases: int) -> list[tuple[int, int]]:
    """The decoding steps [0, num_tokens) cut into `phases` near-equal consecutive ranges."""
    if phases < 1:
        raise ValueError(f"cache_phases must be >= 1, got {phases}")
    stops = sorted({-(-num_tokens * (j + 1) // phases) for j in range(phases)})
    return [(a, b) for a, b in zip([0, *stops[:-1]], stops) if b > a]


@functools.partial(jax.jit, static_argnames=("graphdef", "num_tokens", "num_samples", "config",
                                             "eos_id", "cache_phases", "kv_cache", "unroll",
                                             "weights", "logit_width", "attention"))
def _sample(graphdef, state, prompts, lengths, allowed, rng, *, num_tokens, num_samples, config,
            eos_id, cache_phases=1, kv_cache="compute", unroll=1, weights="compute",
            logit_width=None, attention="xla"):
    compute_dtype = nnx.merge(graphdef, state).config.compute_dtype
    model: Transformer = nnx.merge(graphdef, decoding_weights(state, compute_dtype, weights))
    batch, width = prompts.shape
    key_start = (width - lengths).astype(jnp.int32)
    vocab = model.config.padded_vocab_size

    def window(step):
        """The ids whose logits step `step` draws from: all, or `logit_width` from its low."""
        if logit_width is None:
            return None
        low = allowed[jnp.minimum(step, num_tokens - 1), 0]
        return jnp.minimum(low, vocab - logit_width), logit_width

    def offset(step):
        return 0 if logit_width is None else window(step)[0]

    cache = model.init_cache(batch, width + num_tokens, kv_cache)
    logits, cache = model.decode_step(prompts, cache, 0, key_start, logit_window=window(0))
    logits = logits[:, -1]
    if num_samples > 1:
        repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
        logits, cache, key_start = repeat(logits), jax.tree.map(repeat, cache), repeat(key_start)
    rows = batch * num_samples
    out = jnp.full((rows, num_tokens), PAD, jnp.int32)
    done = jnp.zeros((rows,), bool)

    def body(carry, key_limit):
        step, logits, cache, out, done = carry
        low = jnp.broadcast_to(allowed[step, 0], (rows,))
        high = jnp.broadcast_to(allowed[step, 1], (rows,))
        token = sample_logits(logits, jax.random.fold_in(rng, step), config, low, high,
                              offset(step))
        token = jnp.where(done, PAD, token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
        if eos_id is not None:
            done = done | (token == eos_id)
        logits, cache = model.decode_step(token[:, None], cache, width + step, key_start,
                                          key_limit=key_limit, logit_window=window(step + 1),
                                          attention=attention)
        return step + 1, logits[:, 0], cache, out, done

    carry = (jnp.int32(0), logits, cache, out, done)
    # One loop per phase, each attending to the cache slots filled by its last step only
    # (module docstring: `cache_phases`).
    for start, stop in cache_phase_bounds(num_tokens, cache_phases):
        step_in_phase = functools.partial(body, key_limit=width + stop)
        if eos_id is None:
            # A loop of known trip count: XLA need not read the condition back from the device
            # every token, so the host can enqueue the next steps' kernels ahead of the GPU.
            carry = jax.lax.fori_loop(start, stop, lambda _, c, f=step_in_phase: f(c), carry,
                                      unroll=min(unroll, stop - start))
        else:
            carry = jax.lax.while_loop(
                lambda c, stop=stop: (c[0] < stop) & ~jnp.all(c[4]), step_in_phase, carry)
    return carry[3]


_RECORDERS: list[list] = []


@contextlib.contextmanager
def record_calls():
    """Collects a `roofline.DecodeCall` (the compiled loop's shapes) for every `sample` call made
    inside; benchmarks/generate.py turns them into each stage's memory floor."""
    calls: list = []
    _RECORDERS.append(calls)
    try:
        yield calls
    finally:
        _RECORDERS.remove(calls)


def sample(model: Transformer, prompts: Sequence[np.ndarray], num_tokens: int, *,
           rng: jax.Array, config: SamplingConfig = SamplingConfig(),
           allowed: np.ndarray | None = None, num_samples: int = 1,
           eos_id: int | None = None, shape_buckets: int | None = None,
           cache_phases: int = 1, kv_cache: str = "compute", unroll: int = 1,
           min_rows: int = 1, weights: str = "compute", attention: str = "xla") -> np.ndarray:
    """Continues each prompt by `num_tokens` sampled tokens.

    Args:
      model: a stage Transformer (dropout is off in decoding).
      prompts: token prompts (BOS first; see layouts.prompt_tokens), any lengths >= 1.
      num_tokens: tokens to generate per row.
      rng: a jax.random key; the same key, prompts and settings give the same tokens.
      allowed: int [num_tokens, 2] [low, high) ids for each generated position; None allows
        every real id [0, vocab_size).
      num_samples: continuations per prompt (rows are prompt-major).
      eos_id: stop a row after this id (later positions are PAD) and the loop once every row
        has stopped; None generates exactly `num_tokens`.
      shape_buckets: prompt widths and token counts are rounded up to this many buckets per
        octave (module docstring; the same computation); None compiles the exact shapes.
      cache_phases: the decoding loop in this many consecutive loops, each reading only the
        cache slots filled by its end (module docstring; the same computation).
      kv_cache: "compute" or "int8" (`DecodeLoop.kv_cache`).
      unroll: decoding steps per loop iteration when `eos_id` is None (`DecodeLoop.unroll`).
      min_rows: rows decoded at least, padded with copies of the last prompt (`DecodeLoop.min_rows`).
      weights: "compute" or "int8" weight matrices in the loop (`DecodeLoop.weights`).
      attention: "xla" or "pallas" attention to the cache in the loop (`DecodeLoop.attention`).
    Returns:
      int32 [len(prompts) * num_samples, num_tokens].
    """
    if num_tokens < 1 or num_samples < 1:
        raise ValueError(f"sample: num_tokens={num_tokens} and num_samples={num_samples} must be "
                         ">= 1")
    if allowed is None:
        allowed = np.tile(np.array([[0, model.config.vocab_size]], np.int32), (num_tokens, 1))
    allowed = np.asarray(allowed, np.int32)
    if allowed.shape != (num_tokens, 2):
        raise ValueError(f"sample: allowed has shape {allowed.shape}, expected ({num_tokens}, 2): "
                         "one [low, high) id range per generated token")
    if np.any(allowed[:, 0] >= allowed[:, 1]) or allowed.min() < 0 \
            or allowed.max() > model.config.vocab_size:
        raise ValueError(f"sample: every allowed range must be a non-empty [low, high) inside "
                         f"[0, {model.config.vocab_size}); check the vocabulary of this model")
    if kv_cache not in KV_CACHES:
        raise ValueError(f"sample: kv_cache {kv_cache!r} is not one of {KV_CACHES}")
    if weights not in WEIGHTS:
        raise ValueError(f"sample: weights {weights!r} is not one of {WEIGHTS}")
    if attention not in DECODE_ATTENTION:
        raise ValueError(f"sample: attention {attention!r} is not one of {DECODE_ATTENTION}")
    if unroll < 1:
        raise ValueError(f"sample: unroll={unroll}: give 1 or more steps per loop iteration")
    if min_rows < 1:
        raise ValueError(f"sample: min_rows={min_rows}: give 1 or more rows")
    prompts = _checked_prompts(prompts)
    rows = len(prompts) * int(num_samples)
    if rows < min_rows:                 # DecodeLoop.min_rows: the copies' rows are dropped below
        prompts = prompts + [prompts[-1]] * (-(-int(min_rows) // int(num_samples)) - len(prompts))
    width, steps = max(p.size for p in prompts), int(num_tokens)
    if shape_buckets is not None:
        width, steps = geometric_bucket(width, shape_buckets), geometric_bucket(steps, shape_buckets)
        # The extra steps' tokens are dropped: any valid range serves them.
        allowed = np.concatenate([allowed, np.repeat(allowed[-1:], steps - num_tokens, axis=0)])
    padded, lengths = left_pad(prompts, width=width)
    logit_width = logit_window_width(allowed, model.config)
    if _RECORDERS:
        # roofline imports this module: imported here, only while recording.
        from audiolm_jax.generate.roofline import DecodeCall  # noqa: PLC0415
        call = DecodeCall(model.config, len(prompts) * int(num_samples), width, steps,
                          int(cache_phases), kv_cache, id(model), weights, logit_width,
                          attention)
        for calls in _RECORDERS:
            calls.append(call)
    graphdef, state = nnx.split(model)
    out = _sample(graphdef, state, jnp.asarray(padded), jnp.asarray(lengths),
                  jnp.asarray(allowed), rng, num_tokens=steps,
                  num_samples=int(num_samples), config=config, eos_id=eos_id,
                  cache_phases=int(cache_phases), kv_cache=kv_cache, unroll=int(unroll),
                  weights=weights, logit_width=logit_width, attention=attention)
    return np.asarray(out)[:rows, :num_tokens]
