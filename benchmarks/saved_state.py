"""Answering a question about a long document: from a saved state vs re-reading the document.

    python benchmarks/saved_state.py --tokens 65536 --out docs/saved_state.md     # ~1 hour, 1 thread

SmolLM2-135M shape, random weights, block 1024, memory 3, FAM 64 (as benchmarks/paired_ratios.py).
For fam and bswa: the document is read once (``stream``) and its state saved (``FamCache.save``);
answering then costs loading the state, reading the question and decoding the answer
(``generate_from``). Against it: fam re-reading document + question, and Hugging Face's
``LlamaForCausalLM`` (SDPA, full attention) re-reading them. The state's size is measured (the
file) and the HF KV cache's size computed, at the document's length and at 1M tokens.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from transformer_fam import FamCache, stream
from transformer_fam.experiments.bench import SMOLLM2_SHAPE, _fam_model, _hf_model, machine, write_markdown
from transformer_fam.hardware import bf16_speedup

VOCAB = SMOLLM2_SHAPE["vocab_size"]


def greedy(model, cache, first_logits, n):
    """n greedy tokens after a prompt whose last logits are first_logits (B, V); cache continued."""
    tok = first_logits.argmax(-1, keepdim=True)
    out = [tok]
    for _ in range(n - 1):
        res = model(tok, past_key_values=cache, use_cache=True)
        cache, tok = res.past_key_values, res.logits[:, -1].argmax(-1, keepdim=True)
        out.append(tok)
    return torch.cat(out, dim=1)


def hf_kv_bytes(tokens: int, bytes_per: int) -> int:
    s = SMOLLM2_SHAPE
    return 2 * s["num_hidden_layers"] * s["num_key_value_heads"] * s["head_dim"] * tokens * bytes_per


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=65536, help="document length")
    p.add_argument("--question", type=int, default=32, help="question tokens")
    p.add_argument("--answer", type=int, default=16, help="answer tokens (greedy)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--out", default="docs/saved_state.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = (torch.bfloat16 if bf16_speedup() > 1 else torch.float32) if args.dtype == "auto" \
        else getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    doc = torch.randint(0, VOCAB, (1, args.tokens), generator=gen)
    question = torch.randint(0, VOCAB, (1, args.question), generator=gen)
    shape = argparse.Namespace(block_size=1024, mem_segments=3, fam_length=64)
    rows, sizes, answers = [], {}, {}
    folder = Path(tempfile.mkdtemp())
    with torch.no_grad():
        for mode in ("fam", "bswa"):
            model = _fam_model(mode, shape, dtype)
            t0 = time.perf_counter()
            read = stream(model, doc, 8 * 1024)
            read_s = time.perf_counter() - t0
            path = folder / f"{mode}.fam-state"
            t0 = time.perf_counter()
            sizes[mode] = read.cache.save(path, model)
            save_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            cache = FamCache.load(path, model)
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            asked = stream(model, question, cache=cache)
            answer = greedy(model, asked.cache, asked.logits, args.answer)
            ask_s = time.perf_counter() - t0
            answers[mode] = answer
            rows.append((f"{mode}: answer from the saved state (load + question + answer)", load_s + ask_s))
            if mode == "fam":
                t0 = time.perf_counter()
                again = stream(model, torch.cat((doc, question), 1), 8 * 1024)
                re_answer = greedy(model, again.cache, again.logits, args.answer)
                reread_s = time.perf_counter() - t0
                assert torch.equal(re_answer, answer), "re-reading gave another answer than the saved state"
                rows.append(("fam: re-read document + question, answer", reread_s))
            rows.append((f"{mode}: read the document once (not per question)", read_s))
            rows.append((f"{mode}: save the state / load it", f"{save_s:.2f} s / {load_s:.2f} s"))
            print(rows[-4:] if mode == "fam" else rows[-3:], flush=True)
            del model, read, cache, asked
        if not args.skip_hf:
            model = _hf_model(shape, dtype)
            t0 = time.perf_counter()
            out = model(torch.cat((doc, question), 1), use_cache=True, logits_to_keep=1)
            greedy(model, out.past_key_values, out.logits[:, -1], args.answer)
            rows.append(("HF full attention: re-read document + question, answer", time.perf_counter() - t0))
            print(rows[-1], flush=True)
    bytes_per = torch.finfo(dtype).bits // 8
    lines = [f"# Answering a question about a {args.tokens}-token document", "",
             f"`python {' '.join(sys.argv)}` — {machine()}; {str(dtype).removeprefix('torch.')}, SmolLM2-135M "
             f"shape with random weights and tokens, block 1024, memory 3, FAM 64; question {args.question} tokens, "
             f"answer {args.answer} greedy tokens. fam's answer from the saved state equals its answer after "
             "re-reading (asserted).", "",
             "| what | seconds |", "|---|---:|"]
    lines += [f"| {name} | {v if isinstance(v, str) else f'{v:.2f}'} |" for name, v in rows]
    lines += ["", "| state | at this length | at 1M tokens |", "|---|---:|---:|"]
    for mode in ("fam", "bswa"):
        lines.append(f"| {mode} saved state (file, measured) | {sizes[mode] / 2**20:.1f} MiB | "
                     f"{sizes[mode] / 2**20:.1f} MiB (constant) |")
    lines.append(f"| HF KV cache (computed: 2 x layers x kv_heads x head_dim x tokens x {bytes_per} bytes) | "
                 f"{hf_kv_bytes(args.tokens, bytes_per) / 2**20:.0f} MiB | {hf_kv_bytes(1 << 20, bytes_per) / 2**30:.1f} GiB |")
    write_markdown(lines, args.out)


if __name__ == "__main__":
    main()
