#!/bin/bash
# Kernel profiles of the paper-size steps in one device call (issues 7 and 8): the stage-2 and
# stage-1 training steps at batch 32 (kernel time by category and top kernels), then the
# batch-64 continuation (int8 cache, 1 s fine chunks, 8 cache phases) with its kernels summed
# per generation stage and per decoding step. Run from the repository root with the wheels
# installed (PYTHONPATH set):
#   bash benchmarks/step_profiles.sh OUT_DIR
# Writes OUT_DIR/step_profiles.log (what each run printed, with its exit status and elapsed
# seconds), lm_profile_s2_b32.json, lm_profile_s1_b32.json and gen_b64_ph8_profile.json. ~8 min
# on an H100.
set -u
OUT_DIR=$1
# shellcheck source-path=SCRIPTDIR source=run_log.sh
. "$(dirname "$0")/run_log.sh"
log_begin "$OUT_DIR/step_profiles.log"
run "stage2 profile" 150 python3 benchmarks/lm_step_profile.py --stage stage2 --batch 32 \
  --steps 5 --variants baseline --out "$OUT_DIR/lm_profile_s2_b32.json"
run "stage1 profile" 100 python3 benchmarks/lm_step_profile.py --stage stage1 --batch 32 \
  --steps 8 --variants baseline --out "$OUT_DIR/lm_profile_s1_b32.json"
run "generate profile" 300 python3 benchmarks/generate.py --batch-sizes 64 --repeats 2 \
  --cache-phases 8 --kv-cache int8 --fine-chunk-seconds 1 --fine-max-batch 640 --profile \
  --out "$OUT_DIR/gen_b64_ph8_profile.json"
