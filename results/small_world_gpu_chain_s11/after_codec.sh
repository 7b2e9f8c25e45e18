#!/bin/bash
# Session 11 glue: start the piano chain once the speech chain's codec is done (the two codecs
# must not train at once: session 10's did, and the speech codec died). Private copies first:
# the device tool re-copies the checkout at every call.
set -u
S=/tmp/pstage; rm -rf $S; mkdir -p $S
cp -r .carry/snap $S/snap; cp -r .carry/world_opus/piano $S/piano; cp -r .whl $S/whl
cat > $S/go.sh <<EOS
t0=\$(date +%s)
until grep -q 'codec rc=' /tmp/p/logs/pipeline.log 2>/dev/null || [ \$(( \$(date +%s) - t0 )) -gt 700 ]; do sleep 2; done
echo "piano start \$(date +%T) after \$(( \$(date +%s) - t0 )) s"
cd $S && PIPELINE=benchmarks/piano_pipeline.sh CHAIN=/tmp/pchain WORK=/tmp/pp CODEC_T=360 W2V_T=300 STAGE_T=150 \
  bash $S/snap/benchmarks/device_chain.sh $S/snap $S/piano none $S/whl /tmp/pout 1
EOS
setsid nohup bash $S/go.sh > $S/launcher.log 2>&1 < /dev/null &
echo "after_codec: watcher pid $!"
