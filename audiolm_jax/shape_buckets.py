"""Geometric shape buckets: few distinct array sizes, so few compiled programs.

Every distinct shape is one XLA program, and on GPU each compile autotunes its kernels (tens of
seconds for a convolutional model), so code that meets many lengths rounds them up to buckets:
`steps` per doubling bounds the padding by 1/steps and the number of programs by about `steps`
per octave of lengths. Used by the tokenize job's batches and by the sampler's prompt and
generation lengths.
"""
from __future__ import annotations


def geometric_bucket(n: int, steps_per_octave: int) -> int:
    """The smallest bucket >= n: a multiple of 1/`steps_per_octave` of n's power-of-two octave
    (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ... for 4 steps)."""
    if steps_per_octave < 1:
        raise ValueError(f"steps_per_octave must be >= 1, got {steps_per_octave}")
    if n < 1:
        raise ValueError(f"a bucket holds a positive size, got {n}")
    step = max(1, (1 << (int(n).bit_length() - 1)) // steps_per_octave)
    return -(-int(n) // step) * step
