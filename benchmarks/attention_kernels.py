"""Causal attention kernels alone, forward + backward, at a stage's training shape (issue #7).

The stage-2 profile (docs/RESULTS.md) puts 34% of a step in cuDNN flash attention *with* the
learned T5 bias (~150 TFLOP/s counted causally) plus a separate bias-gradient kernel. Before
building an attention that keeps the bias out of the flash kernel (T5 buckets make the bias one
constant for every offset >= 128, so only a 128-wide band needs it), this measures what such a
design would cost, piece by piece, on the device at hand:

  cudnn_bias       the model's path: `fast_causal_attention` with the Toeplitz bias, gradients
                   into q, k, v and the [heads, buckets] table
  cudnn_no_bias    the same kernel without a bias (the floor for the far part)
  cudnn_no_bias_d72  head size padded 64 -> 72 (room for two extra value columns, which is
                   what recovering the far part's softmax normaliser would take)
  xla_band         XLA attention over the 128-wide band only, with the bias: blocks of 128
                   queries against their own and the previous block's keys
  split            `audiolm_jax.lm.split_attention`: the band in XLA + the far part through
                   the unbiased kernel (head size 72 with the normaliser columns), merged
  band_grad        `audiolm_jax.lm.band_grad_attention`: cuDNN with the bias but without its
                   bias-gradient output; the table's gradient from the 128-offset band
  band_grad_b64, band_grad_b32  the same with the band in blocks of 64 or 32 queries (192 or 160
                   keys per query instead of 256; smaller matrix products)
  pallas_bias      `audiolm_jax.lm.pallas_bias_attention`: Pallas (Triton) flash kernels that
                   make each tile's bias from the table and its indices (no [T, T] square); the
                   table's gradient from the band as band_grad's (tile sizes: --block-q/-k)
  split_lse        `audiolm_jax.lm.split_lse_attention`: the band through Pallas kernels on GPUs
                   + the far part through the unbiased kernel at head size 64, merged by their
                   log-normalisers; each part's backward runs on the merged residuals
  split_lse_xla_band  the same with the band in XLA (the path's CPU kernels)

Rows with a bias also give the forward output's largest error against an f32 reference
(einsum, full bias, f32 softmax), relative to the reference's largest magnitude, and the same
for the gradients in q and in the bias table (on the first two rows of the batch).

Each row: median ms of a jitted value-and-grad over `--steps` calls and TFLOP/s with the causal
FLOP count (forward 2 * 2 B H T^2 D / 2, backward 2.5x the forward).

    python3 benchmarks/attention_kernels.py --out results/attention_kernels.json
    python3 benchmarks/attention_kernels.py --tiny      # CPU smoke (XLA everywhere)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from audiolm_jax.lm import attention  # noqa: E402
from audiolm_jax.lm.band_grad_attention import band_grad_attention  # noqa: E402
from audiolm_jax.lm.pallas_bias_attention import BLOCKS, pallas_bias_attention  # noqa: E402
from audiolm_jax.lm.relative_bias import RelativePositionBias  # noqa: E402
from audiolm_jax.lm.split_attention import band_attention, split_bias_attention  # noqa: E402
from audiolm_jax.lm.split_lse_attention import XLA_BAND, split_lse_attention  # noqa: E402
from train_stage import STAGES  # noqa: E402

VARIANTS = ("cudnn_bias", "cudnn_no_bias", "cudnn_no_bias_d72", "xla_band", "split", "band_grad",
            "band_grad_b64", "band_grad_b32", "pallas_bias", "split_lse", "split_lse_xla_band")
BIASED = ("cudnn_bias", "split", "band_grad", "band_grad_b64", "band_grad_b32", "pallas_bias",
          "split_lse", "split_lse_xla_band")


def make_step(variant, length, heads, width=128, blocks=BLOCKS, piece="all"):
    """jit(value_and_grad) of sum(attention * cotangent) in q, k, v and the bias table;
    `piece` "forward": the loss alone; "no_table": gradients in q, k, v only (the compiler then
    drops the table's gradient pass)."""
    graphdef, state = nnx.split(RelativePositionBias(heads, rngs=nnx.Rngs(0)))

    def loss(q, k, v, table, cotangent):
        bias = nnx.merge(graphdef, jax.tree.map(lambda _: table, state))
        scale = 1.0 / np.sqrt(q.shape[-1])         # the model's head size, also when widened
        if variant == "cudnn_bias":
            out = attention.fast_causal_attention(q, k, v, bias.square(length)[None])
        elif variant.startswith("band_grad"):
            block = int(variant.split("_b")[-1]) if "_b" in variant else None
            out = band_grad_attention(q, k, v, *bias.split(), block=block)
        elif variant == "pallas_bias":
            out = pallas_bias_attention(q, k, v, *bias.split(), blocks=blocks)
        elif variant.startswith("split_lse"):
            band_kernel = XLA_BAND if variant == "split_lse_xla_band" else None
            out = split_lse_attention(q, k, v, *bias.split(), band_kernel=band_kernel)
        elif variant == "cudnn_no_bias":
            out = attention.unbiased_flash_attention(q, k, v, scale)
        elif variant == "cudnn_no_bias_d72":
            widen = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 8)))  # noqa: E731
            out = attention.unbiased_flash_attention(widen(q), widen(k), widen(v), scale)
            out = out[..., :q.shape[-1]]
        else:
            row = bias(jnp.zeros((1,), jnp.int32), -jnp.arange(width))[:, 0]  # offsets 0..w-1
            if variant == "xla_band":
                out = band_attention(q, k, v, row, scale)[0]
            else:
                # The model's split path: the far part through the same unbiased flash kernel
                # (before 2026-12-05 this row left it to XLA's default attention).
                out = split_bias_attention(q, k, v, row, bias.embedding[...][:, -1],
                                           attention.unbiased_flash_attention)
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    if piece == "forward":
        return jax.jit(loss)
    argnums = (0, 1, 2) if piece == "no_table" else (0, 1, 2, 3)
    return jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))


def reference_errors(step, q, k, v, table, cotangent) -> dict:
    """max |x - f32 reference| / max |reference| for the output and the gradients in q and in
    the table, on the first two rows of the batch."""
    q, k, v, cotangent = (x[:2] for x in (q, k, v, cotangent))
    length = q.shape[1]
    graphdef, state = nnx.split(RelativePositionBias(q.shape[2], rngs=nnx.Rngs(0)))
    positions = jnp.arange(length)
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731

    def reference(q, k, v, table):
        bias = nnx.merge(graphdef, jax.tree.map(lambda _: table, state)).square(length)[None]
        out = attention.reference_attention(q, k, v, bias, attention.causal_mask(positions, positions))
        return jnp.sum(out * cotangent), out

    (_, ref), (ref_dq, _, _, ref_dt) = jax.jit(jax.value_and_grad(
        reference, argnums=(0, 1, 2, 3), has_aux=True))(f32(q), f32(k), f32(v), table)
    (_, out), (dq, _, _, dt) = step(q, k, v, table, cotangent)
    error = lambda x, r: float(jnp.max(jnp.abs(f32(x) - r)) / jnp.max(jnp.abs(r)))  # noqa: E731
    return {"relative_error_vs_f32": error(out, ref), "d_query_relative_error_vs_f32": error(dq, ref_dq),
            "d_table_relative_error_vs_f32": error(dt, ref_dt)}


def median_seconds(step, args, steps) -> tuple[float, float]:
    """(median seconds per call over `steps` calls, the first call's seconds, compile included)."""
    t0 = time.perf_counter()
    jax.block_until_ready(step(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), first


def time_variant(variant, batch, length, heads, dim, dtype, steps, blocks=BLOCKS,
                 pieces=False) -> dict:
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((batch, length, heads, dim)), dtype)
               for _ in range(3))
    cotangent = jnp.asarray(rng.standard_normal((batch, length, heads, dim)), jnp.float32)
    table = jnp.asarray(rng.standard_normal((heads, 32)) * 0.1, jnp.float32)
    step = make_step(variant, length, heads, blocks=blocks)
    seconds, compile_s = median_seconds(step, (q, k, v, table, cotangent), steps)
    causal_flops = 3.5 * 2 * batch * heads * length**2 * dim  # (fwd + 2.5 fwd), half of 4BHT^2D
    row = {"variant": variant, "ms": 1e3 * seconds, "first_call_s": compile_s,
           "tflops_causal_count": causal_flops / seconds / 1e12}
    if variant == "pallas_bias":
        row["blocks"] = blocks._asdict()
    if pieces:  # where the time goes: forward, + backward in q k v, + the table's gradient
        row["pieces_ms"] = {piece: 1e3 * median_seconds(
            make_step(variant, length, heads, blocks=blocks, piece=piece),
            (q, k, v, table, cotangent), steps)[0] for piece in ("forward", "no_table")}
    if variant in BIASED:
        row.update(reference_errors(step, q, k, v, table, cotangent))
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="stage2", choices=sorted(STAGES))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--block-q", type=int, default=BLOCKS.q,
                   help="pallas_bias: queries per forward tile (and --block-k keys)")
    p.add_argument("--block-k", type=int, default=BLOCKS.k)
    p.add_argument("--backward-block-q", type=int, default=BLOCKS.backward_q,
                   help="pallas_bias: the backward kernels' tiles")
    p.add_argument("--backward-block-k", type=int, default=BLOCKS.backward_k)
    p.add_argument("--pieces", action="store_true",
                   help="also time each variant's forward alone and its gradients without the "
                        "bias table's (pieces_ms)")
    p.add_argument("--tiny", action="store_true", help="batch 1, 2 heads, length 300 (CPU smoke)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "attention_kernels.json"))
    args = p.parse_args()
    length = STAGES[args.stage][0]
    batch, heads, dtype = args.batch, args.heads, jnp.bfloat16
    if args.tiny:
        batch, heads, length, dtype = 1, 2, 300, jnp.float32
    out = {"command": " ".join(["python3", "benchmarks/attention_kernels.py", *sys.argv[1:]]),
           "date": datetime.date.today().isoformat(), "device": jax.devices()[0].device_kind,
           "jax": jax.__version__, "shape": {"batch": batch, "length": length, "heads": heads,
                                             "head_dim": args.head_dim}, "variants": []}
    blocks = BLOCKS._replace(q=args.block_q, k=args.block_k, backward_q=args.backward_block_q,
                             backward_k=args.backward_block_k)
    for variant in args.variants:
        try:
            row = time_variant(variant, batch, length, heads, args.head_dim, dtype, args.steps,
                               blocks, pieces=args.pieces)
        except Exception as e:  # noqa: BLE001 - a refused kernel is a result too
            row = {"variant": variant, "error": f"{type(e).__name__}: {e}"[:400]}
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
