#!/bin/bash
# shellcheck disable=SC2086  # $cfg is a list of options, split on purpose
# The Pallas decode-attention kernel on a GPU in one device call (issue 8): the attention alone
# at batch 64 against the model's XLA path (int8 cache), a sweep of its block / warp settings,
# then the whole batch-64 continuation through it. Run from the repository root with the wheels
# installed (PYTHONPATH set):
#   bash benchmarks/decode_attention_sweep.sh OUT_DIR
# Writes OUT_DIR/decode_sweep.log (every figure printed), OUT_DIR/dal_int8.json and
# OUT_DIR/gen_b64_pallas.json. ~7 min on an H100 (the continuation compiles for ~4 min).
set -u
OUT_DIR=$1
# shellcheck source-path=SCRIPTDIR source=run_log.sh
. "$(dirname "$0")/run_log.sh"
log_begin "$OUT_DIR/decode_sweep.log"
run layouts 120 python3 benchmarks/decode_attention_layouts.py --batch-sizes 64 \
  --layouts bhkd_vt pallas --kv-cache int8 --out "$OUT_DIR/dal_int8.json"
for cfg in "--block-keys 128 --num-warps 4" "--block-keys 32 --num-warps 1" \
           "--block-keys 32 --num-warps 2" "--block-keys 64 --num-warps 1" \
           "--block-keys 64 --num-warps 2 --num-stages 3"; do
  run "layouts $cfg" 60 python3 benchmarks/decode_attention_layouts.py --batch-sizes 64 \
    --layouts pallas --kv-cache int8 $cfg --out /tmp/decode_attention_sweep.json
done
run generate 330 python3 benchmarks/generate.py --batch-sizes 64 --repeats 2 --cache-phases 4 \
  --kv-cache int8 --fine-chunk-seconds 1 --fine-max-batch 640 --decode-attention pallas \
  --out "$OUT_DIR/gen_b64_pallas.json"
