#!/bin/bash
# Start benchmarks/small_world_pipeline.sh detached on a borrowed machine, from private copies of
# everything it reads, then wait for it as collect_run.sh does. Why copies: the device tool copies
# the checkout again at every call and replaces the carried folders, so a job whose working
# directory or inputs lie in the checkout loses them mid-run (it happened: the scripts and the
# token caches vanished under a running chain at the second call).
#   bash benchmarks/device_chain.sh SNAPSHOT CORPUS PAIRS WHEELS OUT_DIR LIMIT_SECONDS
# SNAPSHOT: a source tree (`git archive HEAD | tar -x -C DIR`); CORPUS: the speech corpus root;
# PAIRS: an `audiolm-jax eval pairs --build` folder ("none" to skip); WHEELS: a folder of wheels
# the machine lacks ("none" if none). E.g. the first call, carrying .whl, .carry/snap,
# .carry/world_opus and .carry/pairs_opus (corpus and pairs as Opus: benchmarks/pack_corpus.py):
#   bash benchmarks/device_chain.sh .carry/snap .carry/world_opus/speech .carry/pairs_opus .whl $OUT 480
# and every later call at once (nothing to carry; the machine is released after ~30 s idle):
#   bash /tmp/chain/snap/benchmarks/collect_run.sh /tmp/p $OUT 540
# CHAIN (default /tmp/chain) holds the copies and the installed wheels, WORK (default /tmp/p) the
# run; MODE (default gpu), RESUME and BENCH pass through to the pipeline.
set -eu
SNAP=$1; CORPUS=$2; PAIRS=$3; WHEELS=$4; OUT_DIR=$5; LIMIT=$6
CH=${CHAIN:-/tmp/chain}; W=${WORK:-/tmp/p}
for d in "$SNAP" "$CORPUS"; do
  [ -d "$d" ] || { echo "device_chain: $d is not a folder" >&2; exit 2; }
done
rm -rf "$CH"; mkdir -p "$CH/site"
if [ "$WHEELS" != none ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$CH/site" "$WHEELS"/*.whl
fi
cp -r "$SNAP" "$CH/snap"; cp -r "$CORPUS" "$CH/corpus"
if [ "$PAIRS" != none ]; then cp -r "$PAIRS" "$CH/pairs"; fi
cd "$CH/snap"
PYTHONPATH="$CH/site:$CH/snap" PYTHONUNBUFFERED=1 MODE=${MODE:-gpu} WORK="$W" CORPUS="$CH/corpus" \
  PAIRS="$CH/pairs" setsid nohup bash benchmarks/small_world_pipeline.sh > "$CH/pipeline.out" 2>&1 \
  < /dev/null &
echo "device_chain: started the pipeline (pid $!) in $CH/snap; work in $W"
exec bash "$CH/snap/benchmarks/collect_run.sh" "$W" "$OUT_DIR" "$LIMIT"
