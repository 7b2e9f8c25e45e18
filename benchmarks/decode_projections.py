"""Time one batch-1 decoding step's weight products (all layers) as XLA compiles them.

`generate.py --profile` at batch 1 put ~60% of a step's kernel time in reduce fusions: with one
row of activations, XLA's GPU simplifier rewrites a small dot (operands under ~10M elements)
into multiply + reduce instead of a GEMM. This times a decoder's per-layer products (q, k, v,
out, gated FFN wi_0, wi_1, wo) in a `fori_loop` like sampling's, in variants: "separate" (the
model's seven products), "fused" (q|k|v one product, wi_0|wi_1 one), and "*_rows{M}" (the
activation padded to M rows, so the dot is no longer matrix-vector and stays a GEMM; the fine
stage decodes several chunks at once, so its products already have M > 1), and "int8w*"
(weight-only int8 with a scale per output entry, `lm.int8.Int8Weight` as `generate --weights
int8` decodes: half the weight bytes, if XLA keeps the conversion inside the product;
"int8w_after" scales the product's output instead). Writes JSON with microseconds per step
and the HBM bandwidth the weights' bytes imply.

    python benchmarks/decode_projections.py --out results/x.json
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from audiolm_jax.lm.int8 import Int8Weight  # noqa: E402


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ScaleAfter(Int8Weight):
    """The same int8 matrix, its scales applied to the product's output instead of the weights
    (x @ (q s) = (x @ q) s for a scale per output column): the other form XLA may fuse."""


def matmul(x, w):
    if isinstance(w, ScaleAfter):
        return (x @ w.stored.astype(x.dtype)) * w.scale.astype(x.dtype)
    return x @ w[...].astype(x.dtype)      # the model's form (`Int8Weight.astype` dequantises)


def weights(d, f, layers, dtype, fused, int8=None):
    """int8: None (dtype), "dequant" (`Int8Weight`, as `--weights int8` decodes) or "after"."""
    rng = np.random.default_rng(0)
    kind = {"dequant": Int8Weight, "after": ScaleAfter}.get(int8)
    def w(*shape):
        matrix = jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[0]))
        return kind.quantize(matrix) if kind else matrix.astype(dtype)
    if fused:
        return [dict(qkv=w(d, 3 * d), o=w(d, d), wi=w(d, 2 * f), wo=w(f, d)) for _ in range(layers)]
    return [dict(q=w(d, d), k=w(d, d), v=w(d, d), o=w(d, d), wi0=w(d, f), wi1=w(d, f), wo=w(f, d))
            for _ in range(layers)]


def layer(x, p, fused):
    """x [rows, d] -> [rows, d]: the products of one block (attention itself left out)."""
    if fused:
        q, k, v = jnp.split(matmul(x, p["qkv"]), 3, axis=-1)
        h = x + matmul(q + k + v, p["o"])
        a, b = jnp.split(matmul(h, p["wi"]), 2, axis=-1)
    else:
        h = x + matmul(matmul(x, p["q"]) + matmul(x, p["k"]) + matmul(x, p["v"]), p["o"])
        a, b = matmul(h, p["wi0"]), matmul(h, p["wi1"])
    return h + matmul(jax.nn.gelu(a) * b, p["wo"])


@functools.partial(jax.jit, static_argnames=("fused", "rows", "steps"))
def run(params, x, *, fused, rows, steps):
    def body(_, x):
        y = jnp.pad(x, ((0, rows - x.shape[0]), (0, 0))) if rows > x.shape[0] else x
        for p in params:
            y = layer(y, p, fused)
        return x + 1e-3 * y[: x.shape[0]]
    return jax.lax.fori_loop(0, steps, body, x)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--d-ff", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/decode_projections.json")
    args = parser.parse_args(argv)
    variants = {"separate": (False, 1, None), "separate_rows2": (False, 2, None),
                "separate_rows4": (False, 4, None), "fused": (True, 1, None),
                "fused_rows2": (True, 2, None), "int8w": (False, 1, "dequant"),
                "int8w_rows2": (False, 2, "dequant"), "int8w_fused_rows2": (True, 2, "dequant"),
                "int8w_after_rows2": (False, 2, "after")}
    weight_bytes = 2 * args.layers * (4 * args.d_model ** 2 + 3 * args.d_model * args.d_ff)
    rows = {}
    x = jnp.ones((1, args.d_model), jnp.bfloat16)
    for name, (fused, m, int8) in variants.items():
        params = weights(args.d_model, args.d_ff, args.layers, jnp.bfloat16, fused, int8)
        jax.block_until_ready(run(params, x, fused=fused, rows=m, steps=args.steps))
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(run(params, x, fused=fused, rows=m, steps=args.steps))
            times.append(time.perf_counter() - t)
        us = 1e6 * min(times) / args.steps
        read = weight_bytes // 2 if int8 else weight_bytes  # int8 scales: <1% more, left out
        rows[name] = {"us_per_step": us, "weight_tb_per_s": read / us / 1e6}
        print(f"{name}: {us:.1f} us per step, {read / us / 1e6:.2f} TB/s", flush=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "decode_projections", "device": jax.devices()[0].device_kind,
                   "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                   "date": time.strftime("%Y-%m-%d"), "args": vars(args),
                   "weight_bytes_per_step": weight_bytes, "variants": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
