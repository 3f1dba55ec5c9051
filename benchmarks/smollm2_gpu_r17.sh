#!/usr/bin/env bash
# R17 (docs/smollm2_memory.md, "Eighteenth session"): R16 continued on new data, two data seeds, up to
# six runs side by side on one GPU for a wall-clock budget, stopped at the largest step all reached
# (a multiple of SAVE) and finalised there. Per data seed s (SEEDS, default "5 6"):
#   twin-sS   R16's BSWA twin, continued                         (fam train smollm2-bswa ...)
#   f17-sS    R16's fama, continued with the FAM read by R12's 17 heads only (option O5)
#   fama-sS   R16's fama, continued with every head reading (the paper's read)
# Every run starts from a committed R16 adapter (benchmarks/adapters/smollm2-r16/{bswa,fama}; write
# gates as trained, not reset), with R16's recipe otherwise (PassKey + Shakespeare micro-batches of 8
# rows, self-distillation 3.0, no read / write / probe supervision). The twins are capped at CAPSTEPS
# so that they do not take the GPU from the slower FAM runs; all end at the same step.
# usage: bash benchmarks/smollm2_gpu_r17.sh OUT [TRAIN_SECONDS]     (as R17 ran: OUT 470; see below)
#        STEPS=120 KINDS="twin f17" bash benchmarks/smollm2_gpu_r17.sh OUT     (R17's f17 runs and twins, no deadline)
#        STEPS=90 SEEDS=5 KINDS="twin fama" bash benchmarks/smollm2_gpu_r17.sh OUT (R17's fama-s5 and its twin)
#   FAM, DEVICE (cuda), BF16 (true), BATCH (8), SAVE (10), BASE (smollm2), INIT16 (R16's adapters),
#   SEEDS, KINDS (twin f17 fama), TEXT (shakespeare), CAPSTEPS (150) may be set. Evaluations: benchmarks/smollm2_r17_evals.sh.
# Each run takes ~23 GB of GPU memory: six did not fit on one H200 (141 GB). As R17 ran, fama-s6 ran out
# of memory at step 2; the others reached 120-150 steps (fama-s5 93) in 470 s, f17 and the twins were
# finalised at 120, fama-s5 and a copy of twin-s5 at 90 (the two fixed-step commands above).
# Each run's OUT/ARM/recipe.yaml holds every key with max_steps = the common step, so one run reruns
# without a deadline as  fam train OUT/ARM/recipe.yaml out_dir=NEW  (any machine; hours on a CPU).
set -uo pipefail
OUTD=${1:?usage: bash benchmarks/smollm2_gpu_r17.sh OUT [TRAIN_SECONDS]}
TRAIN_S=${2:-470}; STEPS=${STEPS:-}
FAM=${FAM:-.venv/bin/fam}
DEVICE=${DEVICE:-cuda}; BF16=${BF16:-true}; BATCH=${BATCH:-8}; SAVE=${SAVE:-10}; CAPSTEPS=${CAPSTEPS:-150}
BASE=${BASE:-smollm2}; INIT16=${INIT16:-benchmarks/adapters/smollm2-r16}; SEEDS=${SEEDS:-5 6}; KINDS=${KINDS:-twin f17 fama}
TEXT=${TEXT:-shakespeare}  # the text micro-batches' corpora (recipe key retrieval_text: names, folders, comma separated)
H17=${H17:-17.3,18.6,17.4,18.7,4.4,15.6,10.4,23.2,0.5,20.6,1.1,7.7,4.5,7.0,8.1,0.0,5.8}  # R16's O5 set
mkdir -p "$OUTD"
COMMON="device=$DEVICE bf16=$BF16 base_model=$BASE retrieval_curriculum=16:0 retrieval_p_boundary=0.3
 retrieval_text=$TEXT grad_accum=2 batch_size=$BATCH seq_len=1024 save_every=$SAVE keep_last_n=100000
 distill_weight=3.0 progress=false tensorboard=false activation_checkpointing=false"
FAMK="fam_write_gate=true read_weight=0 write_weight=0 probe_weight=0 gate_lr=0.01 init_adapter=$INIT16/fama"
declare -A ARGS=() CAP=()
ARMS=""
for s in $SEEDS; do
  for k in $KINDS; do
    case $k in
      twin) ARGS[twin-s$s]="smollm2-bswa init_adapter=$INIT16/bswa seed=$s $COMMON"; CAP[twin-s$s]=$CAPSTEPS ;;
      f17) ARGS[f17-s$s]="smollm2-fam $FAMK fam_read_heads=$H17 seed=$s $COMMON" ;;
      fama) ARGS[fama-s$s]="smollm2-fam $FAMK seed=$s $COMMON" ;;
      *) echo "KINDS: $k is not one of twin f17 fama" >&2; exit 2 ;;
    esac
    ARMS="$ARMS $k-s$s"
  done
done
source "$(dirname "$0")/gpu_side_by_side.sh"
for a in $ARMS; do echo "$a: $(tail -n 1 "$OUTD/$a/metrics.jsonl" | cut -c1-240)"; done
