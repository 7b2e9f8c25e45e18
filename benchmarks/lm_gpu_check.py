"""GPU check of the stage LM: cuDNN fast path vs reference attention, KV cache, paper-size train
step speed. Writes $OUT/lm_gpu_check.json (kept in results/). Run on one GPU:
    PYTHONPATH=. python3 benchmarks/lm_gpu_check.py
"""
import dataclasses, json, os, sys, time
sys.path.insert(0, os.getcwd())
import jax, jax.numpy as jnp, numpy as np
import flax
from flax import nnx
from audiolm_jax.lm import Transformer, TransformerConfig, lm_loss, flops_per_token, param_count
from audiolm_jax.lm.attention import causal_mask, cudnn_supported, fast_causal_attention, reference_attention

out = {"jax": jax.__version__, "flax": flax.__version__, "device": str(jax.devices()[0].device_kind)}
print(out, flush=True)

def bench(f, *a, n=10):
    jax.block_until_ready(f(*a))
    t = time.perf_counter()
    for _ in range(n):
        r = f(*a)
    jax.block_until_ready(r)
    return (time.perf_counter() - t) / n

# 1. attention op, bf16, B=4 T=2048 H=16 D=64
B, T, H, D = 4, 2048, 16, 64
ks = jax.random.split(jax.random.key(0), 4)
q, k, v = (jax.random.normal(kk, (B, T, H, D), jnp.bfloat16) for kk in ks[:3])
bias = (0.5 * jax.random.normal(ks[3], (1, H, T, T))).astype(jnp.bfloat16)
pos = jnp.arange(T)
ref = lambda q, k, v, b: reference_attention(q, k, v, b, causal_mask(pos, pos))
out["cudnn_supported"] = cudnn_supported(q, k)
fast_j, ref_j = jax.jit(fast_causal_attention), jax.jit(ref)
hlo = fast_j.lower(q, k, v, bias).compile().as_text()
out["fast_uses_cudnn_fmha"] = "cudnn" in hlo and "fmha" in hlo
exact = reference_attention(*(x.astype(jnp.float32) for x in (q, k, v, bias)), causal_mask(pos, pos))
out["fwd_maxerr_fast_vs_f32"] = float(jnp.max(jnp.abs(fast_j(q, k, v, bias).astype(jnp.float32) - exact)))
out["fwd_maxerr_ref_vs_f32"] = float(jnp.max(jnp.abs(ref_j(q, k, v, bias).astype(jnp.float32) - exact)))
gradf = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) ** 2), argnums=(0, 1, 2, 3)))
gf, gr = gradf(fast_causal_attention)(q, k, v, bias), gradf(ref)(q, k, v, bias)
out["grad_rel_err_fast_vs_ref"] = [float(jnp.linalg.norm((a - b).astype(jnp.float32)) / jnp.linalg.norm(b.astype(jnp.float32))) for a, b in zip(gf, gr)]
out["attn_fwd_ms_fast"] = 1e3 * bench(fast_j, q, k, v, bias)
out["attn_fwd_ms_ref"] = 1e3 * bench(ref_j, q, k, v, bias)
out["attn_fwdbwd_ms_fast"] = 1e3 * bench(gradf(fast_causal_attention), q, k, v, bias)
out["attn_fwdbwd_ms_ref"] = 1e3 * bench(gradf(ref), q, k, v, bias)
print(json.dumps(out, indent=1), flush=True)

# 2. KV cache == full forward, f32, tiny-ish config on GPU
cfg = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128)
m = Transformer(cfg, rngs=nnx.Rngs(0)); gd, st = nnx.split(m)
toks = jax.random.randint(jax.random.key(1), (2, 40), 0, 195)
@jax.jit
def dec(st, toks):
    m = nnx.merge(gd, st); c = m.init_cache(2, 48)
    first, c = m.decode_step(toks[:, :10], c, 0)
    def step(c, p):
        l, c = m.decode_step(jax.lax.dynamic_slice_in_dim(toks, p, 1, 1), c, p); return c, l[:, 0]
    _, rest = jax.lax.scan(step, c, jnp.arange(10, 40))
    return jnp.concatenate([first, jnp.swapaxes(rest, 0, 1)], 1)
full = jax.jit(lambda st, t: nnx.merge(gd, st)(t))(st, toks)
out["kv_cache_maxerr_f32"] = float(jnp.max(jnp.abs(dec(st, toks) - full)))
print("kv", out["kv_cache_maxerr_f32"], flush=True)

# 3. paper config, bf16, fast vs reference logits and train-step speed
paper = TransformerConfig(vocab_size=13315, dtype="bfloat16")
out["paper_params"] = param_count(paper)
batch_size, L = 8, 2048
toks = jax.random.randint(jax.random.key(2), (batch_size, L + 1), 3, 13315)
batch = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "loss_mask": jnp.ones((batch_size, L))}
for path in ("fast", "reference"):
    model = Transformer(dataclasses.replace(paper, attention=path), rngs=nnx.Rngs(0))
    gd, st = nnx.split(model)
    fwd = jax.jit(lambda st, t: nnx.merge(gd, st)(t))
    logits = fwd(st, batch["inputs"])
    out[f"paper_logits_{path}_sample"] = np.asarray(logits[0, :4, 3:8]).tolist()
    if path == "fast":
        fast_logits = logits
    else:
        out["paper_logits_maxdiff_fast_vs_ref"] = float(jnp.max(jnp.abs(fast_logits - logits)))
        out["paper_logits_meanabs"] = float(jnp.mean(jnp.abs(logits[..., :13315])))
    def loss_fn(st, batch, key):
        return lm_loss(nnx.merge(gd, st), batch, key, True)[0]
    step = jax.jit(jax.value_and_grad(loss_fn))
    sec = bench(step, st, batch, jax.random.key(0), n=5)
    tps = batch_size * L / sec
    out[f"paper_train_step_ms_{path}"] = 1e3 * sec
    out[f"paper_tokens_per_s_{path}"] = tps
    out[f"paper_mfu_{path}_vs_989tflops"] = flops_per_token(paper, L) * tps / 989e12
    print(path, out[f"paper_train_step_ms_{path}"], flush=True)
    del model, st, logits
print(json.dumps(out, indent=1), flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "lm_gpu_check.json"), "w"), indent=1)
