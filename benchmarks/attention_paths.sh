#!/bin/bash
# shellcheck disable=SC2086  # $KERNELS and $TINY are split into words on purpose
# The biased attention paths of a stage LM on a GPU in one device call (issue 7): the kernels
# alone at the stage's shape (fwd + bwd, error against f32), then the trainer's step on each path
# (tokens/s, MFU). Run from the repository root with the wheels installed (PYTHONPATH set):
#   bash benchmarks/attention_paths.sh OUT_DIR
# STAGE (default stage2), BATCH (trainer batch, default 32), KERNELS (attention_kernels.py
# variants), PATHS (lm attention paths) and TINY=1 (tiny shapes: a CPU dry run) from the environment. Writes OUT_DIR/attention_paths.log,
# OUT_DIR/attention_kernels.json and OUT_DIR/train_<path>.json. ~5 min on an H100 with the defaults.
set -u
OUT_DIR=$1
STAGE=${STAGE:-stage2}; BATCH=${BATCH:-32}; TINY=${TINY:+--tiny}
KERNELS=${KERNELS:-split_lse split_lse_xla_band band_grad}
PATHS=${PATHS:-split_lse band_grad fast}
# shellcheck source-path=SCRIPTDIR source=run_log.sh
. "$(dirname "$0")/run_log.sh"
log_begin "$OUT_DIR/attention_paths.log"
run kernels 150 python3 benchmarks/attention_kernels.py --stage "$STAGE" --variants $KERNELS \
  --pieces $TINY --out "$OUT_DIR/attention_kernels.json"
for path in $PATHS; do
  run "train $path" 150 python3 benchmarks/train_stage.py --stages "$STAGE" \
    --batch-sizes "$BATCH" --prng-impl rbg --steps 8 --attention "$path" $TINY \
    --out "$OUT_DIR/train_$path.json"
done
