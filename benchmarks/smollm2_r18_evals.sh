#!/usr/bin/env bash
# The evaluations of R18 (benchmarks/smollm2_r18.sh; docs/smollm2_memory.md, "Nineteenth session"): the
# continued fama against its continued twin on the same tokens (benchmarks/paired_compare.py: differences
# with standard errors, by position bucket), live FAM, FAM reset at every block and its weights in BSWA
# mode, and PassKey.
#   bash benchmarks/smollm2_r18_evals.sh paired [R]       (Milton and Genesis .. Judges, held out; two jobs)
#   bash benchmarks/smollm2_r18_evals.sh reset [R]        (the live FAM against its own reset, both books: target 3's SE;
#                                                          paired's JSON has the same numbers under "pairs")
#   bash benchmarks/smollm2_r18_evals.sh shakespeare [R]  (7 plays of the training corpus, as R17's)
#   bash benchmarks/smollm2_r18_evals.sh passkey [R]      (4x and 16x the window, live FAM and reset; two jobs)
#   bash benchmarks/smollm2_r18_evals.sh passkey-long [R] (the shipped model's other lengths: 1x-32x, 63x / 125x with 10 keys; depth 0.5)
#   bash benchmarks/smollm2_r18_evals.sh inwindow [R]     (inside the window with one piece per window: both books cut into
#                                                          fresh 128-token documents; there option O7 is fama-bswa exactly)
#   bash benchmarks/smollm2_r18_evals.sh passkey-o7 [R]   (1x, 4x, 16x with option O7, fam_skip_initial_read, at evaluation)
#   bash benchmarks/smollm2_r18_evals.sh paradise [R]     (Paradise Lost alone, held out when Milton's other works are trained
#                                                          on (R21m): 7 documents of its first 28672 tokens, 4096 each,
#                                                          and 224 fresh 128-token documents inside the window; two jobs)
#   bash benchmarks/smollm2_r18_evals.sh passkey-jitter [R] (option O7 on, every filler jittered over a block, --jitter 128:
#                                                          4x and 16x (40 keys), 32x (20), 63x-250x (10), the reset, depth 0.5;
#                                                          the fixed fillers above never put the answer across a block boundary)
#   bash benchmarks/smollm2_r18_evals.sh boundary [R]     (fixed fillers around the block boundaries, O7 on, 20 keys each;
#                                                          and with one memory block, --mem-segments 1; two jobs)
#   bash benchmarks/smollm2_r18_evals.sh gather           (the PassKey results -> docs/smollm2_TAG_passkey.json)
# R: a folder holding the two runs' models, R/twin and R/fama (default: the committed adapters,
# benchmarks/adapters/smollm2-TAG; a training OUT with SUB=/final). OUTJ (docs), DEVICE (cpu) may be set.
# TAG (r18) names the runs and the files written: R19 (R18 continued, twentieth session) is TAG=r19; the
# second chain (benchmarks/smollm2_chain.sh, twenty-first and twenty-second sessions) is TAG=r18b, r19b, r20b.
source "$(dirname "$0")/smollm2_evals_common.sh"
T=${TAG:-r18}; R=${2:-benchmarks/adapters/smollm2-$T}; SUB=${SUB:-}; DEVICE=${DEVICE:-cpu}; OUTJ=${OUTJ:-docs}
m() { echo "$R/$1$SUB"; }
# full: the original SmolLM2 with full attention (the other end of target 2's BSWA -> full gap; R19 on);
# fama-o7: the live FAM with option O7 (fam_skip_initial_read) switched on at evaluation (R20b on)
models() { echo twin="$(m twin):bswa" fama="$(m fama):fam" fama-reset="$(m fama):fam-reset" fama-bswa="$(m fama):bswa" \
  full=smollm2:full fama-o7="$(m fama):fam+fam_skip_initial_read"; }
case "${1:-}" in
paired)
  kjv7  # once, before the parallel jobs
  # shellcheck disable=SC2046
  for data in milton kjv; do paired_book "$OUTJ/paired_${T}_$data.json" $data --pair fama:fama-reset --pair fama-o7:fama $(models) & done
  wait
  ;;
reset)
  kjv7
  for data in milton kjv; do paired_book "$OUTJ/paired_${T}_reset_$data.json" $data fama-reset="$(m fama):fam-reset" fama="$(m fama):fam" & done
  wait
  ;;
inwindow)
  kjv7
  for data in milton kjv; do
    src=$data; [ $data = kjv ] && src=$E/kjv7
    "$PY" benchmarks/paired_compare.py --data "$src" --documents 128 --device "$DEVICE" --out "$OUTJ/inwindow_${T}_$data.json" \
      twin="$(m twin):bswa" fama="$(m fama):fam" fama-bswa="$(m fama):bswa" > "$E/inwindow_${T}_$data.log" 2>&1 &
  done
  wait
  ;;
paradise)
  pl1
  # shellcheck disable=SC2046
  "$PY" benchmarks/paired_compare.py --data $E/pl1 --max-tokens 28672 --documents 4096 --from 128 --unit-tokens 128 \
    --buckets 0,128,512,2048 --device "$DEVICE" --out "$OUTJ/paired_${T}_paradise.json" --pair fama:fama-reset \
    --pair fama-o7:fama $(models) > "$E/paired_${T}_paradise.log" 2>&1 &
  "$PY" benchmarks/paired_compare.py --data $E/pl1 --max-tokens 28672 --documents 128 --device "$DEVICE" \
    --out "$OUTJ/inwindow_${T}_paradise.json" twin="$(m twin):bswa" fama="$(m fama):fam" fama-bswa="$(m fama):bswa" \
    > "$E/inwindow_${T}_paradise.log" 2>&1 &
  wait
  ;;
passkey-o7)
  pk --model "$(m fama)" --fam-skip-initial-read on --out $E/$T-fama-pk-o7 --lengths 60,450,2000 --samples 20 --device "$DEVICE"
  ;;
shakespeare)
  shk7
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=2 "$PY" benchmarks/paired_compare.py --data $E/shk7 --buckets 0,128,512,2048 --threads 2 \
    --device "$DEVICE" --out "$OUTJ/paired_${T}_shakespeare.json" $(models)
  ;;
passkey)
  pk --model "$(m fama)" --out $E/$T-fama-pk --lengths 450,2000 --samples 20 --device "$DEVICE" &
  pk --model "$(m fama)" --fam-reset --out $E/$T-fama-pk-reset --lengths 450,2000 --samples 20 --device "$DEVICE" &
  wait
  ;;
passkey-long)
  pk --model "$(m fama)" --out $E/$T-fama-pk-more --lengths 60,200,1000,4000 --samples 20 --device "$DEVICE" &
  pk --model "$(m fama)" --out $E/$T-fama-pk-long --lengths 8050,16000 --samples 10 --device "$DEVICE" &
  wait
  pk --model "$(m fama)" --out $E/$T-fama-pk-d05 --lengths 450,2000 --depths 0.5 --samples 20 --device "$DEVICE"
  ;;
passkey-jitter)
  J="--fam-skip-initial-read on --jitter 128 --device $DEVICE"
  pk --model "$(m fama)" $J --lengths 450,2000 --samples 40 --out $E/$T-jit-o7 > $E/$T-jit-o7.log 2>&1 &
  pk --model "$(m fama)" $J --lengths 16000,32000 --samples 10 --out $E/$T-jit-o7-long > $E/$T-jit-o7-long.log 2>&1 &
  { pk --model "$(m fama)" $J --lengths 4000 --samples 20 --out $E/$T-jit-o7-4000
    pk --model "$(m fama)" $J --lengths 8050 --samples 10 --out $E/$T-jit-o7-8050
    pk --model "$(m fama)" $J --fam-reset --lengths 450,2000 --samples 20 --out $E/$T-jit-o7-reset
    pk --model "$(m fama)" $J --depths 0.5 --lengths 450,2000 --samples 20 --out $E/$T-jit-o7-d05; } > $E/$T-jit-o7-more.log 2>&1 &
  wait
  ;;
boundary)
  pk --model "$(m fama)" --fam-skip-initial-read on --samples 20 --device "$DEVICE" --out $E/$T-boundary \
    --lengths 20,40,$(seq -s, 50 2 74),61,63,80,100,130,160,188,190,444,446,1980,1982 > $E/$T-boundary.log 2>&1 &
  pk --model "$(m fama)" --fam-skip-initial-read on --mem-segments 1 --samples 20 --device "$DEVICE" \
    --out $E/$T-boundary-m1 --lengths 60,61,62,63,64,190,446,450,2000 > $E/$T-boundary-m1.log 2>&1 &
  wait
  "$PY" benchmarks/gather_evals.py --out "$OUTJ/smollm2_${T}_boundary.json" \
    --meta eval="fam eval passkey --fam-skip-initial-read on: new keys, depth 0, 20 per length, greedy, seed 0" \
      machine="2-core Intel Xeon with AVX512-BF16 (no AMX), torch 2.13 CPU, float32, one thread" \
    --row "fama (${T^^}), O7" $E/$T-boundary/passkey.json --row "fama (${T^^}), O7, m = 1" $E/$T-boundary-m1/passkey.json
  ;;
gather)
  more=()  # passkey-long's rows, where it ran
  [ -f $E/$T-fama-pk-more/passkey.json ] && more+=(--row "fama (${T^^}), 1x-32x" $E/$T-fama-pk-more/passkey.json)
  [ -f $E/$T-fama-pk-long/passkey.json ] && more+=(--row "fama (${T^^}), 63x and 125x (10 keys)" $E/$T-fama-pk-long/passkey.json)
  [ -f $E/$T-fama-pk-d05/passkey.json ] && more+=(--row "fama (${T^^}), key at depth 0.5" $E/$T-fama-pk-d05/passkey.json)
  [ -f $E/$T-fama-pk-o7/passkey.json ] && more+=(--row "fama (${T^^}), option O7 at evaluation" $E/$T-fama-pk-o7/passkey.json)
  jit=()  # passkey-jitter's lengths, one row
  for j in jit-o7 jit-o7-4000 jit-o7-8050 jit-o7-long; do [ -f $E/$T-$j/passkey.json ] && jit+=($E/$T-$j/passkey.json); done
  [ ${#jit[@]} -gt 0 ] && more+=(--row "fama (${T^^}), O7, filler + 0..127" "${jit[@]}")
  [ -f $E/$T-jit-o7-reset/passkey.json ] && more+=(--row "fama (${T^^}), O7, filler + 0..127, FAM reset" $E/$T-jit-o7-reset/passkey.json)
  [ -f $E/$T-jit-o7-d05/passkey.json ] && more+=(--row "fama (${T^^}), O7, filler + 0..127, depth 0.5" $E/$T-jit-o7-d05/passkey.json)
  "$PY" benchmarks/gather_evals.py --out "$OUTJ/smollm2_${T}_passkey.json" \
    --meta eval="fam eval passkey: new keys, depth 0, 20 per length unless the row says (filler + 0..127, passkey-jitter: 40 at 450 and 2000, 20 at 4000, 10 from 8050), greedy, evaluation seed 0" \
      machine="2-core Intel Xeon with AVX512-BF16 (no AMX), torch 2.13 CPU, float32, one thread; the committed adapters" \
    --row "fama (${T^^})" $E/$T-fama-pk/passkey.json --row "fama (${T^^}), FAM reset" $E/$T-fama-pk-reset/passkey.json "${more[@]}"
  ;;
*) echo "usage: bash benchmarks/smollm2_r18_evals.sh paired|reset|inwindow|paradise|shakespeare|passkey|passkey-long|passkey-o7|passkey-jitter|boundary|gather [R]" >&2; exit 2 ;;
esac
