"""Prompts the demo never saw, fed as text through `fam generate` (issue 14): new keys, the spec's
format (docs/algorithm.md §10) with whole filler sentences, greedy, the reply's first 5 digits
compared with the key.

    python benchmarks/passkey_generate_check.py --model runs/demo/fam --sentences 0,1,3,5,10,21,42,85 --keys 10
    python benchmarks/passkey_generate_check.py --model smollm2-fam --sentences 20,80 --keys 10 --out runs/gen-check

Each prompt is written to a file and answered by the real command line
(`fam generate --model M --prompt-file F --max-new-tokens 8`, run in this process), so the text
goes through the saved tokenizer exactly as a user's would. A filler sentence is 24 tokens of the
word tokenizer, so an odd number of sentences is not a whole number of 16-token blocks.
Writes OUT/generate_check.json: per sentence count, the filler tokens, accuracy and the replies.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import sys
from pathlib import Path

from transformer_fam.cli import main as fam_main
from transformer_fam.data.passkey import QUESTION, passkey_text, random_key
from transformer_fam.data.tokenizer import load_tokenizer
from transformer_fam.hf.loading import tokenizer_folder


def prompt_and_key(rng: random.Random, sentences: int, depth: float) -> tuple[str, int]:
    key = random_key(rng)
    text = passkey_text(key, sentences, depth)
    return text[: text.rindex(QUESTION) + len(QUESTION)], key  # the prompt ends with "... The pass key is"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--sentences", default="0,1,3,5,10,21,42,85", help="filler sentence counts")
    p.add_argument("--keys", type=int, default=10, help="prompts (new keys) per count")
    p.add_argument("--depth", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--out", default=None, help="output folder (default: the model folder; required for a bundled model)")
    a = p.parse_args(argv)
    if a.out is None and not Path(a.model).is_dir():
        p.error(f"--model {a.model} is not a folder (a bundled model?): give --out")
    out = Path(a.out or a.model)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(tokenizer_folder(a.model))
    rng = random.Random(a.seed)
    results = {}
    for n in (int(x) for x in a.sentences.split(",")):
        right, replies = 0, []
        for i in range(a.keys):
            text, key = prompt_and_key(rng, n, a.depth)
            f = out / "generate_check_prompt.txt"
            f.write_text(text, encoding="utf-8")
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = fam_main(["generate", "--model", a.model, "--prompt-file", str(f), "--max-new-tokens", "8"])
            reply = buf.getvalue().strip()
            digits = "".join(re.findall(r"\d", reply))[:5]
            right += rc == 0 and digits == str(key)
            replies.append({"key": key, "reply": reply})
        n_tokens = len(tok.encode(text, add_special_tokens=False))
        results[str(n)] = {"prompt_tokens": n_tokens, "accuracy": right / a.keys, "replies": replies}
        print(f"{n:4d} filler sentences, {n_tokens:6d} prompt tokens: {right}/{a.keys}", flush=True)
    (out / "generate_check.json").write_text(json.dumps({"model": a.model, "depth": a.depth, "seed": a.seed,
                                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
