"""How this repo's Pallas kernels are launched: compiled by Triton on GPUs, else run in the Pallas
interpreter (the CPU tests). Shared by `pallas_bias_attention` and `decode_attention`."""
from __future__ import annotations

from jax.experimental import pallas as pl

from audiolm_jax.lm.tpu_attention import target_platform

# `target_platform()` is "gpu" on a GPU machine, "cuda" / "rocm" under an abstract mesh of GPU
# devices (lowering for a GPU from a CPU host, as tests/test_decode_attention.py does).
GPU_PLATFORMS = ("gpu", "cuda", "rocm")


def compiler_params(num_warps: int, num_stages: int):
    """Triton's launch parameters; the class was `TritonCompilerParams` before jax 0.7."""
    from jax.experimental.pallas import triton as plgpu
    params = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams")
    return params(num_warps=num_warps, num_stages=num_stages)


def launch(kernel, *, interpret: bool, num_warps: int, num_stages: int, **kwargs):
    """`pl.pallas_call` in the interpreter, or with Triton's launch parameters."""
    extra = ({"interpret": True} if interpret
             else {"compiler_params": compiler_params(num_warps, num_stages)})
    return pl.pallas_call(kernel, **kwargs, **extra)


def interpret_by_default() -> bool:
    """Whether a kernel traced now runs in the interpreter: unless the target is a GPU."""
    return target_platform() not in GPU_PLATFORMS
