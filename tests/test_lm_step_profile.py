"""benchmarks/lm_step_profile.py: the timing-only ablations patch and restore the model, every
variant runs on a tiny config; benchmarks/kernel_trace.py reads a perfetto trace."""

import gzip
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import kernel_trace  # noqa: E402
import lm_step_profile as prof  # noqa: E402
from audiolm_jax.lm import attention, relative_bias, transformer  # noqa: E402


def test_ablations_patch_only_inside_the_block():
    call = relative_bias.RelativePositionBias.__call__
    fast = attention.fast_causal_attention
    hashed = transformer.dropout
    with prof.patched("bits_dropout"):
        assert transformer.dropout is prof.bits_dropout
    assert transformer.dropout is hashed
    with prof.patched("frozen_bias"):
        assert relative_bias.RelativePositionBias.__call__ is not call
    with prof.patched("no_bias"):
        assert attention.fast_causal_attention is not fast
    assert relative_bias.RelativePositionBias.__call__ is call
    assert attention.fast_causal_attention is fast


def test_frozen_bias_has_no_bias_gradient_and_no_bias_ignores_it():
    from flax import nnx
    bias = relative_bias.RelativePositionBias(2, rngs=nnx.Rngs(0))
    positions = jnp.arange(5)
    grad = lambda: nnx.grad(lambda m: jnp.sum(m(positions, positions) ** 2 + m.square(5)))(bias)
    assert float(jnp.abs(grad().embedding[...]).sum()) > 0
    with prof.patched("frozen_bias"):
        assert float(jnp.abs(grad().embedding[...]).sum()) == 0
    q = jax.random.normal(jax.random.key(0), (1, 6, 2, 8))
    big = jnp.full((1, 2, 6, 6), 5.0) * jnp.arange(6)
    with prof.patched("no_bias"):
        np.testing.assert_allclose(attention.fast_causal_attention(q, q, q, big),
                                   attention.fast_causal_attention(q, q, q, 0 * big), atol=1e-6)


def test_every_variant_times_a_tiny_step():
    config = prof.paper_config(tiny=True, remat="none")
    rows = {}
    for variant in prof.VARIANTS:
        row = prof.time_variant(variant, config, batch=2, length=16, prefix=4, steps=1)
        assert row["ms_per_step"] > 0 and np.isfinite(row["loss"]), row
        assert row["dropout"] == (0.0 if variant == "no_dropout" else 0.1)
        assert row["prng_impl"] == ("rbg" if variant == "rbg" else "threefry2x32")
        rows[variant] = row
    jax.config.update("jax_default_prng_impl", "threefry2x32")
    # XLA's cost model: the random-bit masks move more bytes than the hashed ones
    bytes_of = {v: rows[v]["xla_bytes_accessed_per_step"] for v in ("baseline", "bits_dropout")}
    assert bytes_of["bits_dropout"] > bytes_of["baseline"], bytes_of


def test_kernel_summary_sums_device_kernels_by_category(tmp_path):
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 1, "name": "cudnn_fmha_fwd", "dur": 3000},
        {"ph": "X", "pid": 1, "name": "sm90_xmma_gemm_bf16", "dur": 6000},
        {"ph": "X", "pid": 1, "name": "loop_add_fusion", "dur": 1500},
        {"ph": "X", "pid": 1, "name": "sm90_xmma_wgrad_implicit_gemm_bf16", "dur": 900},
        {"ph": "X", "pid": 1, "name": "regular_fft_factor_16", "dur": 375},
        {"ph": "X", "pid": 2, "name": "host gemm", "dur": 99000},   # host events are ignored
    ]
    (tmp_path / "plugins").mkdir()
    with gzip.open(tmp_path / "plugins" / "x.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    summary = kernel_trace.kernel_summary(str(tmp_path), steps=3)
    assert summary["device_ms_per_step"] == 3.925 and summary["kernels_per_step"] == 5 / 3
    assert summary["ms_per_step_by_category"] == {"matmul (cuBLAS/cutlass)": 2.0,
                                                 "attention (cuDNN fmha)": 1.0,
                                                 "fusion (elementwise)": 0.5,
                                                 "convolution (cuDNN)": 0.3,
                                                 "fft (cuFFT)": 0.125}


def test_kernel_summary_attributes_kernels_to_the_host_span_they_start_in(tmp_path):
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 2, "name": "audiolm/coarse", "ts": 100, "dur": 100},
        {"ph": "X", "pid": 2, "name": "audiolm/fine", "ts": 200, "dur": 50},
        {"ph": "X", "pid": 2, "name": "other/host_span", "ts": 0, "dur": 1000},
        {"ph": "X", "pid": 1, "name": "gemm_a", "ts": 100, "dur": 2000},      # coarse (its start)
        {"ph": "X", "pid": 1, "name": "loop_fusion", "ts": 199, "dur": 4000},  # coarse
        {"ph": "X", "pid": 1, "name": "gemm_b", "ts": 200, "dur": 1000},      # fine
        {"ph": "X", "pid": 1, "name": "gemm_c", "ts": 250, "dur": 500},       # after both spans
        {"ph": "X", "pid": 1, "name": "gemm_d", "ts": 50, "dur": 500},        # before both
    ]
    (tmp_path / "plugins").mkdir()
    with gzip.open(tmp_path / "plugins" / "x.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    summary = kernel_trace.kernel_summary(str(tmp_path), steps=1, span_prefix="audiolm/")
    assert summary["kernels_per_step"] == 5 and summary["device_ms_per_step"] == 8.0
    spans = summary["by_span"]
    assert set(spans) == {"coarse", "fine"}
    assert spans["coarse"]["kernels_per_step"] == 2 and spans["coarse"]["device_ms_per_step"] == 6.0
    assert spans["coarse"]["ms_per_step_by_category"] == {"fusion (elementwise)": 4.0,
                                                         "matmul (cuBLAS/cutlass)": 2.0}
    assert spans["fine"]["top_kernels_ms_per_step"] == {"gemm_b": 1.0}
    assert "by_span" not in kernel_trace.kernel_summary(str(tmp_path), steps=1)
