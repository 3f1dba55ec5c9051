#!/usr/bin/env bash
# R16 (docs/smollm2_memory.md, "Seventeenth session"): R12's exact BSWA twin and two FAM siblings trained
# side by side on one GPU for a wall-clock budget, then stopped at the largest step that all three
# reached (a multiple of SAVE), finalised there and evaluated on the held-out Milton texts (and
# PassKey). The recipe is the sixteenth session's (R11's adapter, data seed 4, PassKey + Shakespeare
# micro-batches, self-distillation 3.0), only with more steps and a larger batch:
#   bswa   the BSWA twin                                   (fam train smollm2-bswa ...)
#   famd   the paper's read by R12's 13 distant heads     (= R15p, write gates reset to the paper's update)
#   fama   the paper's read by every head                 (the paper's form; write gates reset likewise)
# usage: bash benchmarks/smollm2_gpu_r16.sh OUT [TRAIN_SECONDS]     (R16 itself: OUT 360, SAVE=10 -> 80 steps)
#        STEPS=80 bash benchmarks/smollm2_gpu_r16.sh OUT          (a fixed number of steps, no deadline)
#   FAM (.venv/bin/fam), DEVICE (cuda), BF16 (true), BATCH (8), SAVE (10), BASE (smollm2), INIT (the shipped adapter),
#   D (the readers of famd), EVAL_S (eval time limit, s), LENGTHS (PassKey filler lengths) may be set.
# Each arm's OUT/ARM/recipe.yaml holds every key with max_steps = the common step, so one arm reruns
# without a deadline as  fam train OUT/ARM/recipe.yaml out_dir=NEW  (any machine; hours on a CPU).
set -uo pipefail
OUTD=${1:?usage: bash benchmarks/smollm2_gpu_r16.sh OUT [TRAIN_SECONDS]}
TRAIN_S=${2:-360}; STEPS=${STEPS:-}
FAM=${FAM:-.venv/bin/fam}
DEVICE=${DEVICE:-cuda}; BF16=${BF16:-true}; BATCH=${BATCH:-8}; SAVE=${SAVE:-10}
BASE=${BASE:-smollm2}; INIT=${INIT:-src/transformer_fam/hf/bundled/smollm2-fam}
D=${D:-4.4,15.6,10.4,23.2,0.5,20.6,1.1,7.7,4.5,7.0,8.1,0.0,5.8}
EVAL_S=${EVAL_S:-120}; LENGTHS=${LENGTHS:-450,2000}
mkdir -p "$OUTD"
COMMON="device=$DEVICE bf16=$BF16 base_model=$BASE init_adapter=$INIT retrieval_curriculum=16:0 retrieval_p_boundary=0.3
 retrieval_text=shakespeare grad_accum=2 batch_size=$BATCH seq_len=1024 save_every=$SAVE keep_last_n=100000
 distill_weight=3.0 seed=4 progress=false tensorboard=false activation_checkpointing=false"
FAMK="fam_write_gate=true fam_write_gate_reset=all read_weight=0 write_weight=0 probe_weight=0 gate_lr=0.01"
declare -A ARGS=([bswa]="smollm2-bswa $COMMON" [famd]="smollm2-fam $FAMK fam_read_heads=$D $COMMON"
                 [fama]="smollm2-fam $FAMK $COMMON")
ARMS="bswa famd fama"
declare -A CAP=()
source "$(dirname "$0")/gpu_side_by_side.sh"

# evaluations (GPU when DEVICE=cuda; a CPU retry if the GPU one fails), in parallel
ppl() { timeout "$EVAL_S" $FAM eval ppl --data milton --buckets 0,128,512,2048 --max-tokens 4096 --device "$DEVICE" "$@" \
        || timeout "$EVAL_S" $FAM eval ppl --data milton --buckets 0,128,512,2048 --max-tokens 4096 --device cpu --threads 4 "$@"; }
pk() { timeout "$EVAL_S" $FAM eval passkey --lengths "$LENGTHS" --samples 20 --device "$DEVICE" "$@"; }
ppl --model "$OUTD/bswa/final" --modes bswa --out "$OUTD/ev/bswa-ppl" > "$OUTD/ev-bswa-ppl.log" 2>&1 &
for a in famd fama; do
  ppl --model "$OUTD/$a/final" --modes fam,fam-reset,bswa --out "$OUTD/ev/$a-ppl" > "$OUTD/ev-$a-ppl.log" 2>&1 &
done
for a in $ARMS; do pk --model "$OUTD/$a/final" --out "$OUTD/ev/$a-pk" > "$OUTD/ev-$a-pk.log" 2>&1 & done
wait
say "evaluated"
for f in "$OUTD"/ev/*/ppl.json "$OUTD"/ev/*/passkey.json; do
  [ -f "$f" ] && python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1], json.dumps(r.get('modes') or r.get('accuracy')))" "$f"
done
