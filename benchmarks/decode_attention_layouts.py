"""Time one KV-cached decoding step's attention (all layers) for KV-cache layouts.

At batch 1, `generate.py --profile` showed most of a step's kernel time in reduce fusions: XLA
turns the small attention dots (one query against the cache) into multiply + reduce, whose
speed depends on which cache axis the reduction runs over. This benchmark times the attention
alone, in a `fori_loop` like sampling's, for caches laid out [batch, keys, heads, head_dim]
("bkhd", the model's until session 16), [batch, heads, keys, head_dim] ("bhkd") and that with
values stored [batch, heads, head_dim, keys] ("bhkd_vt", `LayerCache`'s layout since, timed
through the model's `cached_attention`). Writes JSON with microseconds per step.

    python benchmarks/decode_attention_layouts.py --batch-sizes 1 64 --out results/x.json
"""
from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.lm.attention import LayerCache, cached_attention, causal_mask, reference_attention

LAYOUTS = ("bkhd", "bhkd", "bhkd_vt")


def attend(layout, q, k_cache, v_cache, bias, mask):
    """q [b, 1, h, d] -> [b, 1, h, d]; caches in `layout`; bias [1, h, 1, K]; mask broadcastable."""
    if layout == "bkhd":
        return reference_attention(q, k_cache, v_cache, bias, mask)
    if layout == "bhkd_vt":                                  # the model's `LayerCache` layout
        return cached_attention(q, LayerCache(k_cache, v_cache), bias, mask)
    scale = 1.0 / np.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhd,bhkd->bhqk", q, k_cache, preferred_element_type=jnp.float32)
    logits = jnp.where(mask, logits * scale + bias, -1e30)
    weights = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bhkd->bqhd", weights, v_cache)


def write(layout, cache, new, position, is_value):
    """new [b, 1, h, d] into the cache at `position`."""
    if layout == "bkhd":
        return jax.lax.dynamic_update_slice(cache, new, (0, position, 0, 0))
    if layout == "bhkd_vt" and is_value:
        new, at = jnp.transpose(new, (0, 2, 3, 1)), (0, 0, 0, position)
    else:
        new, at = jnp.transpose(new, (0, 2, 1, 3)), (0, 0, position, 0)
    return jax.lax.dynamic_update_slice(cache, new, at)


def cache_shape(layout, b, h, k, d, is_value):
    if layout == "bkhd":
        return (b, k, h, d)
    return (b, h, d, k) if (layout == "bhkd_vt" and is_value) else (b, h, k, d)


@functools.partial(jax.jit, static_argnames=("layout", "steps"))
def run(layout, caches, q, bias, start, *, steps):
    max_len = caches[0][0].shape[2 if layout != "bkhd" else 1]

    def body(i, carry):
        caches, acc = carry
        position = start + i
        mask = causal_mask(position[None], jnp.arange(max_len))
        new = []
        x = q + acc.astype(q.dtype)
        for k_cache, v_cache in caches:
            k_cache = write(layout, k_cache, x, position, False)
            v_cache = write(layout, v_cache, x, position, True)
            x = attend(layout, x, k_cache, v_cache, bias, mask)
            new.append((k_cache, v_cache))
        return tuple(new), acc + 1e-3 * x.astype(jnp.float32)

    return jax.lax.fori_loop(0, steps, body, (caches, jnp.zeros(q.shape, jnp.float32)))


def time_layout(layout, batch, heads, keys, head_dim, layers, steps, dtype, repeats):
    # Drawn on the device: numpy would spend minutes on batch 64's 3.5G cache entries.
    keys_rng = iter(jax.random.split(jax.random.key(0), 2 * layers + 2))
    random = lambda shape, dtype: jax.random.normal(next(keys_rng), shape, dtype)
    caches = tuple((random(cache_shape(layout, batch, heads, keys, head_dim, False), dtype),
                    random(cache_shape(layout, batch, heads, keys, head_dim, True), dtype))
                   for _ in range(layers))
    q = random((batch, 1, heads, head_dim), dtype)
    bias = random((1, heads, 1, keys), jnp.float32)
    start = jnp.int32(keys - steps)
    jax.block_until_ready(run(layout, caches, q, bias, start, steps=steps))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(layout, caches, q, bias, start, steps=steps))
        times.append(time.perf_counter() - t)
    return 1e6 * min(times) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--keys", type=int, default=2251, help="cache length (stage 2: 2251)")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default="results/decode_attention_layouts.json")
    args = parser.parse_args(argv)
    rows = {}
    for batch in args.batch_sizes:
        for layout in LAYOUTS:
            us = time_layout(layout, batch, args.heads, args.keys, args.head_dim, args.layers,
                             args.steps, jnp.dtype(args.dtype), args.repeats)
            rows[f"{layout}_b{batch}"] = us
            print(f"batch {batch} {layout}: {us:.1f} us per step ({args.layers} layers)", flush=True)
    result = {"benchmark": "decode_attention_layouts", "device": jax.devices()[0].device_kind,
              "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "args": vars(args),
              "us_per_step": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
