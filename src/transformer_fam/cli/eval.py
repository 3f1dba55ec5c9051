"""`fam eval passkey|ppl`: PassKey retrieval by filler length (and depth), next-token loss by position.

    fam eval passkey --model runs/demo/fam --lengths 0,512,8192 --samples 50 [--depths 0,0.5,1]
    fam eval ppl --model DIR --data book.txt --modes full,bswa,fam --buckets 0,512,2048,8192
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..errors import UserError
from .common import (MEM_SEGMENTS_HELP, READ_SHIFT_HELP, SKIP_INITIAL_HELP, add_device_argument, add_dtype_argument,
                     float_list, int_list, read_heads_argument, resolve_device, restrict_fam_reads, set_fam_switch,
                     set_mem_segments)

READ_HEADS_HELP = ("option O5 (not the paper): only these query heads read the FAM, LAYER.HEAD comma separated "
                   "(e.g. 17.3,18.6), the rest attend as in BSWA; all: every head (default: the model's own)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="TASK", required=True)
    pk = sub.add_parser("passkey", help="PassKey retrieval accuracy by filler length (and key depth)",
                        description="PassKey retrieval accuracy by filler length (and key depth)")
    pk.add_argument("--model", required=True, help='model folder (save_pretrained + tokenizer), or "smollm2"')
    pk.add_argument("--lengths", default="0,64,256,1024,4096", help="filler lengths in tokens, comma separated")
    pk.add_argument("--depths", default=None, help="key depths in [0,1], comma separated (heat map)")
    pk.add_argument("--samples", type=int, default=50, help="prompts per (length, depth)")
    pk.add_argument("--jitter", type=int, default=0, metavar="N",
                    help="each prompt's filler is the length plus a random 0 .. N-1 tokens; N = the block size "
                    "scores every alignment of the answer in a block (default 0: exactly the length)")
    pk.add_argument("--seed", type=int, default=0)
    pk.add_argument("--batch-size", type=int, default=25)
    pk.add_argument("--chunk-tokens", type=int, default=None, help="tokens per streamed call (default 16 blocks)")
    pk.add_argument("--attention-mode", default=None, choices=("full", "bswa", "fam"),
                    help="reload the weights in another mode")
    pk.add_argument("--fam-reset", action="store_true",
                    help="ablation: every block reads the initial FAM instead of the previous block's (is the "
                    "memory used?)")
    pk.add_argument("--fam-read-heads", default=None, metavar="HEADS", help=READ_HEADS_HELP)
    pk.add_argument("--fam-read-shift", default=None, choices=("on", "off"), help=READ_SHIFT_HELP)
    pk.add_argument("--fam-skip-initial-read", default=None, choices=("on", "off"), help=SKIP_INITIAL_HELP)
    pk.add_argument("--mem-segments", type=int, default=None, metavar="M", help=MEM_SEGMENTS_HELP)
    pk.add_argument("--out", default=None, help="output folder for passkey.json / passkey.png (default: the model folder)")
    pk.add_argument("--threads", type=int, default=None, help="torch threads")
    add_dtype_argument(pk)
    add_device_argument(pk)
    pk.set_defaults(_eval=run_passkey)
    ppl = sub.add_parser("ppl", help="next-token loss / accuracy by position, comparing attention modes",
                         description="next-token loss / accuracy by position, comparing attention modes")
    ppl.add_argument("--model", required=True, help='model folder (save_pretrained + tokenizer), or "smollm2"')
    ppl.add_argument("--data", required=True,
                     help="a text file, a folder of .txt files, or passkey:N (one PassKey prompt with N filler tokens)")
    ppl.add_argument("--modes", default="full,bswa,fam",
                     help="attention modes to compare, comma separated; fam-reset is fam with the FAM reset to its "
                     "initial value at every block (the ablation)")
    ppl.add_argument("--buckets", default="0,4096,16384,65536",
                     help="position bucket edges, comma separated, starting at 0 (the last bucket is open)")
    ppl.add_argument("--max-tokens", type=int, default=None, help="cut each text after this many tokens")
    ppl.add_argument("--chunk-tokens", type=int, default=None, help="tokens per streamed call (default 4 blocks)")
    ppl.add_argument("--fam-read-heads", default=None, metavar="HEADS",
                     help=READ_HEADS_HELP + "; applies to the fam and fam-reset modes")
    ppl.add_argument("--fam-read-shift", default=None, choices=("on", "off"),
                     help=READ_SHIFT_HELP + "; applies to the fam and fam-reset modes")
    ppl.add_argument("--fam-skip-initial-read", default=None, choices=("on", "off"),
                     help=SKIP_INITIAL_HELP + "; applies to the fam and fam-reset modes")
    ppl.add_argument("--mem-segments", type=int, default=None, metavar="M",
                     help=MEM_SEGMENTS_HELP + "; applies to the bswa, fam and fam-reset modes")
    ppl.add_argument("--out", default=None, help="output folder for ppl.json / ppl.png (default: the model folder)")
    ppl.add_argument("--threads", type=int, default=None)
    add_dtype_argument(ppl)
    add_device_argument(ppl)
    ppl.set_defaults(_eval=run_ppl)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    return args._eval(args)


def _out_dir(args) -> Path:
    if args.out:
        out = Path(args.out)
    elif Path(args.model).is_dir():
        out = Path(args.model)
    elif args.model == "smollm2":
        raise UserError("--model smollm2: pass --out for the results (there is no model folder to write into)")
    else:
        raise UserError(f"--model {args.model}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_passkey(args) -> int:
    from ..evaluation.passkey import evaluate_passkey, format_table
    from ..hf.loading import load_model
    from ..plots import plot_accuracy, plot_heatmap

    lengths = int_list("--lengths", args.lengths)
    depths = float_list("--depths", args.depths, 0.0, 1.0) if args.depths else None
    if args.samples < 1 or args.batch_size < 1:
        raise UserError("--samples / --batch-size: must be >= 1")
    if args.jitter < 0:
        raise UserError(f"--jitter {args.jitter}: must be >= 0 (extra filler tokens drawn per prompt)")
    heads = read_heads_argument("--fam-read-heads", args.fam_read_heads)
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.model, args.attention_mode, args.dtype, device)
    restrict_fam_reads(model, "--fam-read-heads", heads)
    set_fam_switch(model, "--fam-read-shift", args.fam_read_shift, "fam_read_shift")
    set_fam_switch(model, "--fam-skip-initial-read", args.fam_skip_initial_read, "fam_skip_initial_read")
    set_mem_segments(model, "--mem-segments", args.mem_segments)
    if args.fam_reset:
        from ..evaluation.ablation import FamResetEachBlock

        try:
            model = FamResetEachBlock(model)
        except ValueError as err:
            raise UserError(f"--fam-reset: {err}") from None
    out = _out_dir(args)
    name = Path(args.model).name + (f" ({args.attention_mode})" if args.attention_mode else "") + \
        (" FAM reset each block" if args.fam_reset else "")
    t0 = time.time()
    results = evaluate_passkey(model, tokenizer, lengths, depths, args.samples, args.seed, args.batch_size,
                               args.chunk_tokens, jitter=args.jitter)
    if depths is None:
        print(format_table({name: results}))
        plot_accuracy({name: results}, out / "passkey.png", f"PassKey: {name}")
    else:
        print(format_table({f"depth {d}": row for d, row in results.items()}))
        plot_heatmap(results, out / "passkey.png", f"PassKey: {name}")
    record = {"model": str(args.model), "attention_mode": model.config.attention_mode, "fam_reset": args.fam_reset,
              "fam_read_heads": model.config.fam_read_heads, "fam_read_shift": model.config.fam_read_shift,
              "fam_skip_initial_read": model.config.fam_skip_initial_read,
              "mem_segments": model.config.mem_segments, "jitter": args.jitter,
              "samples": args.samples, "device": device,
              "seed": args.seed, "seconds": round(time.time() - t0, 1),
              "accuracy" if depths is None else "accuracy_by_depth": results}
    (out / "passkey.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'passkey.json'} and {out / 'passkey.png'}")
    return 0


def run_ppl(args) -> int:
    from ..evaluation.ablation import EVAL_MODES, load_in_mode
    from ..evaluation.perplexity import evaluate_texts, format_ppl_table, load_texts, make_buckets
    from ..plots import plot_ppl

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in EVAL_MODES]
    if not modes or bad:
        raise UserError(f"--modes {args.modes}: choose from {', '.join(EVAL_MODES)}")
    try:
        buckets = make_buckets(int_list("--buckets", args.buckets))
    except ValueError as err:
        raise UserError(f"--buckets {args.buckets}: {err}") from None
    heads = read_heads_argument("--fam-read-heads", args.fam_read_heads)
    device = resolve_device(args.device)
    out = _out_dir(args)
    results, t0, texts, read_heads_used, shift_used, skip_used = {}, time.time(), None, None, None, None
    mem_used = None
    for mode in modes:
        model, tokenizer = load_in_mode(args.model, mode, args.dtype, device)
        if mode != "bswa" and mode != "full":  # the options act on the config the run reads (also under reset)
            restrict_fam_reads(model, "--fam-read-heads", heads)
            set_fam_switch(model, "--fam-read-shift", args.fam_read_shift, "fam_read_shift")
            set_fam_switch(model, "--fam-skip-initial-read", args.fam_skip_initial_read, "fam_skip_initial_read")
            read_heads_used, shift_used = model.config.fam_read_heads, model.config.fam_read_shift
            skip_used = model.config.fam_skip_initial_read
        if mode != "full":
            set_mem_segments(model, "--mem-segments", args.mem_segments)
            mem_used = model.config.mem_segments
        if texts is None:
            texts = load_texts(args.data, tokenizer)
            if args.max_tokens:
                texts = [(n, ids[: args.max_tokens]) for n, ids in texts]
        cfg = model.config
        chunk = args.chunk_tokens or (4 * cfg.block_size if mode != "full" else 2048)
        results[mode] = evaluate_texts(model, texts, chunk, buckets=buckets)
    print(format_ppl_table(results))
    plot_ppl(results, out / "ppl.png", f"{Path(args.model).name} on {Path(args.data).name}")
    record = {"model": str(args.model), "data": args.data, "fam_read_heads": read_heads_used,
              "fam_read_shift": shift_used, "fam_skip_initial_read": skip_used, "mem_segments": mem_used,
              "texts": len(texts), "buckets": [b[2] for b in buckets],
              "tokens": sum(len(ids) for _, ids in texts), "device": device, "seconds": round(time.time() - t0, 1), "modes": results}
    (out / "ppl.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'ppl.json'} and {out / 'ppl.png'}")
    return 0
