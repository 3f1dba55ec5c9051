#!/usr/bin/env bash
# R21m (docs/smollm2_memory.md, "Twenty-third session"): is Milton's missing memory gain a matter of genre?
# Chain 2's end (R20b) continued one more link (105 steps, data seed 12) with Milton's six other works
# in the text mix, Paradise Lost held out: text rows from Shakespeare, the King James Bible's books 8-66 and
# Milton's Allegro, Areopagitica, Comus, Poemata, Poems and Paradise Regained (listed three times: about a
# fifth of the text characters instead of 7%). Twin and fama get the same rows, as in every link.
#   bash benchmarks/smollm2_r21m.sh [OUT]     (OUT: runs/chain2; adapters -> benchmarks/adapters/smollm2-r21m)
# Evaluations: TAG=r21m bash benchmarks/smollm2_r18_evals.sh paradise|passkey; the Bible alone as in
# docs/smollm2_memory.md (the Milton half of paired / inwindow no longer applies: six of its seven texts are trained on)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
M6=runs/ev/milton6
if [ ! -d "$M6" ]; then
  milton=$("$PY" -c "from transformer_fam.data.corpora import get_corpus; print(get_corpus('milton'))")
  mkdir -p "$M6" && for f in "$milton"/*.txt; do case "$(basename "$f")" in paradise_lost*) ;; *) cp "$f" "$M6/" ;; esac; done
fi
BOOKS=${BOOKS:-runs/ev/kjv8-66}  # made by benchmarks/smollm2_r18.sh when missing
INIT_TWIN=benchmarks/adapters/smollm2-r20b/twin INIT_FAMA=benchmarks/adapters/smollm2-r20b/fama \
  TEXT=shakespeare,$BOOKS,$M6,$M6,$M6 bash benchmarks/smollm2_chain.sh "${1:-runs/chain2}" r21m:12
