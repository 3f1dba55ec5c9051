#!/usr/bin/env bash
# A chain's trained weights read with one memory block (docs/smollm2_memory.md, "Twenty-fourth session"):
# the SmolLM2 links were trained with mem_segments 0 (a block attends to itself and the FAM; window 128
# tokens), so a block's first tokens see nothing of the text before them but the FAM, and a PassKey answer
# that straddles a block boundary fails (filler 61-63 + 128k). The same weights with mem_segments 1 (window
# 256: the block and the one before it; no weight changes) for both arms, the twin and the fama:
#   bash benchmarks/smollm2_m1_evals.sh paired [R]    (held-out Bible, Genesis .. Judges, and Paradise Lost; two jobs)
#   bash benchmarks/smollm2_m1_evals.sh inwindow [R]  (both books cut into fresh 256-token documents; two jobs)
#   bash benchmarks/smollm2_m1_evals.sh passkey [R]   (4x, 16x the 256-token window, filler jittered over a block)
# R: a folder with R/twin and R/fama (default benchmarks/adapters/smollm2-TAG, TAG r20b). Writes
# docs/paired_TAG_m1_{kjv,paradise}.json, docs/inwindow_TAG_m1_{kjv,paradise}.json, runs/ev/TAG-m1-*.
source "$(dirname "$0")/smollm2_evals_common.sh"
T=${TAG:-r20b}; R=${2:-benchmarks/adapters/smollm2-$T}; DEVICE=${DEVICE:-cpu}; OUTJ=${OUTJ:-docs}
O7=+fam_skip_initial_read
models() { echo twin="$R/twin:bswa" fama-o7="$R/fama:fam$O7" fama="$R/fama:fam" fama-reset="$R/fama:fam-reset" full=smollm2:full; }
cmp() { "$PY" benchmarks/paired_compare.py --mem-segments 1 --device "$DEVICE" "$@"; }
case "${1:-}" in
paired)
  kjv7; pl1
  # shellcheck disable=SC2046
  cmp --data $E/kjv7 --from 256 --buckets 0,256,512,1024,2048 --pair fama:fama-reset --pair fama-o7:fama \
    --out "$OUTJ/paired_${T}_m1_kjv.json" $(models) > $E/paired_${T}_m1_kjv.log 2>&1 &
  # shellcheck disable=SC2046
  cmp --data $E/pl1 --max-tokens 28672 --documents 4096 --from 256 --unit-tokens 128 --buckets 0,256,512,2048 \
    --pair fama:fama-reset --pair fama-o7:fama --out "$OUTJ/paired_${T}_m1_paradise.json" $(models) \
    > $E/paired_${T}_m1_paradise.log 2>&1 &
  wait
  ;;
inwindow)
  kjv7; pl1
  cmp --data $E/kjv7 --documents 256 --out "$OUTJ/inwindow_${T}_m1_kjv.json" twin="$R/twin:bswa" \
    fama-o7="$R/fama:fam$O7" fama="$R/fama:fam" > $E/inwindow_${T}_m1_kjv.log 2>&1 &
  cmp --data $E/pl1 --max-tokens 28672 --documents 256 --out "$OUTJ/inwindow_${T}_m1_paradise.json" \
    twin="$R/twin:bswa" fama-o7="$R/fama:fam$O7" fama="$R/fama:fam" > $E/inwindow_${T}_m1_paradise.log 2>&1 &
  wait
  ;;
*) echo "usage: bash benchmarks/smollm2_m1_evals.sh paired|inwindow|passkey [R]" >&2; exit 2 ;;
esac
