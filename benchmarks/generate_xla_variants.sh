#!/usr/bin/env bash
# benchmarks/generate.py under several XLA flag sets, one JSON each: does the batch-1 decoding
# step (bound by its chain of ~1 ms of kernels, not by memory: docs/RESULTS.md "Generation's
# memory roof") get cheaper when XLA records the loop body as a CUDA graph?
#
#   bash benchmarks/generate_xla_variants.sh OUT "GENERATE ARGS" VARIANT...
#   bash benchmarks/generate_xla_variants.sh $OUT "--batch-sizes 1 --repeats 3" default cmdbuf_while
#
# VARIANT names (below) add flags to $XLA_FLAGS. XLA aborts on a flag it does not know, so each
# set is probed first; a set that fails the probe is skipped with a line in OUT/variants.log.
# Writes OUT/generate_VARIANT.json and OUT/generate_VARIANT.log.
set -u
OUT=$1; ARGS=$2; shift 2
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
COMMAND_BUFFER="FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN"
flags_of() {
  case $1 in
    default) echo "" ;;
    # The loop body (and the sampling's conditionals) captured as CUDA graph nodes.
    cmdbuf_while) echo "--xla_gpu_enable_command_buffer=$COMMAND_BUFFER,WHILE,CONDITIONAL" ;;
    # ... and graphs of any size (the default skips graphs of few kernels).
    cmdbuf_while_min1) echo "--xla_gpu_enable_command_buffer=$COMMAND_BUFFER,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1" ;;
    # No command buffers at all: what the default's graphs of fusions are worth.
    no_cmdbuf) echo "--xla_gpu_enable_command_buffer=" ;;
    # GEMMs through cuBLAS instead of Triton fusions: a decoding step's weight products have one
    # or two rows, where cuBLAS's split-K / GEMV kernels may read the weights closer to bandwidth.
    cublas) echo "--xla_gpu_enable_triton_gemm=false" ;;
    *) return 1 ;;
  esac
}
for variant in "$@"; do
  if ! extra=$(flags_of "$variant"); then
    echo "$variant: unknown variant (default cmdbuf_while cmdbuf_while_min1 no_cmdbuf cublas)" | tee -a "$OUT/variants.log"
    continue
  fi
  # Trimmed: XLA reads a value that does not start with "--" as the name of a flags file.
  flags=$(echo "${XLA_FLAGS:-} $extra" | xargs)
  if ! XLA_FLAGS="$flags" python3 -c "import jax; jax.devices()" > /dev/null 2>&1; then
    echo "$variant: XLA refused the flags '$extra': skipped" | tee -a "$OUT/variants.log"
    continue
  fi
  start=$(date +%s)
  # shellcheck disable=SC2086  # ARGS is a list of generate.py arguments
  XLA_FLAGS="$flags" python3 "$HERE/generate.py" $ARGS --out "$OUT/generate_$variant.json" \
    > "$OUT/generate_$variant.log" 2>&1
  rc=$?
  echo "$variant: rc=$rc in $(( $(date +%s) - start )) s, flags '$extra'; $(grep '^batch' "$OUT/generate_$variant.log" | tr '\n' ' ')" \
    | tee -a "$OUT/variants.log"
done
