"""XL w2v-BERT on one GPU: build, one bf16 pretraining step (fwd+bwd+Adam), tokenizer forward."""
import time, sys, json
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, count_params
from audiolm_jax.semantic.objectives import batch_loss
from audiolm_jax.semantic.kmeans import kmeans_fit

print(jax.__version__, jax.devices(), flush=True)
batch, seconds = int(sys.argv[1]), float(sys.argv[2])
cfg = W2vBertConfig()
t = time.time()
model = nnx.jit(lambda: W2vBert(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16))()
print("params", count_params(model), "init s", round(time.time() - t, 1), flush=True)
opt = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
wav = jax.random.normal(jax.random.key(0), (batch, int(16000 * seconds))) * 0.1

@nnx.jit
def step(model, opt, wav, key, s):
    (loss, m), g = nnx.value_and_grad(lambda m: batch_loss(m, {"audio": wav}, key, s), has_aux=True)(model)
    opt.update(model, g)
    return loss, m

t = time.time(); loss, m = step(model, opt, wav, jax.random.key(1), jnp.int32(0)); jax.block_until_ready(loss)
print("compile+step s", round(time.time() - t, 1), "loss", float(loss), flush=True)
times = []
for i in range(5):
    t = time.time(); loss, m = step(model, opt, wav, jax.random.key(2 + i), jnp.int32(i + 1)); jax.block_until_ready(loss); times.append(time.time() - t)
print("step s", [round(x, 3) for x in times], {k: round(float(v), 3) for k, v in m.items()}, flush=True)
print("peak GiB", jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) / 2**30, flush=True)
emb = nnx.jit(lambda m, w: m.mlm_layer_activations(w, 7))
h = emb(model, wav); jax.block_until_ready(h)
t = time.time(); h = emb(model, wav); jax.block_until_ready(h)
print("layer-7 embed s", round(time.time() - t, 3), "audio s", batch * seconds, h.shape, flush=True)
x = jax.random.normal(jax.random.key(3), (1 << 20, 1024))
for trial in range(2):
    t = time.time(); r = kmeans_fit(x, 1024, jax.random.key(4), iters=10, init=x[:1024]); jax.block_until_ready(r.centroids)
    print("kmeans 1M x 1024, K=1024, 10 Lloyd iters (+1 final pass): s", round(time.time() - t, 2), "(1st call compiles)", flush=True)
t = time.time(); r = kmeans_fit(x[:1 << 17], 1024, jax.random.key(4), iters=0); jax.block_until_ready(r.centroids)
print("kmeans++ seeding of 1024 from 131072 x 1024 (incl. compile) s", round(time.time() - t, 2), flush=True)
