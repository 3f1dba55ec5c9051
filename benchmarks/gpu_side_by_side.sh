# Sourced by benchmarks/smollm2_gpu_r16.sh and smollm2_gpu_r17.sh: train arms side by side on one
# GPU for a wall-clock budget, stop them at the largest step every arm reached (a multiple of SAVE,
# whose checkpoints are kept) and finalise each there (`fam train OUT/ARM/recipe.yaml max_steps=S
# --resume`), so that all arms end after the same steps and data.
# The caller sets: OUTD, ARMS ("a b c"), ARGS[arm] (fam train arguments), SAVE, FAM, TRAIN_S, and
# optionally STEPS (a fixed step count instead of the deadline) and CAP[arm] (an arm's max_steps
# under the deadline: a fast arm, BSWA, stops there instead of taking the GPU from the slow ones), and
# RESUME (non-empty: each arm continues from its newest checkpoint in OUTD/ARM, from step 0 where none).
# After it: S = the common step, ARMS = the runs that reached it (a run that failed, out of GPU
# memory say, is left out rather than stopping the others at step 0).
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
declare -A PID
for a in $ARMS; do
  [ -n "${RESUME:-}" ] || : > "$OUTD/$a.train.log"  # a resumed run's log goes on after the first one's
  # shellcheck disable=SC2086
  $FAM train ${ARGS[$a]} out_dir="$OUTD/$a" max_steps="${STEPS:-${CAP[$a]:-1000000}}" ${RESUME:+--resume} \
    >> "$OUTD/$a.train.log" 2>&1 &
  PID[$a]=$!
done
reap() {  # wait for every run; keep those that ended well (0: done or capped; 130: stopped at the deadline)
  local kept="" a rc
  for a in $ARMS; do
    wait "${PID[$a]}"; rc=$?
    say "$a ended (rc $rc): $(tail -n 1 "$OUTD/$a.train.log")"
    if (( rc == 0 || rc == 130 )); then kept="$kept $a"; else say "$a failed: left out (see $OUTD/$a.train.log)"; fi
  done
  ARMS=$kept
  [ -n "$ARMS" ] || { say "every run failed"; exit 1; }
}
if [ -n "${STEPS:-}" ]; then
  say "training ${ARMS} for $STEPS steps"
  reap
  S=$STEPS
else
  say "training ${ARMS} for $TRAIN_S s"
  while (( $(date +%s) - t0 < TRAIN_S )); do
    alive=0; for a in $ARMS; do kill -0 "${PID[$a]}" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 5
  done
  for a in $ARMS; do kill -TERM "${PID[$a]}" 2>/dev/null; done
  reap
  # shellcheck disable=SC2086
  S=$(python3 - "$OUTD" "$SAVE" $ARMS <<'EOF'
import re, sys
from pathlib import Path
out, save, arms = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
reached = []
for a in arms:
    steps = [int(m.group(1)) for p in (out / a / "checkpoints").glob("step-*") if (m := re.fullmatch(r"step-(\d{8})", p.name))]
    reached.append(max(steps, default=0))
print(min(reached) // save * save)
EOF
)
  say "common step S=$S"
  if (( S == 0 )); then say "no common checkpoint: nothing to evaluate"; exit 1; fi
  for a in $ARMS; do
    for c in "$OUTD/$a"/checkpoints/step-*; do
      n=$((10#${c##*step-})); (( n > S )) && rm -rf "$c"
    done
    $FAM train "$OUTD/$a/recipe.yaml" max_steps="$S" --resume > "$OUTD/$a.final.log" 2>&1 &
  done
  wait
  say "finalised at step $S: $(ls -d "$OUTD"/*/final 2>/dev/null | tr '\n' ' ')"
fi
