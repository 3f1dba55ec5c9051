#!/usr/bin/env bash
# R20b-m1 (docs/smollm2_memory.md, "Twenty-fourth session"): the shipped R20b and its twin continued side by
# side with one memory block (mem_segments=1: a block attends to the block before it too, a 256-token
# window), STEPS (40) steps of benchmarks/smollm2_r18.sh on data seed 13. The links before were all trained
# with m = 0; read with m = 1 untrained, both arms lose 2-5 points of text beyond the window while PassKey
# answers straddling a block boundary come right (benchmarks/smollm2_m1_evals.sh). Does training with the
# window they are read with keep both?
#   bash benchmarks/smollm2_m1.sh runs/m1                 (about 35 minutes on a 2-core CPU, one thread per arm)
#   TAG=r20bm1 bash benchmarks/smollm2_m1_evals.sh paired|passkey   (then; the adapters are committed here)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."
OUTD=${1:?usage: bash benchmarks/smollm2_m1.sh OUT}
PY=${PY:-.venv/bin/python}
dest=benchmarks/adapters/smollm2-r20bm1
SEED=${SEED:-13} STEPS=${STEPS:-40} RESUME=1 EXTRA="mem_segments=1" \
  INIT_TWIN=benchmarks/adapters/smollm2-r20b/twin INIT_FAMA=benchmarks/adapters/smollm2-r20b/fama \
  bash benchmarks/smollm2_r18.sh "$OUTD" > "$OUTD.log" 2>&1
for a in twin fama; do "$PY" benchmarks/commit_adapter.py "$OUTD/$a" "$dest/$a"; done
mkdir -p "$dest/logs" && cp "$OUTD"/*.log "$dest/logs/" && cp "$OUTD.log" "$dest/logs/"
