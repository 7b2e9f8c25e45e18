#!/bin/bash
# Sourced by the one-call device scripts (decode_attention_sweep.sh, step_profiles.sh): one log
# per call that starts with the GPU and the date, then each run's output with its exit status
# and the elapsed seconds, each run under its own time limit so one that hangs costs only its share.
#   log_begin FILE                  (sets L)
#   run NAME LIMIT_S COMMAND...     (appends to $L)
log_begin() {
  L=$1; mkdir -p "$(dirname "$L")"
  { nvidia-smi --query-gpu=name,memory.total --format=csv 2> /dev/null; date -u; } > "$L"
}
run() {
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" >> "$L" 2>&1
  echo "$name rc=$? t=$SECONDS" >> "$L"
}
