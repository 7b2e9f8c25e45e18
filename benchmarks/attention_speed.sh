#!/bin/bash
# The stage LM's attention paths measured side by side on one machine (issue #7): the kernels
# alone (benchmarks/attention_kernels.py), then a step of the paper-size stage through the real
# trainer with each of PATHS (default "fast band_grad": cuDNN with the bias and its gradient,
# and the band-gradient path), same stages and batches, so the MFU figures share a device and
# a date. Each run is time-boxed; one that runs past its box is killed and logged, the others
# still run.
#   bash benchmarks/attention_speed.sh OUT_DIR [SECONDS_PER_RUN]
# e.g. on a borrowed GPU, from the repository root: bash benchmarks/attention_speed.sh $OUT/attn 150
# Writes OUT_DIR/attention_kernels.json, OUT_DIR/train_stage_PATH.json and a .log each.
set -u
OUT_DIR=$1; BOX=${2:-200}; STAGES=${STAGES:-stage2}; BATCH=${BATCH:-16}
mkdir -p "$OUT_DIR"
run() {  # name, command...
  local name=$1; shift; local t0; t0=$(date +%s)
  timeout "$BOX" "$@" > "$OUT_DIR/$name.log" 2>&1
  echo "attention_speed: $name rc=$? in $(( $(date +%s) - t0 )) s"
}
# KERNELS: the attention_kernels.py variants to time (default: all of them).
# shellcheck disable=SC2086  # KERNELS is a list of words
run attention_kernels python3 benchmarks/attention_kernels.py ${KERNELS:+--variants $KERNELS} \
  --out "$OUT_DIR/attention_kernels.json"
for path in ${PATHS:-fast band_grad}; do
  # shellcheck disable=SC2086  # STAGES is a list of words
  run "train_stage_$path" python3 benchmarks/train_stage.py --stages $STAGES --batch-sizes "$BATCH" \
    --prng-impl rbg --steps 10 --attention $path --out "$OUT_DIR/train_stage_$path.json"
done
