#!/usr/bin/env bash
# The evaluations behind docs/smollm2_r12.json (docs/smollm2_memory.md, "Fourteenth and fifteenth
# sessions"): R12, its BSWA twin and R14 (trained by the commands there into runs/r12-fam,
# runs/r12-bswa, runs/r14-fam), the shipped smollm2-fam read by other heads, and the untrained
# conversion in BSWA mode at windows 128-1024; then gathers them. One thread; ~2.5 h on a 2-core Xeon.
#   bash benchmarks/smollm2_r12_evals.sh            (writes runs/ev/*, then docs/smollm2_r12.json)
source "$(dirname "$0")/smollm2_evals_common.sh"
T32=4.4,4.5,8.1,10.4,5.8,3.0,7.0,4.3,15.6,3.3,3.1,3.4,10.3,4.0,0.5,23.2,1.1,8.6,7.7,5.5,10.5,20.6,7.8,9.6,6.2,0.0,7.1,24.1,28.2,6.7,7.3,6.3  # docs/distant_heads.json "4/8", PassKey heads left out

for R in r12 r14; do
  M=runs/$R-fam/final
  pk --model $M --lengths 60,200,450,1000,2000,4000 --samples 20 --out $E/$R-pk
  pk --model $M --lengths 450,2000 --samples 20 --fam-reset --out $E/$R-pk-reset
  pk --model $M --lengths 450,2000 --depths 0.5 --samples 20 --out $E/$R-pk-d05
  ppl --model $M --modes fam,fam-reset,bswa --out $E/$R-ppl
  ppl --model $M --modes fam,fam-reset --fam-read-heads $D --out $E/$R-ppl-dist
done
pk --model runs/r12-fam/final --lengths 8050,16000 --samples 10 --out $E/r12-pk-long
ppl --model runs/r12-fam/final --modes fam,fam-reset --fam-read-heads 17.3,17.4,18.6,18.7 --out $E/r12-ppl-sup
pk --model runs/r12-bswa/final --lengths 60,200,450,2000 --samples 20 --out $E/r12b-pk
ppl --model runs/r12-bswa/final --modes bswa --out $E/r12b-ppl
ppl --model smollm2-fam --modes fam,fam-reset --fam-read-heads $D --out $E/r11-ppl-dist
ppl --model smollm2-fam --modes fam,fam-reset --fam-read-heads $T32 --out $E/r11-ppl-top32
for m in 0 1 3 7; do
  "$FAM" convert smollm2 runs/conv/bswa-m$m --mode bswa --block-size 128 --mem-segments $m
  ppl --model runs/conv/bswa-m$m --modes "bswa$([ $m = 0 ] && echo ,full)" --out $E/win-m$m
done

"$PY" benchmarks/gather_evals.py --out docs/smollm2_r12.json \
  --meta machine="2-core Intel Xeon with AVX512-BF16 (no AMX), 24 GB, torch 2.13 CPU, float32, one thread per job" \
    eval_seed=0 keys_per_length="20 (10 at 8050 and 16000)" depth=0 milton="7 texts x 4096 tokens" \
    training="one run per row; R12, its twin and R14 on data seed 4 (docs/smollm2_memory.md, Fourteenth and fifteenth sessions)" \
  --row "original SmolLM2-135M-Instruct, full attention" $E/win-m0/ppl.json:full \
  --row "converted BSWA, no training, window 128 (block 128, m 0)" $E/win-m0/ppl.json:bswa \
  --row "converted BSWA, no training, window 256 (m 1)" $E/win-m1/ppl.json:bswa \
  --row "converted BSWA, no training, window 512 (m 3)" $E/win-m3/ppl.json:bswa \
  --row "converted BSWA, no training, window 1024 (m 7)" $E/win-m7/ppl.json:bswa \
  --row "BSWA twin of R12 (R11's adapter and recipe, data seed 4, 80 steps)" $E/r12b-pk/passkey.json $E/r12b-ppl/ppl.json:bswa \
  --row "FAM + R12 (R11 + fam_read_distant=16 + 80 steps, data seed 4)" $E/r12-pk/passkey.json $E/r12-pk-long/passkey.json $E/r12-pk-d05/passkey.json $E/r12-ppl/ppl.json:fam \
  --row "FAM + R12, FAM reset every block" $E/r12-pk-reset/passkey.json $E/r12-ppl/ppl.json:fam-reset \
  --row "R12's weights in BSWA mode" $E/r12-ppl/ppl.json:bswa \
  --row "FAM + R12 read by the 4 supervised heads only" $E/r12-ppl-sup/ppl.json:fam \
  --row "FAM + R12 read by the 4 supervised heads only, FAM reset" $E/r12-ppl-sup/ppl.json:fam-reset \
  --row "FAM + R12 read by its 13 distant heads only" $E/r12-ppl-dist/ppl.json:fam \
  --row "FAM + R12 read by its 13 distant heads only, FAM reset" $E/r12-ppl-dist/ppl.json:fam-reset \
  --row "FAM + R11 (smollm2-fam) read by R12's 13 distant heads instead of its 4 (evaluation only)" $E/r11-ppl-dist/ppl.json:fam \
  --row "FAM + R11 read by R12's 13 distant heads, FAM reset" $E/r11-ppl-dist/ppl.json:fam-reset \
  --row "FAM + R11 read by 32 distant heads (8 rows, data seed 4; evaluation only)" $E/r11-ppl-top32/ppl.json:fam \
  --row "FAM + R11 read by 32 distant heads, FAM reset" $E/r11-ppl-top32/ppl.json:fam-reset \
  --row "FAM + R14 (R12 with fam_write_gate_reset=unsupervised)" $E/r14-pk/passkey.json $E/r14-pk-d05/passkey.json $E/r14-ppl/ppl.json:fam \
  --row "FAM + R14, FAM reset every block" $E/r14-pk-reset/passkey.json $E/r14-ppl/ppl.json:fam-reset \
  --row "R14's weights in BSWA mode" $E/r14-ppl/ppl.json:bswa \
  --row "FAM + R14 read by its 13 distant heads only" $E/r14-ppl-dist/ppl.json:fam \
  --row "FAM + R14 read by its 13 distant heads only, FAM reset" $E/r14-ppl-dist/ppl.json:fam-reset
