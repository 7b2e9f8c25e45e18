"""The memory floor of a decoding loop: bytes every step must read, over the HBM bandwidth.

Each step of `sampling._sample`'s loop runs one token per row through the stage Transformer.
It must read every weight that takes part in a matrix multiply once (shared by all rows; the
embedding lookup reads one row of its table) and, for every row, the keys and values of the
cache slots its phase attends to (`cache_phases`: phase p reads slots [0, width + stop_p)).
Neither can be skipped, so bytes / bandwidth is a lower bound on the step time; measured time
over it says how far a stage is from its memory roof. The arithmetic (2 FLOPs per weight per
row plus the attention products) is reported beside it: at batch 64 a step does ~64 FLOPs per
bf16 weight byte and ~1 per cache byte, far below the ~200 FLOPs per byte at which an H200's
compute and bandwidth balance, so the bytes are the roof.
"""
from __future__ import annotations

import dataclasses

from audiolm_jax.generate.sampling import cache_phase_bounds
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.flops import matmul_params


@dataclasses.dataclass(frozen=True)
class DecodeCall:
    """The shapes of one compiled decoding loop: `rows` sequences (prompts x samples), prompts
    left-padded to `width`, `num_tokens` steps in `cache_phases` phases, a model of `config`,
    a KV cache stored as `kv_cache` (`DecodeLoop.kv_cache`) and weight matrices as `weights`
    (`DecodeLoop.weights`); `model_id`: `id()` of the model, to tell stages of one config apart;
    `logit_width`: the output projection's columns a step reads (None: all,
    `sampling.logit_window_width`); `attention`: `DecodeLoop.attention` ("pallas" reads only
    the slots up to each step's own position, "xla" those of its whole phase)."""
    config: TransformerConfig
    rows: int
    width: int
    num_tokens: int
    cache_phases: int = 1
    kv_cache: str = "compute"
    model_id: int = dataclasses.field(default=0, compare=False)
    weights: str = "compute"
    logit_width: int | None = None
    attention: str = "xla"

    def _matmul_params(self) -> int:
        c = self.config
        skipped = 0 if self.logit_width is None else c.d_model * (c.padded_vocab_size
                                                                 - self.logit_width)
        return matmul_params(c) - skipped

    def phase_slots(self) -> list[tuple[int, int]]:
        """(steps, cache slots each of those steps reads) for every phase; with the Pallas
        kernel, for every step (step t attends to slots 0 .. width + t)."""
        if self.attention == "pallas":
            return [(1, self.width + t + 1) for t in range(self.num_tokens)]
        return [(stop - start, self.width + stop)
                for start, stop in cache_phase_bounds(self.num_tokens, self.cache_phases)]

    @property
    def weight_bytes_per_step(self) -> int:
        """int8: one byte per weight (the scales, one per output entry, are left out: <1%),
        except a tied output projection, which reads the embedding table in the compute dtype."""
        c = self.config
        params = self._matmul_params()
        if self.weights != "int8":
            return params * c.compute_dtype.itemsize
        output = c.d_model * (self.logit_width or c.padded_vocab_size)
        kept = output if c.tie_embeddings else 0
        return params - kept + kept * c.compute_dtype.itemsize

    def kv_bytes(self, slots: int) -> int:
        """Keys and values of `slots` cache slots of every row in every layer (int8: one byte
        per number plus an f32 scale per slot and head)."""
        c = self.config
        per_head = (c.head_dim + 4 if self.kv_cache == "int8"
                    else c.head_dim * c.compute_dtype.itemsize)
        return 2 * c.num_layers * self.rows * slots * c.num_heads * per_head

    def bytes_read(self) -> int:
        """Bytes the whole loop must read (weights every step + the cache each phase reads)."""
        return sum(steps * (self.weight_bytes_per_step + self.kv_bytes(slots))
                   for steps, slots in self.phase_slots())

    def flops(self) -> float:
        """Multiply-adds x 2 of the whole loop: the matmuls and the attention over read slots."""
        c = self.config
        per_slot = 4 * c.num_layers * c.num_heads * c.head_dim       # q.k and p.v, 2 FLOPs each
        return float(sum(steps * self.rows * (2 * self._matmul_params() + per_slot * slots)
                         for steps, slots in self.phase_slots()))


def stage_roofline(calls: list[DecodeCall], seconds: float | None,
                   bandwidth: float | None) -> dict:
    """Totals of a stage's decoding loops; with its measured `seconds` and the device's
    `bandwidth`, the memory-bound time and the fraction of it that the measurement reached."""
    steps = sum(c.num_tokens for c in calls)
    read = sum(c.bytes_read() for c in calls)
    out = {"calls": len(calls), "steps": steps, "rows": sorted({c.rows for c in calls}),
           "gbytes_read": read / 1e9, "gbytes_per_step": read / 1e9 / max(steps, 1),
           "weight_gbytes_per_step": (calls[0].weight_bytes_per_step / 1e9) if calls else 0.0,
           "tflops": sum(c.flops() for c in calls) / 1e12}
    if bandwidth:
        bound = read / bandwidth
        out["hbm_bound_seconds"] = bound
        out["hbm_bound_ms_per_step"] = 1000.0 * bound / max(steps, 1)
        if seconds:
            out["fraction_of_hbm_bound"] = bound / seconds
    return out
