#!/bin/bash
# Wait for both chains (speech /tmp/p, piano /tmp/pp) until done or dead, at most LIMIT s; pack both.
set -u
LIMIT=$1; OUT=$2; end=$(( $(date +%s) + LIMIT ))
running() { local w=$1; [ ! -f $w/DONE ] && { [ ! -f $w/pipeline.pid ] || kill -0 $(cat $w/pipeline.pid) 2>/dev/null; }; }
while [ $(date +%s) -lt $end ] && { running /tmp/p || running /tmp/pp; }; do sleep 2; done
cp /tmp/gpumon.csv /tmp/pstage/launcher.log $OUT/ 2>/dev/null
bash /tmp/chain/snap/benchmarks/collect_run.sh /tmp/p $OUT/speech 0; echo "speech collect rc=$?"
[ -d /tmp/pp ] && { bash /tmp/pchain/snap/benchmarks/collect_run.sh /tmp/pp $OUT/piano 0; echo "piano collect rc=$?"; }
true
