"""Stage-LM training throughput and MFU through the real trainer (issue #7).

Runs `audiolm_jax.training.trainer.train` on the paper-size stage Transformer (gin
models/lm_paper: 12 layers, 16 heads, d=1024, ff=4096, bf16 compute, f32 master weights, AdamW)
with synthetic token batches of each stage's shape (stage 1: batch x 750; stage 2: batch x 2251 =
250 semantic + SEP + 500 frames x 4 coarse levels), and reports tokens/s and MFU against the
datasheet dense bf16 peak (989 TFLOP/s for H100/H200) with the PaLM-style FLOP count of
`audiolm_jax.lm.flops.flops_per_token`. The trainer's own wall time per step after the first is
used (`TrainResult.seconds_per_step`), so the figure includes everything a real run pays per step.

    python3 benchmarks/train_stage.py --out results/train_stage.json            # one GPU
    python3 benchmarks/train_stage.py --tiny --steps 6                            # CPU smoke
    python3 benchmarks/train_stage.py --mesh data=2 --out results/train_stage_2gpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from audiolm_jax.device_specs import peak_flops_per_device  # noqa: E402
from audiolm_jax.lm.attention import ATTENTION_PATHS  # noqa: E402
from audiolm_jax.lm.config import TransformerConfig  # noqa: E402
from audiolm_jax.lm.flops import flops_per_token, param_count  # noqa: E402
from audiolm_jax.lm.objective import StageObjective  # noqa: E402
from audiolm_jax.training.checkpoint import CheckpointConfig  # noqa: E402
from audiolm_jax.training.mesh import MeshConfig  # noqa: E402
from audiolm_jax.training.optim import OptimizerConfig  # noqa: E402
from audiolm_jax.training.trainer import train  # noqa: E402

# (name, sequence length, prefix length without loss) at the paper's crops.
STAGES = {"stage1": (750, 0), "stage2": (2251, 251), "stage3": (1801, 601)}


class RandomTokens:
    """Endless synthetic stage batches (the model's speed does not depend on the token values)."""

    def __init__(self, batch: int, length: int, prefix: int, vocab: int, shard_index: int,
                 shard_count: int):
        self.rng = np.random.default_rng(shard_index)
        self.batch, self.length, self.prefix, self.vocab = batch // shard_count, length, prefix, vocab
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.step += 1
        tokens = self.rng.integers(3, self.vocab, (self.batch, self.length + 1), dtype=np.int32)
        mask = np.broadcast_to((np.arange(self.length) >= self.prefix).astype(np.float32),
                               (self.batch, self.length))
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask.copy()}

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = state["step"]


def paper_config(tiny: bool, remat: str, dropout: float = 0.1,
                 attention: str = "fast") -> TransformerConfig:
    if tiny:
        return TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                                 dtype="float32", dropout_rate=dropout, attention=attention)
    return TransformerConfig(vocab_size=13315, num_layers=12, num_heads=16, d_model=1024,
                             d_ff=4096, dtype="bfloat16", attention=attention, remat=remat,
                             dropout_rate=dropout)


def run_one(config, length, prefix, batch, steps, mesh, peak, devices=None):
    """One timed training run; `devices` (default: all) is where the trainer lays its mesh."""
    def data(shard_index=0, shard_count=1):
        return RandomTokens(batch, length, prefix, config.vocab_size, shard_index, shard_count)

    with tempfile.TemporaryDirectory() as workdir:
        result = train(objective=StageObjective(config, OptimizerConfig(learning_rate=1e-4)),
                       train_data=data, num_train_steps=steps, workdir=workdir,
                       mesh_config=mesh, checkpoint=CheckpointConfig(every_steps=0, keep=1,
                                                                     async_save=False),
                       compute_dtype=config.dtype, log_every=max(1, steps // 2),
                       axis_rules=None, devices=devices)
    tokens_per_s = batch * length / result.seconds_per_step
    row = {"batch": batch, "length": length, "seconds_per_step": result.seconds_per_step,
           "tokens_per_s": tokens_per_s, "loss": result.metrics.get("model/loss")}
    if peak:
        row["mfu"] = flops_per_token(config, length) * tokens_per_s / (peak * (len(devices) if devices else jax.device_count()))
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="*", default=["stage1", "stage2"], choices=sorted(STAGES))
    p.add_argument("--batch-sizes", nargs="*", type=int, default=None,
                   help="per stage, tried in order; default 32 for stage 1, 16 for stage 2/3")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--remat", default="none")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=2 or fsdp=2 or data=1,fsdp=2")
    p.add_argument("--dropout", type=float, default=0.1, help="the paper's 0.1; 0 shows its cost")
    p.add_argument("--prng-impl", default=None, choices=("threefry2x32", "rbg", "unsafe_rbg"),
                   help="jax_default_prng_impl of the step's keys (default: JAX's threefry; the "
                        "dropout masks are hashed from them: audiolm_jax/dropout.py)")
    p.add_argument("--attention", default="fast", choices=ATTENTION_PATHS,
                   help="fast: cuDNN flash with the bias; band_grad: the same without cuDNN's "
                        "bias gradient, the table's from a band (lm/band_grad_attention.py); "
                        "split: the bias on a band in XLA, the rest through the unbiased flash "
                        "kernel (lm/split_attention.py)")
    p.add_argument("--tiny", action="store_true", help="tiny model and short sequences (CPU smoke)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "train_stage.json"))
    args = p.parse_args()

    if args.prng_impl:
        jax.config.update("jax_default_prng_impl", args.prng_impl)
    mesh = MeshConfig(**{k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))})
    config = paper_config(args.tiny, args.remat, args.dropout, args.attention)
    peak = peak_flops_per_device()
    out = {"command": " ".join(["python3", "benchmarks/train_stage.py", *sys.argv[1:]]),
           "date": datetime.date.today().isoformat(), "host": platform.node(),
           "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
           "jax": jax.__version__, "mesh": args.mesh, "params": param_count(config),
           "peak_flops_per_device": peak, "remat": args.remat, "dropout": args.dropout, "attention": args.attention,
           "prng_impl": args.prng_impl or jax.config.jax_default_prng_impl}
    for stage in args.stages:
        length, prefix = STAGES[stage]
        if args.tiny:
            length, prefix = length // 10, prefix // 10
        default = [32] if stage == "stage1" else [16]
        rows = []
        for batch in (args.batch_sizes or default):
            try:
                rows.append(run_one(config, length, prefix, batch, args.steps, mesh, peak))
            except Exception as e:  # noqa: BLE001 - an OOM at a batch size is a result too
                rows.append({"batch": batch, "length": length, "error": f"{type(e).__name__}: {e}"[:300]})
            print(stage, rows[-1], flush=True)
        ok = [r for r in rows if "tokens_per_s" in r]
        best = max(ok, key=lambda r: r["tokens_per_s"]) if ok else {}
        out[stage] = {**best, "runs": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in args.stages}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
