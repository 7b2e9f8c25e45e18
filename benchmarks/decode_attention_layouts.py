"""Time one KV-cached decoding step's attention (all layers) for KV-cache layouts.

At batch 1, `generate.py --profile` showed most of a step's kernel time in reduce fusions: XLA
turns the small attention dots (one query against the cache) into multiply + reduce, whose
speed depends on which cache axis the reduction runs over. This benchmark times the attention
alone, in a `fori_loop` like sampling's, for caches laid out [batch, keys, heads, head_dim]
("bkhd", the model's until session 16), [batch, heads, keys, head_dim] ("bhkd") and that with
values stored [batch, heads, head_dim, keys] ("bhkd_vt", `LayerCache`'s layout since, timed
through the model's `cached_attention`), and "pallas": that layout through the Pallas kernel
`pallas_decode_attention` (lm/decode_attention.py: the cache streamed once, the mask built from
the position in the kernel, and only the slots up to the position read, as in decoding).
`--kv-cache int8` stores the "bhkd_vt" and "pallas" caches as int8 with per-(position, head) f32
scales, as `LayerCache` does (the other layouts are skipped then). Writes JSON with microseconds
per step.

    python benchmarks/decode_attention_layouts.py --batch-sizes 1 64 --out results/x.json
    python benchmarks/decode_attention_layouts.py --batch-sizes 64 --layouts bhkd_vt pallas \
        --kv-cache int8 --block-keys 256 --out results/y.json
"""
from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.lm.attention import (KV_CACHES, LayerCache, cached_attention, causal_mask,
                                      reference_attention)
from audiolm_jax.lm.decode_attention import DecodeBlocks, pallas_decode_attention
from audiolm_jax.lm.int8 import quantize_int8

LAYOUTS = ("bkhd", "bhkd", "bhkd_vt", "pallas")
INT8_LAYOUTS = ("bhkd_vt", "pallas")    # the layouts that take `LayerCache`'s int8 scales


def attend(layout, q, cache, bias, mask, position, blocks):
    """q [b, 1, h, d] -> [b, 1, h, d]; `cache` a LayerCache in `layout`; bias [1, h, 1, K]; mask
    broadcastable (the "pallas" layout builds it from `position`)."""
    k_cache, v_cache = cache.key, cache.value
    if layout == "bkhd":
        return reference_attention(q, k_cache, v_cache, bias, mask)
    if layout == "bhkd_vt":                                  # the model's `LayerCache` layout
        return cached_attention(q, cache, bias, mask)
    if layout == "pallas":
        return pallas_decode_attention(q, cache, bias, position, blocks=blocks)
    scale = 1.0 / np.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhd,bhkd->bhqk", q, k_cache, preferred_element_type=jnp.float32)
    logits = jnp.where(mask, logits * scale + bias, -1e30)
    weights = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bhkd->bqhd", weights, v_cache)


def write(layout, cache, new, position, is_value):
    """new [b, 1, h, d] into the cache at `position`."""
    if layout == "bkhd":
        return jax.lax.dynamic_update_slice(cache, new, (0, position, 0, 0))
    if layout in INT8_LAYOUTS and is_value:
        new, at = jnp.transpose(new, (0, 2, 3, 1)), (0, 0, 0, position)
    else:
        new, at = jnp.transpose(new, (0, 2, 1, 3)), (0, 0, position, 0)
    return jax.lax.dynamic_update_slice(cache, new, at)


def cache_shape(layout, b, h, k, d, is_value):
    if layout == "bkhd":
        return (b, k, h, d)
    return (b, h, d, k) if (layout in INT8_LAYOUTS and is_value) else (b, h, k, d)


def write_cache(layout, cache, x, position):
    """x [b, 1, h, d] as the new key and value at `position`; int8 with its scales as
    `SelfAttention.decode` writes them."""
    if cache.key_scale is None:
        return LayerCache(write(layout, cache.key, x, position, False),
                          write(layout, cache.value, x, position, True))
    stored, scale = quantize_int8(x)
    scale = jnp.transpose(scale, (0, 2, 1))                          # [b, h, 1]
    write_scale = lambda s: jax.lax.dynamic_update_slice(s, scale, (0, 0, position))  # noqa: E731
    return LayerCache(write(layout, cache.key, stored, position, False),
                      write(layout, cache.value, stored, position, True),
                      write_scale(cache.key_scale), write_scale(cache.value_scale))


@functools.partial(jax.jit, static_argnames=("layout", "steps", "blocks"))
def run(layout, caches, q, bias, start, *, steps, blocks):
    max_len = caches[0].key.shape[2 if layout != "bkhd" else 1]

    def body(i, carry):
        caches, acc = carry
        position = start + i
        mask = causal_mask(position[None], jnp.arange(max_len))
        new = []
        x = q + acc.astype(q.dtype)
        for cache in caches:
            cache = write_cache(layout, cache, x, position)
            x = attend(layout, x, cache, bias, mask, position, blocks)
            new.append(cache)
        return tuple(new), acc + 1e-3 * x.astype(jnp.float32)

    return jax.lax.fori_loop(0, steps, body, (caches, jnp.zeros(q.shape, jnp.float32)))


def make_cache(layout, random, batch, heads, keys, head_dim, dtype, kv_cache):
    shape = lambda is_value: cache_shape(layout, batch, heads, keys, head_dim, is_value)  # noqa: E731
    if kv_cache == "compute":
        return LayerCache(random(shape(False), dtype), random(shape(True), dtype))
    int8 = lambda is_value: (50 * random(shape(is_value), jnp.float32)).astype(jnp.int8)  # noqa: E731
    scale = lambda: jnp.abs(random((batch, heads, keys), jnp.float32)) / 50  # noqa: E731
    return LayerCache(int8(False), int8(True), scale(), scale())


def time_layout(layout, batch, heads, keys, head_dim, layers, steps, dtype, repeats,
                kv_cache="compute", blocks=DecodeBlocks()):
    # Drawn on the device: numpy would spend minutes on batch 64's 3.5G cache entries.
    keys_rng = iter(jax.random.split(jax.random.key(0), 4 * layers + 2))
    random = lambda shape, dtype: jax.random.normal(next(keys_rng), shape, dtype)  # noqa: E731
    caches = tuple(make_cache(layout, random, batch, heads, keys, head_dim, dtype, kv_cache)
                   for _ in range(layers))
    q = random((batch, 1, heads, head_dim), dtype)
    bias = random((1, heads, 1, keys), jnp.float32)
    start = jnp.int32(keys - steps)
    call = functools.partial(run, layout, caches, q, bias, start, steps=steps, blocks=blocks)
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(call())
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
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--kv-cache", default="compute", choices=KV_CACHES,
                        help="int8: the int8 cache with scales (only the layouts that take it)")
    parser.add_argument("--block-keys", type=int, default=DecodeBlocks().keys,
                        help="pallas: keys per block")
    parser.add_argument("--num-warps", type=int, default=DecodeBlocks().num_warps)
    parser.add_argument("--num-stages", type=int, default=DecodeBlocks().num_stages)
    parser.add_argument("--out", default="results/decode_attention_layouts.json")
    args = parser.parse_args(argv)
    rows = {}
    blocks = DecodeBlocks(args.block_keys, args.num_warps, args.num_stages)
    layouts = [x for x in args.layouts if args.kv_cache == "compute" or x in INT8_LAYOUTS]
    for batch in args.batch_sizes:
        for layout in layouts:
            us = time_layout(layout, batch, args.heads, args.keys, args.head_dim, args.layers,
                             args.steps, jnp.dtype(args.dtype), args.repeats, args.kv_cache,
                             blocks)
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
