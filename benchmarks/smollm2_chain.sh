#!/usr/bin/env bash
# A chain of R18-style links (docs/smollm2_memory.md, "Twenty-first session"): R17's committed fama-s5 and
# twin90-s5 continued link after link, each link STEPS (105) steps of benchmarks/smollm2_r18.sh on its own data
# seed with a fresh AdamW, from the previous link's committed (bfloat16) adapters; each link's adapters, recipes,
# metrics and logs are committed in turn under benchmarks/adapters/smollm2-TAG (benchmarks/commit_adapter.py).
#   chain 1 (sessions 19-20): R18 (seed 7) -> R19 (seed 8), the same steps as  bash benchmarks/smollm2_chain.sh runs/chain1 r18:7 r19:8
#   chain 2 (sessions 21-22): R18b (seed 9) -> R19b (seed 10) -> R20b (seed 11)
#     bash benchmarks/smollm2_chain.sh runs/chain2 r18b:9 r19b:10 r20b:11
# A link whose adapters are already in benchmarks/adapters is not trained again (the chain goes on from them), and
# a link cut short continues from its newest checkpoint in OUT/TAG (every 5 steps), so a chain stopped by the
# end of a session goes on with the same command. About 60-80 minutes per link on a
# 2-core CPU (one thread per arm). Evaluations: TAG=r19b bash benchmarks/smollm2_r18_evals.sh paired|passkey.
# STEPS, INIT_TWIN / INIT_FAMA (the chain's start) and smollm2_r18.sh's variables may be set.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."
OUTD=${1:?usage: bash benchmarks/smollm2_chain.sh OUT TAG:SEED [TAG:SEED ...]}
shift
[ $# -ge 1 ] || { echo "smollm2_chain.sh: no links given (TAG:SEED, e.g. r18b:9)" >&2; exit 2; }
PY=${PY:-.venv/bin/python}
twin=${INIT_TWIN:-benchmarks/adapters/smollm2-r17/twin90-s5}
fama=${INIT_FAMA:-benchmarks/adapters/smollm2-r17/fama-s5}
mkdir -p "$OUTD"
for link in "$@"; do
  tag=${link%%:*}; seed=${link#*:}
  case "$seed" in '' | *[!0-9]*) echo "smollm2_chain.sh: link '$link': expected TAG:SEED, e.g. r18b:9" >&2; exit 2 ;; esac
  dest=benchmarks/adapters/smollm2-$tag
  if [ -f "$dest/twin/adapter_model.safetensors" ] && [ -f "$dest/fama/adapter_model.safetensors" ]; then
    echo "$tag: committed in $dest, not trained again"
  else
    echo "$tag: seed $seed from $twin and $fama -> $OUTD/$tag"
    SEED=$seed STEPS=${STEPS:-105} RESUME=1 INIT_TWIN=$twin INIT_FAMA=$fama \
      bash benchmarks/smollm2_r18.sh "$OUTD/$tag" > "$OUTD/$tag.log" 2>&1
    for a in twin fama; do "$PY" benchmarks/commit_adapter.py "$OUTD/$tag/$a" "$dest/$a"; done
    mkdir -p "$dest/logs"
    cp "$OUTD/$tag"/*.log "$dest/logs/" && cp "$OUTD/$tag.log" "$dest/logs/$tag.log"
  fi
  twin=$dest/twin; fama=$dest/fama
done
