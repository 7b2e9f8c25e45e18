#!/bin/bash
# Both small-world chains on one borrowed GPU within one device budget: the speech chain starts
# now (benchmarks/device_chain.sh) and the piano chain once the speech codec's box has ended, so
# the two codecs never train at once (session 10 ran all four tokenizer trainers together, 1.2
# of the GPU's memory in caps, and the speech codec died; session 11 staggered them: both chains
# done in 1269 s, results/small_world_gpu_chain_s11/). Then waits as collect_run.sh does, for the
# speech run.
#   bash benchmarks/device_two_chains.sh SNAPSHOT SPEECH PAIRS PIANO WHEELS OUT_DIR LIMIT_SECONDS
# e.g. the first call, carrying .whl and .carry (snapshot, corpora and pairs as Opus):
#   bash .carry/snap/benchmarks/device_two_chains.sh .carry/snap .carry/world_opus/speech \
#     .carry/pairs_opus .carry/world_opus/piano .whl $OUT 530
# and every later call, carrying nothing, until both are done (collect_run.sh on the speech run,
# then on the piano run with what is left of LIMIT_SECONDS; into OUT_DIR/speech, OUT_DIR/piano):
#   bash /tmp/chain/snap/benchmarks/device_two_chains.sh --collect $OUT 560
# PIANO_BOXES (default "CODEC_T=360 W2V_T=300 STAGE_T=150") shortens the piano chain's time
# boxes: it shares the GPU with the speech chain's token caches and stages (its codec made 236
# steps in 360 s in session 11).
# Memory is allocated on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false) in both chains; each
# step's own cap (XLA_PYTHON_CLIENT_MEM_FRACTION in the pipelines) still holds.
set -eu
W=${WORK:-/tmp/p}
if [ "$1" = --collect ]; then
  OUT_DIR=$2; end=$(( $(date +%s) + $3 )); COLLECT="$(dirname "$0")/collect_run.sh"
  rc=0; bash "$COLLECT" "$W" "$OUT_DIR/speech" "$3" || rc=$?
  left=$(( end - $(date +%s) )); [ $left -gt 0 ] || left=0
  if [ -d /tmp/pp ]; then bash "$COLLECT" /tmp/pp "$OUT_DIR/piano" $left || rc=$?; fi
  cp /tmp/pstage/start_piano.log "$OUT_DIR/" 2> /dev/null || true
  exit $rc
fi
SNAP=$1; SPEECH=$2; PAIRS=$3; PIANO=$4; WHEELS=$5; OUT_DIR=$6; LIMIT=$7
[ -d "$PIANO" ] || { echo "device_two_chains: $PIANO is not a folder" >&2; exit 2; }
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Private copies for the piano chain: the device tool re-copies the checkout at every call.
S=/tmp/pstage; rm -rf $S; mkdir -p $S
cp -r "$SNAP" $S/snap; cp -r "$PIANO" $S/piano
if [ "$WHEELS" != none ]; then cp -r "$WHEELS" $S/whl; else mkdir $S/whl; fi
cat > $S/start_piano.sh <<EOS
t0=\$(date +%s)
until grep -q 'codec rc=' $W/logs/pipeline.log 2> /dev/null || [ \$(( \$(date +%s) - t0 )) -gt 900 ]; do sleep 2; done
echo "piano chain starts \$(date +%T), \$(( \$(date +%s) - t0 )) s after the speech chain"
cd $S && env ${PIANO_BOXES:-CODEC_T=360 W2V_T=300 STAGE_T=150} PIPELINE=benchmarks/piano_pipeline.sh \
  CHAIN=/tmp/pchain WORK=/tmp/pp bash $S/snap/benchmarks/device_chain.sh $S/snap $S/piano none \
  $( [ "$WHEELS" != none ] && echo $S/whl || echo none ) /tmp/pout 0
EOS
setsid nohup bash $S/start_piano.sh > $S/start_piano.log 2>&1 < /dev/null &
echo "device_two_chains: the piano chain waits for the speech codec (log $S/start_piano.log)"
exec bash "$SNAP/benchmarks/device_chain.sh" "$SNAP" "$SPEECH" "$PAIRS" "$WHEELS" "$OUT_DIR/speech" "$LIMIT"
