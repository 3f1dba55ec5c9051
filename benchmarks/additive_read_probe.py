"""Evaluation-only probe: a trained FAM model read additively (option O2's form) by chosen heads at a
fixed gate value, with no training of the gate: does the FAM's content help when it is added to the
window's attention output instead of competing with it in one softmax?

    python benchmarks/additive_read_probe.py --model smollm2-fam \
        --heads 4.4,15.6,10.4,23.2,0.5,20.6,1.1,7.7,4.5,7.0,8.1,0.0,5.8 --gates 0,0.1,0.3,0.5,1.0 \
        --out docs/additive_read_probe.json

The model is rebuilt with ``fam_read_gate=True`` and ``fam_read_heads=--heads``, its weights copied,
and each listed head's gate set to tanh(g) = a (every other head 0); a = 0 is the same weights in
BSWA mode exactly. Prints next-token loss / accuracy by position (Milton, 7 x --max-tokens) per a.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from transformer_fam.core.config import parse_read_heads
from transformer_fam.core.model import FamForCausalLM
from transformer_fam.evaluation.ablation import FamResetEachBlock
from transformer_fam.evaluation.perplexity import evaluate_texts, load_texts, make_buckets
from transformer_fam.hf.loading import load_model


def additive_model(base, heads: list[list[int]], a: float) -> FamForCausalLM:
    cfg = base.config.__class__(**{**base.config.to_dict(), "fam_read_gate": True, "fam_read_heads": heads})
    model = FamForCausalLM(cfg).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or not all("fam_gate" in k for k in missing):
        raise SystemExit(f"weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            g = torch.zeros(cfg.num_attention_heads)
            for layer_index, h in heads:
                if layer_index == i:
                    g[h] = torch.atanh(torch.tensor(a))
            layer.self_attn.fam_gate.copy_(g)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a FAM model folder or smollm2-fam")
    ap.add_argument("--heads", required=True, help="LAYER.HEAD,... that read the FAM additively")
    ap.add_argument("--gates", default="0,0.1,0.3", help="tanh(g) values in [0, 1)")
    ap.add_argument("--reset", action="store_true", help="FAM reset to its initial value every block")
    ap.add_argument("--data", default="milton")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--buckets", default="0,128,512,2048")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    heads = parse_read_heads(a.heads)
    if not heads:
        raise SystemExit("--heads: name at least one LAYER.HEAD")
    gates = [float(x) for x in a.gates.split(",")]
    if any(not 0 <= x < 1 for x in gates):
        raise SystemExit(f"--gates {a.gates}: each must be in [0, 1)")
    base, tokenizer = load_model(a.model, "fam", "float32")
    texts = [(n, ids[: a.max_tokens]) for n, ids in load_texts(a.data, tokenizer)]
    buckets = make_buckets([int(x) for x in a.buckets.split(",")])
    results = {}
    for gate in gates:
        model = additive_model(base, heads, gate)
        results[str(gate)] = evaluate_texts(FamResetEachBlock(model) if a.reset else model, texts,
                                            4 * model.config.block_size, progress=False, buckets=buckets)
        print(f"tanh(g) = {gate}{' (FAM reset)' if a.reset else ''}: " + "  ".join(
            f"{b} {100 * v['accuracy']:.1f}% / {v['loss']:.3f}" for b, v in results[str(gate)].items()), flush=True)
    if a.out:
        a.out.write_text(json.dumps({"model": a.model, "heads": heads, "data": a.data, "max_tokens": a.max_tokens,
                                     "reset": a.reset, "gates": results}, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
