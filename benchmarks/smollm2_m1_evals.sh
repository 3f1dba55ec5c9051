#!/usr/bin/env bash
# A chain's trained weights read with one memory block (docs/smollm2_memory.md, "Twenty-fourth session"):
# the SmolLM2 links were trained with mem_segments 0 (a block attends to itself and the FAM; window 128
# tokens), so a block's first tokens see nothing of the text before them but the FAM, and a PassKey answer
# that straddles a block boundary fails (filler 61-63 + 128k). The same weights with mem_segments 1 (window
# 256: the block and the one before it; no weight changes) for both arms, the twin and the fama:
#   bash benchmarks/smollm2_m1_evals.sh paired [R]    (held-out Bible, Genesis .. Judges, and Paradise Lost; two jobs)
#   bash benchmarks/smollm2_m1_evals.sh inwindow [R]  (both books cut into fresh 256-token documents; two jobs)
#   bash benchmarks/smollm2_m1_evals.sh passkey [R]   (O7 on, fillers + 0..127: 960 and 4000 (4x, 16x the 256-token
#                                                      window), the FAM reset, the twin; then gather)
# R: a folder with R/twin and R/fama (default benchmarks/adapters/smollm2-TAG, TAG r20b; r20bm1: R20b trained on
# with m = 1, benchmarks/smollm2_m1.sh). Writes docs/paired_TAG_m1_{kjv,paradise}.json,
# docs/inwindow_TAG_m1_{kjv,paradise}.json, docs/smollm2_TAG_m1_passkey.json, runs/ev/TAG-m1-*.
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
passkey)
  J="--jitter 128 --mem-segments 1 --device $DEVICE"
  { pk --model "$R/fama" $J --fam-skip-initial-read on --lengths 960,4000 --samples 20 --out $E/$T-m1-pk
    pk --model "$R/twin" $J --lengths 960 --samples 10 --out $E/$T-m1-twin-pk; } > $E/$T-m1-pk.log 2>&1 &
  pk --model "$R/fama" $J --fam-skip-initial-read on --fam-reset --lengths 960,4000 --samples 10 \
    --out $E/$T-m1-pk-reset > $E/$T-m1-pk-reset.log 2>&1 &
  wait
  "$PY" benchmarks/gather_evals.py --out "$OUTJ/smollm2_${T}_m1_passkey.json" \
    --meta eval="fam eval passkey --mem-segments 1 --jitter 128: new keys, depth 0, filler + 0..127, greedy, seed 0" \
      machine="2-core Intel Xeon with AVX512-BF16 (no AMX), torch 2.13 CPU, float32, one thread" \
    --row "fama (${T^^}), m = 1, O7" $E/$T-m1-pk/passkey.json --row "fama (${T^^}), m = 1, O7, FAM reset" \
    $E/$T-m1-pk-reset/passkey.json --row "twin (${T^^}), m = 1" $E/$T-m1-twin-pk/passkey.json
  ;;
*) echo "usage: bash benchmarks/smollm2_m1_evals.sh paired|inwindow|passkey [R]" >&2; exit 2 ;;
esac
