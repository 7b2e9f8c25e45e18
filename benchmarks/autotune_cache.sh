# shellcheck shell=bash
# XLA's GPU autotuning results kept from one borrowed machine to the next. On a fresh machine
# most of a first compile is autotuning (the cuDNN algorithm of every convolution, the tiling of
# every GEMM fusion): ~3 min of the codec's 7 min box in session 28. Under a persistent
# compilation cache JAX points XLA's per-fusion autotune cache at
# $JAX_COMPILATION_CACHE_DIR/xla_gpu_per_fusion_autotune_cache_dir (the default of
# jax_persistent_cache_enable_xla_caches): one small file per tuned fusion, keyed by the GPU model
# and the fusion's HLO, so another GPU's or another program's entries are misses, not errors.
#   . benchmarks/autotune_cache.sh
#   autotune_begin [SEED]   exports JAX_COMPILATION_CACHE_DIR (default /tmp/jax_cache) and copies
#                           the entries of the folder SEED (if given and present) into its cache
#   autotune_end OUT_TGZ    packs every entry (the seed's and the new ones) for the next machine
# Here, after a call: mkdir -p .carry/autotune && tar -xzf DIR/autotune.tgz -C .carry/autotune,
# and carry .carry/autotune on the next (the chains take it as AUTOTUNE=.carry/autotune).

autotune_dir() { echo "${JAX_COMPILATION_CACHE_DIR:?}/xla_gpu_per_fusion_autotune_cache_dir"; }

autotune_begin() {
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}
  mkdir -p "$(autotune_dir)"
  if [ -n "${1:-}" ] && [ -d "$1" ]; then cp -r "$1"/. "$(autotune_dir)"/; fi
}

autotune_end() {
  local dir; dir=$(autotune_dir)
  if [ -d "$dir" ]; then tar -czf "$1" -C "$dir" .; fi
}
