"""Where a paper-size stage-LM training step spends its time (issue #7: what limits MFU).

Times one jitted AdamW training step (loss, gradients, update; parameters f32, compute bf16,
buffers donated) of the paper-size Transformer at a stage's shape under ablations that each
remove one cost, and profiles the baseline on the GPU, summing kernel time by category:

  baseline      the model as trained (dropout 0.1 with JAX's default PRNG, learned T5 bias)
  rbg           the step's keys from the "rbg" PRNG instead of threefry (the dropout masks
                are hashed from either: audiolm_jax/dropout.py)
  no_dropout    dropout 0 (the cost of all dropout masks)
  bits_dropout  masks from 16 jax.random bits per element, the implementation before the
                hashed masks (session 29): what the hash saves
  frozen_bias   the relative bias outside the gradient (the cost of the bias gradient)
  no_bias       attention without any bias (the cost of the bias inside the attention kernel)
  split         the "split" attention path (the bias on a 128-wide band in XLA, the rest
                through the unbiased flash kernel; lm/split_attention.py): a real option
  batch_<n>     the baseline at another batch size

The ablations are measurements, not training options: `frozen_bias` and `no_bias` patch the
model for the timing only. MFU uses the PaLM-style count of `audiolm_jax.lm.flops` against the
989 TFLOP/s dense bf16 datasheet peak; XLA's own FLOP count of the compiled step is reported too.

    python3 benchmarks/lm_step_profile.py --stage stage2 --out results/lm_step_profile.json
    python3 benchmarks/lm_step_profile.py --tiny --variants baseline no_dropout   # CPU smoke
    python3 benchmarks/lm_step_profile.py --batch 1 --length 512 --steps 3 --no-profile \
        --variants baseline bits_dropout no_dropout        # paper size, short: the CPU proxy
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from audiolm_jax.device_specs import peak_flops_per_device  # noqa: E402
from audiolm_jax.dropout import keep_probability  # noqa: E402
from audiolm_jax.lm import attention as attention_module  # noqa: E402
from audiolm_jax.lm import transformer as transformer_module  # noqa: E402
from audiolm_jax.lm import relative_bias as bias_module  # noqa: E402
from audiolm_jax.lm.flops import flops_per_token  # noqa: E402
from audiolm_jax.lm.loss import lm_loss  # noqa: E402
from audiolm_jax.lm.transformer import Transformer  # noqa: E402
from kernel_trace import kernel_summary  # noqa: E402
from train_stage import STAGES, paper_config  # noqa: E402

VARIANTS = ("baseline", "rbg", "no_dropout", "bits_dropout", "frozen_bias", "no_bias", "split")


def bits_dropout(x, rate, key):
    """Dropout as before session 29: a mask of 16 random bits per element, which XLA
    materialises, and autodiff saves as a boolean residual."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bits(key, x.shape, jnp.uint16) >= round(rate * 2 ** 16)
    scaled = (x.astype(jnp.float32) / keep_probability(rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros_like(x))


@contextlib.contextmanager
def patched(variant: str):
    """Apply a timing-only ablation of the model for the duration of the block."""
    saved = []

    def patch(module, name, value):
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    if variant == "bits_dropout":
        patch(transformer_module, "dropout", bits_dropout)
    elif variant == "frozen_bias":
        cls = bias_module.RelativePositionBias
        call, square = cls.__call__, cls.square
        patch(cls, "__call__", lambda self, q, k: jax.lax.stop_gradient(call(self, q, k)))
        patch(cls, "square", lambda self, length: jax.lax.stop_gradient(square(self, length)))
    elif variant == "no_bias":
        def unbiased(query, key, value, bias):
            # cuDNN where the biased path would use it (lengths padded to even as there), so
            # the difference is the bias alone, not cuDNN against XLA.
            if not attention_module.cudnn_supported(query, key):
                return jax.nn.dot_product_attention(query, key, value, is_causal=True)
            return attention_module.even_length_attention(query, key, value, None, "cudnn")
        patch(attention_module, "fast_causal_attention", unbiased)
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def make_step(config, tx):
    def loss_fn(params, graphdef, batch, key):
        return lm_loss(nnx.merge(graphdef, params), batch, key, True)[0]

    def step(params, opt_state, batch, key, graphdef):
        loss, grads = jax.value_and_grad(loss_fn)(params, graphdef, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, static_argnums=4, donate_argnums=(0, 1))


def random_batch(batch, length, prefix, vocab, seed=0):
    tokens = np.random.default_rng(seed).integers(3, vocab, (batch, length + 1), dtype=np.int32)
    mask = np.broadcast_to((np.arange(length) >= prefix).astype(np.float32), (batch, length))
    return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
            "loss_mask": jnp.asarray(mask)}


def time_variant(variant, config, batch, length, prefix, steps, profile_dir=None) -> dict:
    prng = "rbg" if variant == "rbg" else "threefry2x32"
    if variant == "no_dropout":
        config = paper_config(config.d_model < 1024, config.remat, dropout=0.0)
    elif variant == "split":
        config = dataclasses.replace(config, attention="split")
    jax.config.update("jax_default_prng_impl", prng)
    with patched(variant):
        graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))
        tx = optax.adamw(1e-4)
        opt_state = tx.init(params)
        data = random_batch(batch, length, prefix, config.vocab_size)
        step = make_step(config, tx)
        key = jax.random.key(0)
        compiled = step.lower(params, opt_state, data, key, graphdef).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        memory = compiled.memory_analysis()
        params, opt_state, loss = step(params, opt_state, data, key, graphdef)  # warm-up
        jax.block_until_ready(loss)
        times = []
        for i in range(steps):
            t = time.perf_counter()
            params, opt_state, loss = step(params, opt_state, data, jax.random.key(i + 1), graphdef)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t)
        if profile_dir:
            with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
                for i in range(3):
                    params, opt_state, loss = step(params, opt_state, data, jax.random.key(i), graphdef)
                jax.block_until_ready(loss)
    seconds = float(np.median(times))
    tokens_per_s = batch * length / seconds
    row = {"variant": variant, "batch": batch, "length": length, "prng_impl": prng,
           "dropout": config.dropout_rate, "ms_per_step": 1e3 * seconds,
           "tokens_per_s": tokens_per_s, "loss": float(loss),
           "xla_flops_per_step": float((cost or {}).get("flops", float("nan"))),
           "xla_bytes_accessed_per_step": float((cost or {}).get("bytes accessed", float("nan"))),
           "model_flops_per_step": flops_per_token(config, length) * batch * length}
    if memory is not None:
        row["temp_gib"] = memory.temp_size_in_bytes / 2**30
    if peak_flops_per_device():
        row["mfu"] = row["model_flops_per_step"] / seconds / peak_flops_per_device()
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="stage2", choices=sorted(STAGES))
    p.add_argument("--batch", type=int, default=None, help="default 32 for stage 1, else 16")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS),
                   help=f"any of {VARIANTS} or batch_<n>")
    p.add_argument("--length", type=int, default=None,
                   help="sequence length instead of the stage's (its prefix scaled with it)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--remat", default="none")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--tiny", action="store_true", help="tiny model and short sequences (CPU smoke)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "lm_step_profile.json"))
    args = p.parse_args()

    length, prefix = STAGES[args.stage]
    if args.tiny:
        length, prefix = length // 10, prefix // 10
    if args.length:
        length, prefix = args.length, prefix * args.length // length
    batch = args.batch or (32 if args.stage == "stage1" else 16)
    config = paper_config(args.tiny, args.remat)
    out = {"command": " ".join(["python3", "benchmarks/lm_step_profile.py", *sys.argv[1:]]),
           "date": datetime.date.today().isoformat(), "device": jax.devices()[0].device_kind,
           "jax": jax.__version__, "stage": args.stage, "remat": args.remat,
           "peak_flops": peak_flops_per_device(), "variants": []}
    for variant in args.variants:
        name, size = (variant, batch)
        if variant.startswith("batch_"):
            name, size = "baseline", int(variant.split("_")[1])
        elif variant not in VARIANTS:
            p.error(f"unknown variant {variant!r}: use one of {VARIANTS} or batch_<n>")
        profile = (variant == "baseline" and not args.no_profile and jax.default_backend() == "gpu")
        with tempfile.TemporaryDirectory() as trace_dir:
            try:
                row = time_variant(name, config, size, length, prefix, args.steps,
                                   trace_dir if profile else None)
                if profile:
                    out["baseline_kernels"] = kernel_summary(trace_dir)
            except Exception as e:  # noqa: BLE001 - an OOM or a refused kernel is a result too
                row = {"variant": variant, "batch": size, "error": f"{type(e).__name__}: {e}"[:400]}
        row["variant"] = variant
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    if "baseline_kernels" in out:
        print(json.dumps(out["baseline_kernels"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
