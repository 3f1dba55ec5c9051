"""Paired comparison of models (or modes) on the same texts: per-token accuracy and loss beyond a
position, as the difference to a baseline, with a standard error over blocks (the texts' positions
cut into --unit-token pieces; tokens inside one piece are not independent, pieces roughly are).

    python benchmarks/paired_compare.py --data milton --from 128 --out docs/paired_r16_milton.json \
        twin=benchmarks/adapters/smollm2-r16/bswa:bswa \
        fama-o5=benchmarks/adapters/smollm2-r16/fama:fam@17.3,18.6,4.4 \
        fama-bswa=benchmarks/adapters/smollm2-r16/fama:bswa

Each NAME=MODEL:MODE[@READ_HEADS][+OPTION] is evaluated once (streamed, as `fam eval ppl`); the first
is the baseline. +OPTION switches on a FAM option read at run time (+fam_skip_initial_read: O7,
+fam_read_shift: O6) on that model only. Reported per model: mean accuracy (percent) and loss (nats)
at positions >= --from, and the mean difference to the baseline with its standard error. With --buckets 0,128,512,2048 also
per position bucket (the means equal `fam eval ppl --buckets`'s; a bucket's last piece may be short).
--pair A:B (repeatable) also reports A minus B on the same pieces, e.g. a FAM model against its own
reset (`--pair fama:fama-reset`), with the numbers a second run with B as the baseline would give.
--documents N cuts each text (its first --max-tokens) into independent documents of N tokens, each
read from a fresh state (a text's short tail is dropped); each document is one piece and --from
defaults to 0. With N = the attention window every prediction is inside the window, so the
in-window comparison has as many pieces as the texts have windows, not one per text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from transformer_fam.cli.common import add_device_argument, resolve_device, set_mem_segments
from transformer_fam.core.config import parse_read_heads
from transformer_fam.evaluation.ablation import EVAL_MODES, load_in_mode
from transformer_fam.evaluation.perplexity import load_texts, make_buckets, token_metrics


RUN_TIME_OPTIONS = ("fam_read_shift", "fam_skip_initial_read")  # boolean FamConfig options read at run time


def per_token(spec: str, data: str, max_tokens: int, device: str = "cpu", documents: int | None = None,
              mem_segments: int | None = None):
    """[(loss, correct)] per predicted token, one pair of tensors per text (per document of
    ``documents`` tokens when given), for MODEL:MODE[@HEADS]; ``mem_segments`` (bswa / fam modes) replaces
    the saved number of memory blocks (no weights change: the window becomes (m + 1) blocks)."""
    model_path, _, rest = spec.rpartition(":")
    rest, *options = rest.split("+")
    mode, _, heads = rest.partition("@")
    if not model_path or mode not in EVAL_MODES:
        raise SystemExit(f"{spec}: give MODEL:MODE[@READ_HEADS][+OPTION], MODE one of {', '.join(EVAL_MODES)}")
    model, tokenizer = load_in_mode(model_path, mode, "float32", device)
    if heads:
        model.config.fam_read_heads = parse_read_heads(heads)
    for option in options:  # a run-time FAM option switched on, e.g. +fam_skip_initial_read (O7)
        if option not in RUN_TIME_OPTIONS or not mode.startswith("fam"):
            raise SystemExit(f"{spec}: +{option}: give one of {', '.join(RUN_TIME_OPTIONS)}, in a fam mode")
        setattr(model.config, option, True)
    if mode != "full":  # full attention has no blocks
        set_mem_segments(model, "--mem-segments", mem_segments)
    model.config._validate()
    chunk = 4 * model.config.block_size
    out = []
    for _, ids in load_texts(data, tokenizer):
        ids = ids[:max_tokens]
        pieces = [ids] if documents is None else [ids[i: i + documents]
                                                  for i in range(0, len(ids) - documents + 1, documents)]
        for piece in pieces:
            loss, ok = token_metrics(model, piece, chunk)
            out.append((loss, ok.float()))  # token_metrics returns them on the CPU
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", metavar="NAME=MODEL:MODE[@READ_HEADS][+OPTION]")
    ap.add_argument("--data", default="milton")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--from", dest="start", type=int, help="first target position counted (128; 0 with --documents)")
    ap.add_argument("--unit-tokens", type=int, help="tokens per piece for the standard error (128; with "
                    "--documents N, N - 1: one document)")
    ap.add_argument("--documents", type=int, metavar="N",
                    help="cut each text into independent documents of N tokens, each read from a fresh state")
    ap.add_argument("--buckets", help="position bucket edges, e.g. 0,128,512,2048: also report each bucket")
    ap.add_argument("--pair", action="append", default=[], metavar="A:B",
                    help="also report model A minus model B (both named above), paired on the same pieces")
    ap.add_argument("--mem-segments", type=int, metavar="M",
                    help="run every bswa / fam model with M memory blocks instead of its saved number (same "
                    "weights; the window becomes (M + 1) blocks)")
    ap.add_argument("--threads", type=int, default=1)
    add_device_argument(ap)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.mem_segments is not None and a.mem_segments < 0:
        raise SystemExit(f"--mem-segments {a.mem_segments}: give a number of memory blocks >= 0")
    if a.documents is not None and a.documents < 2:
        raise SystemExit(f"--documents {a.documents}: a document needs at least 2 tokens (one prediction)")
    if a.start is None:
        a.start = 0 if a.documents else 128
    if a.unit_tokens is None:
        a.unit_tokens = a.documents - 1 if a.documents else 128
    if a.documents and a.start >= a.documents:
        raise SystemExit(f"--from {a.start}: documents of {a.documents} tokens (--documents) have no target "
                         f"position >= {a.start}; give --from 0")
    torch.set_num_threads(a.threads)
    buckets = make_buckets([int(e) for e in a.buckets.split(",")]) if a.buckets else ()
    device = resolve_device(a.device)
    names = [item.partition("=")[0] for item in a.models]
    for item in a.models:
        if "=" not in item:
            raise SystemExit(f"{item}: give NAME=MODEL:MODE[@READ_HEADS][+OPTION]")
    pairs = [tuple(p.split(":")) for p in a.pair]
    for p, pair in zip(a.pair, pairs):
        if len(pair) != 2 or not set(pair) <= set(names) or pair[0] == pair[1]:
            raise SystemExit(f"--pair {p}: give A:B, two different model names of {', '.join(names)}")
    results = {}
    for item in a.models:
        name, _, spec = item.partition("=")
        results[name] = per_token(spec, a.data, a.max_tokens, device, a.documents, a.mem_segments)
        print(f"{name}: done", flush=True)

    def piece_sums(name: str, k: int, lo: int, hi: int | None, whole: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums, token counts) of metric k per piece of --unit-tokens target positions lo <= t < hi, all
        texts; whole: only whole pieces, else a text's last piece may be short."""
        sums, counts = [], []
        for metric in (r[k] for r in results[name]):
            kept = metric[max(lo, 1) - 1: None if hi is None else hi - 1]  # target position t is index t-1
            if whole:
                kept = kept[: len(kept) // a.unit_tokens * a.unit_tokens]
            for part in kept.split(a.unit_tokens):
                sums.append(part.double().sum())
                counts.append(len(part))
        return torch.stack(sums), torch.tensor(counts, dtype=torch.float64)

    def summary(name: str, lo: int, hi: int | None, whole: bool, against: str | None = None) -> dict:
        """Mean accuracy (percent) and loss over the positions; against the baseline (or `against`), the
        token-weighted mean of the per-piece differences and its standard error (pieces taken as
        independent)."""
        ref = against or base
        row = {}
        for k, metric, scale in ((1, "accuracy", 100.0), (0, "loss", 1.0)):
            sums, n = piece_sums(name, k, lo, hi, whole)
            row[metric] = round(scale * (sums.sum() / n.sum()).item(), 4)
            if name != ref:
                d = scale * (sums - piece_sums(ref, k, lo, hi, whole)[0]) / n
                w = n / n.sum()
                mean = (w * d).sum()
                se = ((w ** 2 * (d - mean) ** 2).sum() * len(d) / max(len(d) - 1, 1)).sqrt()
                row[f"{metric}_minus_{ref}"] = round(mean.item(), 4)
                row[f"{metric}_se"] = round(se.item(), 4)
        row["tokens"], row["pieces"] = int(n.sum().item()), len(n)
        return row

    base = names[0]
    report = {"data": a.data, "max_tokens": a.max_tokens, "documents": a.documents, "from": a.start,
              "unit_tokens": a.unit_tokens, "mem_segments": a.mem_segments,
              "models": dict(zip(names, a.models)), "baseline": base, "device": str(device), "results": {}}
    if buckets:
        report["buckets"] = {}
    for name in names:
        report["results"][name] = summary(name, a.start, None, whole=True)
        print(name, report["results"][name])
        for lo, hi, label in buckets:
            report["buckets"].setdefault(label, {})[name] = summary(name, lo, hi, whole=False)
    if pairs:  # "A:B" -> A's summary against B, over all positions from --from and per bucket
        report["pairs"] = {f"{x}:{y}": summary(x, a.start, None, whole=True, against=y) for x, y in pairs}
        for key, row in report["pairs"].items():
            print(key, row)
        if buckets:
            report["pair_buckets"] = {label: {f"{x}:{y}": summary(x, lo, hi, whole=False, against=y) for x, y in pairs}
                                      for lo, hi, label in buckets}
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
