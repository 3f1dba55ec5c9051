#!/usr/bin/env bash
# The CPU evaluations behind docs/smollm2_r16.json (docs/smollm2_memory.md, "Seventeenth session") of the
# three R16 adapters trained on a GPU by benchmarks/smollm2_gpu_r16.sh (bswa / famd / fama, 80 steps),
# loaded by folder (fam.json + LoRA in bfloat16); the GPU's own evaluations are in R16/gpu/.
#   bash benchmarks/smollm2_r16_evals.sh milton R16   (Milton, as every earlier table: one thread, ~10 min)
#   bash benchmarks/smollm2_r16_evals.sh kjv R16      (7 books of the King James Bible, 4096 tokens each)
#   bash benchmarks/smollm2_r16_evals.sh passkey R16  (the paper-form arm fama: 4x-63x, reset, depth 0.5)
#   bash benchmarks/smollm2_r16_evals.sh o5 R16       (fama read by R12's 17 heads only, option O5 at evaluation)
#   bash benchmarks/smollm2_r16_evals.sh where R16    (fama's loss by in-block position and by target: digit / other)
#   bash benchmarks/smollm2_r16_evals.sh paired R16   (each arm minus the twin, per token, with standard errors)
#   bash benchmarks/smollm2_r16_evals.sh gather R16   (writes docs/smollm2_r16.json)
source "$(dirname "$0")/smollm2_evals_common.sh"
R=${2:-benchmarks/adapters/smollm2-r16}
H17=17.3,18.6,17.4,18.7,$D   # R12's readers: R11's 4 PassKey heads and the 13 distant ones
kjv() { kjv7; "$FAM" eval ppl --data $E/kjv7 --buckets 0,128,512,1024,2048 --max-tokens 4096 --threads 1 "$@"; }
case "${1:-}" in
milton)
  ppl --model $R/fama --modes fam,fam-reset,bswa --out $E/r16-fama-ppl
  ppl --model $R/bswa --modes bswa --out $E/r16-bswa-ppl
  ;;
kjv)
  kjv --model $R/fama --modes fam,fam-reset,bswa --out $E/r16-fama-kjv
  kjv --model $R/bswa --modes bswa --out $E/r16-bswa-kjv
  kjv --model $R/famd --modes fam,fam-reset,bswa --out $E/r16-famd-kjv
  ;;
passkey)
  pk --model $R/fama --lengths 450,2000,4000 --samples 20 --out $E/r16-fama-pk
  pk --model $R/fama --lengths 8050 --samples 10 --out $E/r16-fama-pk8k
  pk --model $R/fama --lengths 450,2000 --samples 20 --fam-reset --out $E/r16-fama-pk-reset
  pk --model $R/fama --lengths 450,2000 --depths 0.5 --samples 20 --out $E/r16-fama-pk-d05
  pk --model $R/fama --lengths 450,2000 --samples 20 --seed 1 --out $E/r16-fama-pk-s1   # 20 other keys
  ;;
o5)
  ppl --model $R/fama --modes fam,fam-reset --fam-read-heads $H17 --out $E/r16-fama-ppl-o5
  kjv --model $R/fama --modes fam,fam-reset --fam-read-heads $H17 --out $E/r16-fama-kjv-o5
  pk --model $R/fama --lengths 450,2000 --samples 20 --fam-read-heads $H17 --out $E/r16-fama-pk-o5
  pk --model $R/fama --lengths 450,2000 --samples 20 --fam-read-heads $H17 --fam-reset --out $E/r16-fama-pk-o5-reset
  pk --model $R/fama --lengths 4000 --samples 20 --fam-read-heads $H17 --out $E/r16-fama-pk-o5-4k
  pk --model $R/fama --lengths 450,2000 --samples 20 --fam-read-heads $H17 --seed 1 --out $E/r16-fama-pk-o5-s1
  ;;
where)
  "$PY" benchmarks/inblock_loss.py --model $R/fama --out docs/inblock_loss_r16fama.json
  "$PY" benchmarks/inblock_loss.py --model $R/fama --by target --out docs/digit_loss_r16fama_milton.json
  ;;
paired)
  kjv7
  for data in milton kjv; do
    "$PY" benchmarks/paired_compare.py --data "$([ $data = kjv ] && echo $E/kjv7 || echo milton)" \
      --out docs/paired_r16_$data.json twin=$R/bswa:bswa fama-o5=$R/fama:fam@$H17 \
      fama-o5-reset=$R/fama:fam-reset@$H17 fama-bswa=$R/fama:bswa fama=$R/fama:fam
  done
  ;;
gather)
  G=$R/gpu
  "$PY" benchmarks/gather_evals.py --out docs/smollm2_r16.json \
    --meta training="one run per arm on one NVIDIA H200 (bash benchmarks/smollm2_gpu_r16.sh; bfloat16 autocast), data seed 4, 80 steps of batch 8 + 8 rows" \
      gpu_evals="$G/*.json: the H200, float32, the runs' float32 final/ models" \
      cpu_evals="runs/ev/r16-*: 2-core Intel Xeon with AVX512-BF16 (no AMX), torch 2.13 CPU, float32, one thread; the adapters as committed (LoRA in bfloat16)" \
      eval_seed=0 milton="7 texts x 4096 tokens" kjv7="Genesis..Judges, 7 x 4096 tokens" \
    --row "R16 BSWA twin (GPU evaluation)" $G/bswa-ppl.json $G/bswa-passkey.json \
    --row "R16 famd: 13 distant heads read (GPU evaluation; the Bible on the CPU)" $G/famd-ppl.json:fam $G/famd-passkey.json \
      $E/r16-famd-kjv/ppl.json:fam \
    --row "R16 famd, FAM reset every block (GPU evaluation; the Bible on the CPU)" $G/famd-ppl.json:fam-reset \
      $E/r16-famd-kjv/ppl.json:fam-reset \
    --row "R16 famd's weights in BSWA mode (GPU evaluation; the Bible on the CPU)" $G/famd-ppl.json:bswa \
      $E/r16-famd-kjv/ppl.json:bswa \
    --row "R16 fama: every head reads, the paper's form (GPU evaluation)" $G/fama-ppl.json:fam $G/fama-passkey.json \
    --row "R16 fama, FAM reset every block (GPU evaluation)" $G/fama-ppl.json:fam-reset \
    --row "R16 fama's weights in BSWA mode (GPU evaluation)" $G/fama-ppl.json:bswa \
    --row "R16 BSWA twin" $E/r16-bswa-ppl/ppl.json $E/r16-bswa-kjv/ppl.json \
    --row "R16 fama: every head reads, the paper's form" $E/r16-fama-ppl/ppl.json:fam $E/r16-fama-kjv/ppl.json:fam \
      $E/r16-fama-pk/passkey.json $E/r16-fama-pk8k/passkey.json $E/r16-fama-pk-d05/passkey.json \
    --row "R16 fama, FAM reset every block" $E/r16-fama-ppl/ppl.json:fam-reset $E/r16-fama-kjv/ppl.json:fam-reset \
      $E/r16-fama-pk-reset/passkey.json \
    --row "R16 fama's weights in BSWA mode" $E/r16-fama-ppl/ppl.json:bswa $E/r16-fama-kjv/ppl.json:bswa \
    --row "R16 fama read by R12's 17 heads only (O5 at evaluation)" $E/r16-fama-ppl-o5/ppl.json:fam \
      $E/r16-fama-kjv-o5/ppl.json:fam $E/r16-fama-pk-o5/passkey.json $E/r16-fama-pk-o5-4k/passkey.json \
    --row "R16 fama read by R12's 17 heads only, FAM reset every block" $E/r16-fama-ppl-o5/ppl.json:fam-reset \
      $E/r16-fama-kjv-o5/ppl.json:fam-reset $E/r16-fama-pk-o5-reset/passkey.json \
    --row "R16 fama, PassKey with 20 other keys (evaluation seed 1)" $E/r16-fama-pk-s1/passkey.json \
    --row "R16 fama read by R12's 17 heads only, PassKey with 20 other keys (evaluation seed 1)" $E/r16-fama-pk-o5-s1/passkey.json
  ;;
*) echo "usage: bash benchmarks/smollm2_r16_evals.sh milton|kjv|passkey|o5|where|paired|gather [R16 adapters]" >&2; exit 2 ;;
esac
