#!/bin/bash
# Wait for a detached run (e.g. small_world_pipeline.sh started with setsid nohup) and pack its
# logs and results, for machines where one command may run only minutes but a started job runs on:
#   bash benchmarks/collect_run.sh WORK OUT_DIR LIMIT_SECONDS
# Returns when WORK/DONE exists or after LIMIT_SECONDS, whichever comes first, and writes
# OUT_DIR/run.tgz (WORK/logs and WORK/results: small files only, never checkpoints or audio) and
# OUT_DIR/pipeline.log, and WORK/eval_audio_flac.tar once the run wrote it (pack_audio.py renames
# it into place complete, before the slower last evaluations), as OUT_DIR/eval_audio_flac.tar.part00,
# part01, ... of at most 15 MiB each; and OUT_DIR/autotune.tgz, the XLA autotuning results of the
# run's compilation cache (WORK/jax_cache; autotune_cache.sh), for the next machine.
# Exit status 0 when the run is done, 3 when it is still running, 4 when its process (the pid in
# WORK/pipeline.pid) ended without writing DONE: no point waiting out the limit for a dead run.
set -u
W=$1; OUT_DIR=$2; LIMIT=$3
end=$(( $(date +%s) + LIMIT ))
alive() { [ ! -f "$W/pipeline.pid" ] || kill -0 "$(cat "$W/pipeline.pid")" 2> /dev/null; }
while [ ! -f "$W/DONE" ] && [ "$(date +%s)" -lt $end ] && alive; do sleep 1; done
mkdir -p "$OUT_DIR"
tar -czf "$OUT_DIR/run.tgz" -C "$W" --exclude='*.npz' --exclude='*.flac' --exclude='*.wav' \
  logs results 2> /dev/null
cp "$W/logs/pipeline.log" "$OUT_DIR/pipeline.log" 2> /dev/null
# shellcheck source-path=SCRIPTDIR source=autotune_cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/autotune_cache.sh"
JAX_COMPILATION_CACHE_DIR=$W/jax_cache autotune_end "$OUT_DIR/autotune.tgz"
# The generated audio packed as FLAC by the pipeline's last steps (benchmarks/pack_audio.py), in
# parts of 15 MiB: the device tool returns no file over 16 MiB (session 22's 17.5 MiB tar stayed
# behind). Rejoin with `cat eval_audio_flac.tar.part* > eval_audio_flac.tar`.
if [ -f "$W/eval_audio_flac.tar" ]; then
  rm -f "$OUT_DIR"/eval_audio_flac.tar.part*
  split -b 15m -d "$W/eval_audio_flac.tar" "$OUT_DIR/eval_audio_flac.tar.part"
fi
tail -n 5 "$W/logs/pipeline.log" 2> /dev/null
[ -f "$W/DONE" ] && exit 0
alive && exit 3
echo "collect_run: the run's process $(cat "$W/pipeline.pid") ended without writing $W/DONE" >&2
exit 4
