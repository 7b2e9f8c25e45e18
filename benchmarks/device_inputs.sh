#!/bin/bash
# Everything a device call of the speech chain carries, rebuilt on this machine in one command
# (a fresh checkout has none of it: .whl/ and .carry/ are git-ignored). ~8 min on 2 cores:
#   bash benchmarks/device_inputs.sh [WORLD_DIR]
# 1. .whl: the wheels the GPU image lacks (benchmarks/device_wheels.sh);
# 2. a 3.5 h speech world in WORLD_DIR (default /tmp/world35; FLAC, kept for the CPU-side
#    evaluations), packed as Opus 20 kbps into .carry/world_opus/speech (~36 MiB);
# 3. the sWUGGY/sBLIMP-style pairs (50 + 10 per held-out voice), packed at 24 kbps into
#    .carry/pairs_opus (`eval pairs --build` exits 1 after building: it has no model to score);
# 4. .carry/snap: `git archive HEAD` (commit first: the snapshot is what the chain runs).
# Then the chain's first call carries .whl .carry/snap .carry/world_opus/speech .carry/pairs_opus
# (benchmarks/device_chain.sh's header). Run from the repository root with the venv built.
set -u
WORLD=${1:-/tmp/world35}; BIN=${BIN:-.venv/bin}
step() { echo "device_inputs: $*"; }
bash benchmarks/device_wheels.sh .whl > /tmp/device_wheels.log 2>&1 &
WHEELS=$!
if [ ! -f "$WORLD/speech/summary.json" ]; then   # the builder writes it last
  "$BIN/audiolm-jax" corpus speech --out "$WORLD/speech" --hours 3.5 > /tmp/device_inputs_corpus.log 2>&1 \
    || { echo "device_inputs: corpus build failed, see /tmp/device_inputs_corpus.log" >&2; exit 1; }
fi
step "world in $WORLD/speech"
"$BIN/python" benchmarks/pack_corpus.py "$WORLD/speech" .carry/world_opus/speech --bitrate-kbps 20 \
  2>&1 | tail -n 2
"$BIN/audiolm-jax" eval pairs --build --pairs-dir .carry/pairs --pairs-lexical 50 \
  --pairs-syntactic 10 > /tmp/device_inputs_pairs.log 2>&1
[ -f .carry/pairs/pairs.json ] || { echo "device_inputs: no pairs built, see /tmp/device_inputs_pairs.log" >&2; exit 1; }
"$BIN/python" benchmarks/pack_corpus.py .carry/pairs .carry/pairs_opus --bitrate-kbps 24 2>&1 | tail -n 1
rm -rf .carry/snap && mkdir -p .carry/snap && git archive HEAD | tar -x -C .carry/snap
step "snapshot of $(git rev-parse --short HEAD) in .carry/snap"
wait $WHEELS || { echo "device_inputs: wheels failed, see /tmp/device_wheels.log" >&2; exit 1; }
du -sh .whl .carry/snap .carry/world_opus/speech .carry/pairs_opus
