#!/bin/bash
# Batch-1 decoding on a GPU: where the step's time goes, and whether more rows per product help.
#   bash benchmarks/generate_batch1_sources.sh OUT_DIR
# 1. decode_projections.py: the layers' weight products alone, one row vs padded to 2 or 4 rows.
# 2. generate.py at batch 1 with --min-rows 2 (a lone prompt decoded beside a copy).
# 3. generate.py at batch 1 with --profile, compiled with an HLO dump, then fusion_sources.py on
#    the 16 costliest kernels: the JAX operations the reduce fusions (62% of the kernel time in
#    session 16's profile) compute.
# On the borrowed GPU machine, install the wheels of benchmarks/device_wheels.sh first.
set -u
OUT=$1; HERE=$(cd "$(dirname "$0")" && pwd); DUMP=${DUMP:-/tmp/hlo_dump}
mkdir -p "$OUT"
python3 "$HERE/decode_projections.py" --out "$OUT/decode_projections.json" \
  > "$OUT/decode_projections.log" 2>&1
echo "decode_projections rc=$?"; tail -n 8 "$OUT/decode_projections.log"
python3 "$HERE/generate.py" --batch-sizes 1 --repeats 3 --min-rows 2 \
  --out "$OUT/generate_b1_minrows2.json" > "$OUT/generate_b1_minrows2.log" 2>&1
echo "min-rows 2 rc=$?"; grep '^batch' "$OUT/generate_b1_minrows2.log"
# Trimmed: XLA reads a value that does not start with "--" as the name of a flags file.
XLA_FLAGS=$(echo "${XLA_FLAGS:-} --xla_dump_to=$DUMP --xla_dump_hlo_as_text" | xargs) \
  python3 "$HERE/generate.py" --batch-sizes 1 --repeats 3 --profile --out "$OUT/generate_b1_profile.json" \
  > "$OUT/generate_b1_profile.log" 2>&1
echo "profile rc=$?"; grep '^batch' "$OUT/generate_b1_profile.log"
python3 "$HERE/fusion_sources.py" "$DUMP" --top-of "$OUT/generate_b1_profile.json" --top 16 \
  > "$OUT/fusion_sources.txt" 2>&1
echo "fusion_sources rc=$?"; head -c 3000 "$OUT/fusion_sources.txt"
