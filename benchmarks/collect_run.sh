#!/bin/bash
# Wait for a detached run (e.g. small_world_pipeline.sh started with setsid nohup) and pack its
# logs and results, for machines where one command may run only minutes but a started job runs on:
#   bash benchmarks/collect_run.sh WORK OUT_DIR LIMIT_SECONDS
# Returns when WORK/DONE exists or after LIMIT_SECONDS, whichever comes first, and writes
# OUT_DIR/run.tgz (WORK/logs and WORK/results: small files only, never checkpoints or audio) and
# OUT_DIR/pipeline.log (once done, also WORK/eval_audio_flac.tar when the run wrote one).
# Exit status 0 when the run is done, 3 when it is still running.
set -u
W=$1; OUT_DIR=$2; LIMIT=$3
end=$(( $(date +%s) + LIMIT ))
while [ ! -f "$W/DONE" ] && [ "$(date +%s)" -lt $end ]; do sleep 1; done
mkdir -p "$OUT_DIR"
tar -czf "$OUT_DIR/run.tgz" -C "$W" --exclude='*.npz' --exclude='*.flac' --exclude='*.wav' \
  logs results 2> /dev/null
cp "$W/logs/pipeline.log" "$OUT_DIR/pipeline.log" 2> /dev/null
# The generated audio packed as FLAC by the pipeline's last steps (benchmarks/pack_audio.py).
[ -f "$W/DONE" ] && cp "$W/eval_audio_flac.tar" "$OUT_DIR/" 2> /dev/null
tail -n 5 "$W/logs/pipeline.log" 2> /dev/null
[ -f "$W/DONE" ] && exit 0 || exit 3
