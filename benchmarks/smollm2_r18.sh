#!/usr/bin/env bash
# R18 (docs/smollm2_memory.md, "Nineteenth session"): does the paper's FAM read transfer to held-out books
# when its text is varied? R17's fama-s5 (the paper's read, every head) and its twin at the same step
# (twin90-s5) continued side by side on PassKey + text drawn from Shakespeare AND the King James Bible's
# books 8-66 (Ruth .. Revelation; Genesis .. Judges and Milton stay held out), instead of Shakespeare alone.
#   twin   R17's twin90-s5 continued   (fam train smollm2-bswa ...)
#   fama   R17's fama-s5 continued     (fam train smollm2-fam ..., every head reads, write gates as trained)
# Sized for a 2-core CPU: one thread per run, micro-batches of BATCH rows (2) and a learning rate halved
# from R17's (batch 8 -> 2), float32 (bf16 autocast is slower without AMX); both runs stop at the
# largest step both reached within TRAIN_SECONDS (a multiple of SAVE) and are finalised there.
# usage: bash benchmarks/smollm2_r18.sh OUT [TRAIN_SECONDS]    (as R18 ran: OUT 5400)
#        STEPS=100 bash benchmarks/smollm2_r18.sh OUT            (a fixed step count, no deadline)
#   FAM, DEVICE (cpu), BF16 (false), BATCH (2), SAVE (5), LR (5e-4), INIT17 (R17's committed adapters),
#   INIT_TWIN / INIT_FAMA (the adapters each arm starts from: INIT17's twin90-s5 / fama-s5), SEED (7),
#   TEXT (shakespeare + the books folder), EXTRA (more recipe keys for both arms, e.g. mem_segments=1) may be
#   set. Evaluations: benchmarks/smollm2_r18_evals.sh.
# R19 (twentieth session) is R18 continued from R18's committed adapters on new data (seed 8):
#   SEED=8 INIT_TWIN=benchmarks/adapters/smollm2-r18/twin INIT_FAMA=benchmarks/adapters/smollm2-r18/fama \
#     bash benchmarks/smollm2_r18.sh runs/r19 4800
# Each run's OUT/ARM/recipe.yaml holds every key with max_steps = the common step, so one run reruns
# without a deadline as  fam train OUT/ARM/recipe.yaml out_dir=NEW.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."
OUTD=${1:?usage: bash benchmarks/smollm2_r18.sh OUT [TRAIN_SECONDS]}
TRAIN_S=${2:-5400}; STEPS=${STEPS:-}
FAM=${FAM:-.venv/bin/fam}; PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}; BF16=${BF16:-false}; BATCH=${BATCH:-2}; SAVE=${SAVE:-5}; LR=${LR:-5e-4}; SEED=${SEED:-7}
INIT17=${INIT17:-benchmarks/adapters/smollm2-r17}
INIT_TWIN=${INIT_TWIN:-$INIT17/twin90-s5}; INIT_FAMA=${INIT_FAMA:-$INIT17/fama-s5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BOOKS=${BOOKS:-runs/ev/kjv8-66}
if [ ! -d "$BOOKS" ]; then  # the King James Bible without its first 7 books (those are evaluated)
  kjv=$("$PY" -c "from transformer_fam.data.corpora import get_corpus; print(get_corpus('kjv'))") || exit 1
  mkdir -p "$BOOKS" && for f in "$kjv"/*.txt; do n=$(basename "$f"); [ "${n:0:2}" -ge 8 ] 2>/dev/null && cp "$f" "$BOOKS/"; done
fi
TEXT=${TEXT:-shakespeare,$BOOKS}
mkdir -p "$OUTD"
# lr, fam_lr, gate_lr: R17's (1e-3, 3e-3, 1e-2) scaled by LR / 1e-3
FL=$("$PY" -c "print(3 * $LR)"); GL=$("$PY" -c "print(10 * $LR)")
COMMON="device=$DEVICE bf16=$BF16 base_model=smollm2 retrieval_curriculum=16:0 retrieval_p_boundary=0.3
 retrieval_text=$TEXT grad_accum=2 batch_size=$BATCH seq_len=1024 save_every=$SAVE keep_last_n=100000
 distill_weight=3.0 lr=$LR seed=$SEED progress=false tensorboard=false activation_checkpointing=false ${EXTRA:-}"
declare -A ARGS=() CAP=()
ARGS[twin]="smollm2-bswa init_adapter=$INIT_TWIN $COMMON"
ARGS[fama]="smollm2-fam fam_write_gate=true read_weight=0 write_weight=0 probe_weight=0 fam_lr=$FL gate_lr=$GL
 init_adapter=$INIT_FAMA $COMMON"
ARMS="twin fama"
source "$HERE/gpu_side_by_side.sh"
for a in $ARMS; do echo "$a: $(tail -n 1 "$OUTD/$a/metrics.jsonl" | cut -c1-240)"; done
