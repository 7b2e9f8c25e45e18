#!/bin/bash
# Start benchmarks/small_world_pipeline.sh (or $PIPELINE) detached on a borrowed machine, from
# private copies of everything it reads, then wait for it as collect_run.sh does. Why copies: the
# device tool copies the checkout again at every call and replaces the carried folders, so a job
# whose working directory or inputs lie in the checkout loses them mid-run (it happened: the
# scripts and the token caches vanished under a running chain at the second call).
#   bash benchmarks/device_chain.sh SNAPSHOT CORPUS PAIRS WHEELS OUT_DIR LIMIT_SECONDS
# SNAPSHOT: a source tree (`git archive HEAD | tar -x -C DIR`); CORPUS: the corpus root (speech,
# or piano for the piano pipeline);
# PAIRS: an `audiolm-jax eval pairs --build` folder ("none" to skip); WHEELS: a folder of wheels
# the machine lacks ("none" if none; benchmarks/device_wheels.sh downloads them). E.g. the first
# call, carrying .whl, .carry/snap, .carry/world_opus and .carry/pairs_opus (corpus and pairs as
# Opus: benchmarks/pack_corpus.py):
#   bash benchmarks/device_chain.sh .carry/snap .carry/world_opus/speech .carry/pairs_opus .whl $OUT 480
# and every later call at once (nothing to carry; the machine is released after ~30 s idle):
#   bash /tmp/chain/snap/benchmarks/collect_run.sh /tmp/p $OUT 540
# CHAIN (default /tmp/chain) holds the copies and the installed wheels, WORK (default /tmp/p) the
# run; MODE (default gpu), RESUME and BENCH pass through to the pipeline; AUTOTUNE (a folder of
# XLA autotuning results from earlier machines, e.g. .carry/autotune: autotune_cache.sh) is copied
# and seeds the run's compilation cache, and collect_run.sh returns the results grown by this run. PIPELINE (a script of
# the snapshot, default benchmarks/small_world_pipeline.sh) picks the chain, e.g. the piano one:
#   PIPELINE=benchmarks/piano_pipeline.sh WORK=/tmp/pp bash benchmarks/device_chain.sh \
#     .carry/snap .carry/world_opus/piano none .whl $OUT 540
set -eu
SNAP=$1; CORPUS=$2; PAIRS=$3; WHEELS=$4; OUT_DIR=$5; LIMIT=$6
CH=${CHAIN:-/tmp/chain}; W=${WORK:-/tmp/p}; PIPELINE=${PIPELINE:-benchmarks/small_world_pipeline.sh}
for d in "$SNAP" "$CORPUS"; do
  [ -d "$d" ] || { echo "device_chain: $d is not a folder" >&2; exit 2; }
done
[ -f "$SNAP/$PIPELINE" ] || { echo "device_chain: $SNAP has no $PIPELINE" >&2; exit 2; }
rm -rf "$CH"; mkdir -p "$CH/site"
if [ "$WHEELS" != none ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$CH/site" "$WHEELS"/*.whl
fi
cp -r "$SNAP" "$CH/snap"; cp -r "$CORPUS" "$CH/corpus"
if [ "$PAIRS" != none ]; then cp -r "$PAIRS" "$CH/pairs"; fi
SEED=""
if [ -d "${AUTOTUNE:-}" ]; then cp -r "$AUTOTUNE" "$CH/autotune"; SEED="$CH/autotune"; fi
cd "$CH/snap"
PYTHONPATH="$CH/site:$CH/snap" PYTHONUNBUFFERED=1 MODE=${MODE:-gpu} WORK="$W" CORPUS="$CH/corpus" \
  PAIRS="$CH/pairs" AUTOTUNE="$SEED" setsid nohup bash "$PIPELINE" > "$CH/pipeline.out" 2>&1 \
  < /dev/null &
echo "device_chain: started $PIPELINE (pid $!) in $CH/snap; work in $W"
exec bash "$CH/snap/benchmarks/collect_run.sh" "$W" "$OUT_DIR" "$LIMIT"
