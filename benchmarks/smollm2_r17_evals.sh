#!/usr/bin/env bash
# The evaluations of R17 (docs/smollm2_memory.md, "Eighteenth session"): per data seed, the twin and the
# FAM runs in each mode on the same tokens (benchmarks/paired_compare.py: differences to the twin with
# standard errors, by position bucket), and PassKey.
#   bash benchmarks/smollm2_r17_evals.sh paired [R]    (f17 and its twin, Milton and 7 books of the King James Bible, both seeds)
#   bash benchmarks/smollm2_r17_evals.sh fama [R]      (fama-s5 and its twin at the same step, both books)
#   bash benchmarks/smollm2_r17_evals.sh shakespeare [R]  (fama-s5 and its twin on 7 plays of the training corpus)
#   bash benchmarks/smollm2_r17_evals.sh passkey [R]   (4x and 16x the window, live FAM and reset; one thread)
#   bash benchmarks/smollm2_r17_evals.sh gather        (the PassKey results -> docs/smollm2_r17_passkey.json)
# R: a folder holding one loadable model per run (default: the committed adapters, benchmarks/adapters/smollm2-r17;
# on the GPU it was the training OUT with SUB=/final, DEVICE=cuda). SEEDS ("5 6"), OUTJ (docs), DEVICE (cpu) may be set.
source "$(dirname "$0")/smollm2_evals_common.sh"
R=${2:-benchmarks/adapters/smollm2-r17}; SUB=${SUB:-}; DEVICE=${DEVICE:-cpu}; SEEDS=${SEEDS:-5 6}; OUTJ=${OUTJ:-docs}
H17=${H17:-17.3,18.6,17.4,18.7,$D}   # R12's readers: R11's 4 PassKey heads and the 13 distant ones (R16's O5 set)
m() { echo "$R/$1$SUB"; }
paired() { local name=$1 data=$2; shift 2; paired_book "$OUTJ/paired_r17_${name}_$data.json" $data "$@"; }
case "${1:-}" in
paired)  # f17 against its twin (both 80 + 120 steps), per data seed and book
  kjv7  # once, before the parallel jobs
  for s in $SEEDS; do
    for data in milton kjv; do
      paired s$s $data twin="$(m twin-s$s):bswa" f17="$(m f17-s$s):fam@$H17" f17-reset="$(m f17-s$s):fam-reset@$H17" \
        f17-bswa="$(m f17-s$s):bswa" &
    done
  done
  wait
  ;;
fama)  # fama (every head reads, the paper's read; 80 + 90 steps, data seed 5) against the twin at 90
  kjv7
  for data in milton kjv; do
    paired fama-s5 $data twin="$(m twin90-s5):bswa" fama="$(m fama-s5):fam" fama-reset="$(m fama-s5):fam-reset" \
      fama-bswa="$(m fama-s5):bswa" fama-o5="$(m fama-s5):fam@$H17" &
  done
  wait
  ;;
shakespeare)  # the same comparison on 7 plays of the training corpus (text the runs trained on)
  shk7
  OMP_NUM_THREADS=2 "$PY" benchmarks/paired_compare.py --data $E/shk7 --buckets 0,128,512,2048 --threads 2 \
    --device "$DEVICE" --out "$OUTJ/paired_r17_fama-s5_shakespeare.json" twin="$(m twin90-s5):bswa" \
    fama="$(m fama-s5):fam" fama-reset="$(m fama-s5):fam-reset" fama-bswa="$(m fama-s5):bswa"
  ;;
passkey)
  for s in $SEEDS; do
    pk --model "$(m f17-s$s)" --fam-read-heads $H17 --out $E/r17-f17-s$s-pk --lengths 450,2000 --samples 20 --device "$DEVICE"
    pk --model "$(m f17-s$s)" --fam-read-heads $H17 --fam-reset --out $E/r17-f17-s$s-pk-reset --lengths 450,2000 --samples 20 --device "$DEVICE"
  done
  pk --model "$(m fama-s5)" --out $E/r17-fama-s5-pk --lengths 450,2000 --samples 20 --device "$DEVICE"
  pk --model "$(m fama-s5)" --fam-reset --out $E/r17-fama-s5-pk-reset --lengths 450,2000 --samples 20 --device "$DEVICE"
  pk --model "$(m twin-s5)" --out $E/r17-twin-s5-pk --lengths 450,2000 --samples 20 --device "$DEVICE"
  ;;
gather)  # the PassKey results above -> docs/smollm2_r17_passkey.json
  "$PY" benchmarks/gather_evals.py --out "$OUTJ/smollm2_r17_passkey.json" \
    --meta eval="fam eval passkey: new keys, depth 0, 20 per length, greedy, evaluation seed 0" \
      machine="2-core Intel Xeon with AVX512-BF16 (no AMX), torch 2.13 CPU, float32, one thread; the committed adapters" \
    --row "f17-s5" $E/r17-f17-s5-pk/passkey.json --row "f17-s5, FAM reset" $E/r17-f17-s5-pk-reset/passkey.json \
    --row "f17-s6" $E/r17-f17-s6-pk/passkey.json --row "f17-s6, FAM reset" $E/r17-f17-s6-pk-reset/passkey.json \
    --row "fama-s5" $E/r17-fama-s5-pk/passkey.json --row "fama-s5, FAM reset" $E/r17-fama-s5-pk-reset/passkey.json \
    --row "twin-s5" $E/r17-twin-s5-pk/passkey.json
  ;;
*) echo "usage: bash benchmarks/smollm2_r17_evals.sh paired|fama|shakespeare|passkey|gather [R]" >&2; exit 2 ;;
esac
