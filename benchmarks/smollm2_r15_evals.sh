#!/usr/bin/env bash
# The evaluations behind docs/smollm2_r15.json (docs/smollm2_memory.md, "Sixteenth session"): option O6
# (fam_read_shift) on the untrained conversion and on the shipped smollm2-fam at evaluation, and the
# two runs R15s (O6) / R15p (the paper's read) trained by the commands there into runs/r15-shift and
# runs/r15-paper; the BSWA twin's and the untrained BSWA rows come from benchmarks/smollm2_r12_evals.sh
# (runs/ev/r12b-ppl, runs/ev/win-m0, runs/ev/win-m1). One thread; ~1 h on a 2-core Xeon.
#   bash benchmarks/smollm2_r15_evals.sh untrained   (no training needed)
#   bash benchmarks/smollm2_r15_evals.sh trained     (after the two runs)
#   bash benchmarks/smollm2_r15_evals.sh gather      (writes docs/smollm2_r15.json)
source "$(dirname "$0")/smollm2_evals_common.sh"

case "${1:-}" in
untrained)
  [ -d runs/conv/fam-m0 ] || "$FAM" convert smollm2 runs/conv/fam-m0 --mode fam --block-size 128 --mem-segments 0 --fam-length 16
  ppl --model runs/conv/fam-m0 --modes fam,fam-reset --fam-read-heads $D --out $E/conv-d13
  ppl --model runs/conv/fam-m0 --modes fam --fam-read-heads $D --fam-read-shift on --out $E/conv-d13-shift
  ppl --model runs/conv/fam-m0 --modes fam,fam-reset --out $E/conv-all
  ppl --model runs/conv/fam-m0 --modes fam --fam-read-shift on --out $E/conv-all-shift
  ppl --model smollm2-fam --modes fam --fam-read-heads $D --fam-read-shift on --out $E/r11-ppl-dist-shift
  [ -d runs/conv/fam-m1 ] || "$FAM" convert smollm2 runs/conv/fam-m1 --mode fam --block-size 128 --mem-segments 1 --fam-length 16
  ppl --model runs/conv/fam-m1 --modes fam,fam-reset --fam-read-heads $D --out $E/conv-m1-d13
  ppl --model runs/conv/fam-m1 --modes fam --fam-read-heads $D --fam-read-shift on --out $E/conv-m1-d13-shift
  ;;
trained)
  for R in shift paper; do
    ppl --model runs/r15-$R/final --modes fam,fam-reset,bswa --out $E/r15-$R-ppl
  done
  ppl --model runs/r15-shift/final --modes fam --fam-read-shift off --out $E/r15-shift-ppl-off
  "$PY" benchmarks/inblock_loss.py --model runs/r15-paper/final --out docs/inblock_loss_r15p.json
  ;;
gather)
  "$PY" benchmarks/gather_evals.py --out docs/smollm2_r15.json \
    --meta machine="2-core Intel Xeon with AVX512-BF16 (no AMX), 24 GB, torch 2.13 CPU, float32, one thread per job" \
      eval_seed=0 milton="7 texts x 4096 tokens" \
      training="one run per row, data seed 4 (docs/smollm2_memory.md, Sixteenth session)" \
    --row "converted BSWA, no training, window 128 (block 128, m 0)" $E/win-m0/ppl.json:bswa \
    --row "converted FAM, no training, 13 distant heads read (paper)" $E/conv-d13/ppl.json:fam \
    --row "converted FAM, no training, 13 distant heads read, FAM reset" $E/conv-d13/ppl.json:fam-reset \
    --row "converted FAM, no training, 13 distant heads read the layer below (O6)" $E/conv-d13-shift/ppl.json:fam \
    --row "converted FAM, no training, every head reads (paper)" $E/conv-all/ppl.json:fam \
    --row "converted FAM, no training, every head reads, FAM reset" $E/conv-all/ppl.json:fam-reset \
    --row "converted FAM, no training, every head reads the layer below (O6)" $E/conv-all-shift/ppl.json:fam \
    --row "converted BSWA, no training, window 256 (block 128, m 1)" $E/win-m1/ppl.json:bswa \
    --row "converted FAM m 1, no training, 13 distant heads read (paper)" $E/conv-m1-d13/ppl.json:fam \
    --row "converted FAM m 1, no training, 13 distant heads read, FAM reset" $E/conv-m1-d13/ppl.json:fam-reset \
    --row "converted FAM m 1, no training, 13 distant heads read the layer below (O6)" $E/conv-m1-d13-shift/ppl.json:fam \
    --row "FAM + R11 (smollm2-fam) read by the 13 distant heads (evaluation only)" $E/r11-ppl-dist/ppl.json:fam \
    --row "FAM + R11 read by the 13 distant heads, layer below (O6, evaluation only)" $E/r11-ppl-dist-shift/ppl.json:fam \
    --row "BSWA twin of R12 (R11's adapter and recipe, data seed 4, 80 steps)" $E/r12b-ppl/ppl.json:bswa \
    --row "FAM + R15s (O6 + 13 distant readers + write gates reset, 80 steps)" $E/r15-shift-ppl/ppl.json:fam \
    --row "FAM + R15s, FAM reset every block" $E/r15-shift-ppl/ppl.json:fam-reset \
    --row "R15s's weights in BSWA mode" $E/r15-shift-ppl/ppl.json:bswa \
    --row "FAM + R15s read the paper's way (O6 off at evaluation)" $E/r15-shift-ppl-off/ppl.json:fam \
    --row "FAM + R15p (the same, paper's read)" $E/r15-paper-ppl/ppl.json:fam \
    --row "FAM + R15p, FAM reset every block" $E/r15-paper-ppl/ppl.json:fam-reset \
    --row "R15p's weights in BSWA mode" $E/r15-paper-ppl/ppl.json:bswa
  ;;
*) echo "usage: bash benchmarks/smollm2_r15_evals.sh untrained|trained|gather" >&2; exit 2 ;;
esac
