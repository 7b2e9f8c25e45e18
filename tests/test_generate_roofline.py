"""The decoding loop's memory floor (generate/roofline.py) against hand arithmetic, and the
recorder that hands `sample`'s loop shapes to it."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.device_specs import HBM_BYTES_PER_SECOND, PEAK_FLOPS, by_device_kind
from audiolm_jax.generate.roofline import DecodeCall, stage_roofline
from audiolm_jax.generate.sampling import record_calls, sample
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.transformer import Transformer

CONFIG = TransformerConfig(vocab_size=100, num_layers=2, num_heads=2, d_model=8, d_ff=16,
                           dropout_rate=0.0, relative_buckets=8, relative_max_distance=16,
                           dtype="bfloat16", vocab_multiple=8)


def test_bytes_and_flops_by_hand():
    # matmul weights: 2 layers x (4*8*8 attention + 3*8*16 gated ff) + 8*104 output = 2112
    call = DecodeCall(CONFIG, rows=3, width=5, num_tokens=4, cache_phases=2)
    assert call.phase_slots() == [(2, 7), (2, 9)]          # phase p reads width + its last stop
    weights = 2112 * 2                                      # bf16
    kv = lambda slots: 2 * 2 * 3 * slots * 8 * 2            # k+v, layers, rows, slots, d, bf16
    assert call.weight_bytes_per_step == weights
    assert call.bytes_read() == 2 * (weights + kv(7)) + 2 * (weights + kv(9))
    attention = 4 * 2 * 8                                   # per slot: q.k and p.v, 2 layers
    assert call.flops() == 2 * 3 * (2 * 2112 + attention * 7) + 2 * 3 * (2 * 2112 + attention * 9)
    one_phase = DecodeCall(CONFIG, rows=3, width=5, num_tokens=4)
    assert one_phase.bytes_read() == 4 * (weights + kv(9)) > call.bytes_read()

    int8 = DecodeCall(CONFIG, rows=3, width=5, num_tokens=4, kv_cache="int8")
    kv_int8 = lambda slots: 2 * 2 * 3 * slots * 2 * (4 + 4)   # 2 heads x (4 int8 + f32 scale)
    assert int8.bytes_read() == 4 * (weights + kv_int8(9))
    assert DecodeCall(CONFIG, rows=3, width=5, num_tokens=4, weights="int8").weight_bytes_per_step == 2112
    tied = dataclasses.replace(CONFIG, tie_embeddings=True)   # the table stays bf16: 8 x 104
    assert DecodeCall(tied, rows=1, width=5, num_tokens=4, weights="int8").weight_bytes_per_step \
        == (2112 - 832) + 2 * 832

    # The Pallas kernel: step t reads slots 0 .. width + t (6, 7, 8, 9), whatever the phases.
    pallas = DecodeCall(CONFIG, rows=3, width=5, num_tokens=4, cache_phases=2, attention="pallas")
    assert pallas.bytes_read() == 4 * weights + kv(6) + kv(7) + kv(8) + kv(9) < call.bytes_read()
    assert pallas.flops() == sum(3 * (2 * 2112 + attention * s) for s in (6, 7, 8, 9))

    window = DecodeCall(CONFIG, rows=3, width=5, num_tokens=4, logit_width=8)
    assert window.weight_bytes_per_step == (2112 - 8 * 96) * 2   # 8 of 104 output columns
    assert window.flops() == 4 * 3 * (2 * (2112 - 8 * 96) + attention * 9)

    table = stage_roofline([call, one_phase], seconds=0.5, bandwidth=1e6)
    total = call.bytes_read() + one_phase.bytes_read()
    assert table["steps"] == 8 and table["calls"] == 2 and table["rows"] == [3]
    assert table["hbm_bound_seconds"] == pytest.approx(total / 1e6)
    assert table["hbm_bound_ms_per_step"] == pytest.approx(1000 * total / 1e6 / 8)
    assert table["fraction_of_hbm_bound"] == pytest.approx(total / 1e6 / 0.5)
    assert "hbm_bound_seconds" not in stage_roofline([call], seconds=0.5, bandwidth=None)


def test_sample_records_its_loop_shapes():
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    prompts = [np.array([1, 2, 3]), np.array([4, 5])]
    with record_calls() as calls:
        sample(model, prompts, 6, rng=jax.random.key(0), num_samples=2, cache_phases=3)
        sample(model, prompts[:1], 5, rng=jax.random.key(1), shape_buckets=1)
        sample(model, prompts[:1], 2, rng=jax.random.key(1), allowed=np.array([[3, 9], [9, 12]]))
        sample(model, prompts[:1], 2, rng=jax.random.key(1), attention="pallas")
    sample(model, prompts, 2, rng=jax.random.key(2))                   # not recorded
    assert calls == [DecodeCall(CONFIG, rows=4, width=3, num_tokens=6, cache_phases=3),
                     DecodeCall(CONFIG, rows=1, width=4, num_tokens=8),   # bucketed: 3->4, 5->8
                     DecodeCall(CONFIG, rows=1, width=3, num_tokens=2, logit_width=8),
                     DecodeCall(CONFIG, rows=1, width=3, num_tokens=2, attention="pallas")]
    assert {c.model_id for c in calls} == {id(model)}


def test_datasheet_lookup_by_device_kind():
    assert by_device_kind(HBM_BYTES_PER_SECOND, "NVIDIA H200") == 4.8e12
    assert by_device_kind(HBM_BYTES_PER_SECOND, "NVIDIA H100 PCIe") == 2.0e12   # before "h100"
    assert by_device_kind(HBM_BYTES_PER_SECOND, "NVIDIA H100 80GB HBM3") == 3.35e12
    assert by_device_kind(PEAK_FLOPS, "TPU v5 lite") == 197e12
    assert by_device_kind(PEAK_FLOPS, "cpu") is None
