"""`fam generate`: read a prompt of any length (a whole book) at constant memory, then stream a reply.

The prompt goes through the model's streaming state one block at a time (progress bar on
stderr); in ``bswa`` / ``fam`` mode the state and the per-chunk work have a fixed size, so the
prompt length is unbounded. The reply is produced by ``model.generate`` continuing that state and
printed token by token. CPU-sized example::

    fam convert smollm2 runs/smollm2-bswa --mode bswa --block-size 1024 --mem-segments 3
    fam generate --model runs/smollm2-bswa --prompt-file book.txt --chat --max-new-tokens 64
    fam generate --model runs/smollm2-bswa --prompt-file book.txt --save-state book.fam-state --max-new-tokens 1
    fam generate --model runs/smollm2-bswa --load-state book.fam-state --prompt-file question.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .common import add_dtype_argument


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help='a FAM folder written by `fam convert` (or "smollm2")')
    parser.add_argument("--prompt-file", required=True, help="UTF-8 text file holding the prompt ('-' reads stdin); "
                        "bytes that are not valid UTF-8 are an error naming their offset")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy decoding")
    parser.add_argument("--chunk-size", type=int, default=None, help="prompt tokens per forward (default: block_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-state", default=None, metavar="FILE",
                        help="after reading the prompt, save the model's state there (constant size in bswa / fam "
                        "mode), to continue it later with --load-state")
    parser.add_argument("--load-state", default=None, metavar="FILE",
                        help="continue a saved state: the prompt's tokens follow the ones it read")
    add_dtype_argument(parser)


def encode_prompt(tokenizer, text: str, chat: bool, continuation: bool = False) -> torch.LongTensor:
    """(1, T) token ids of the prompt, optionally inside the chat template; a ``continuation`` of a
    saved state gets no special tokens of its own (it follows the state's tokens)."""
    if chat:
        if not tokenizer.chat_template:
            raise ValueError("--chat: this model's tokenizer has no chat template")
        enc = tokenizer.apply_chat_template([{"role": "user", "content": text.strip()}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        return enc["input_ids"]
    return tokenizer(text, return_tensors="pt", add_special_tokens=not continuation).input_ids


def run(args) -> int:
    from transformers import TextStreamer

    from ..core.cache import FamCache
    from ..core.streaming import stream
    from ..hf.loading import load_model

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    if args.prompt_file == "-":
        text = sys.stdin.read()
    else:
        prompt_path = Path(args.prompt_file)
        if not prompt_path.is_file():
            raise FileNotFoundError(f"--prompt-file {prompt_path}: no such file")
        raw = prompt_path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"--prompt-file {prompt_path}: not valid UTF-8 at byte offset {err.start} "
                             f"({raw[err.start:err.start + 4]!r})") from None
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    chunk = args.chunk_size or model.config.block_size
    loaded = FamCache.load(args.load_state, model) if args.load_state else None
    ids = encode_prompt(tokenizer, text, args.chat, continuation=loaded is not None)
    if ids.shape[1] == 0:
        raise ValueError(f"--prompt-file {args.prompt_file}: no tokens")
    before = f", continuing {loaded.seen_tokens} tokens of {args.load_state}" if loaded is not None else ""
    print(f"prompt: {ids.shape[1]} tokens, mode={model.config.attention_mode}{before}", file=sys.stderr)
    # everything but the last prompt token goes through the state in chunks; generate() feeds the last one
    cache = loaded
    if ids.shape[1] > 1:
        cache = stream(model, ids[:, :-1], chunk, cache=cache, progress=True, desc="reading prompt").cache
    if args.save_state:
        # the saved state has read the whole prompt: a copy reads its last token too
        whole = stream(model, ids[:, -1:], cache=cache.copy() if cache is not None else None).cache
        size = whole.save(args.save_state, model)
        print(f"saved the state after {whole.seen_tokens} tokens to {args.save_state} ({size / 2**20:.1f} MiB)",
              file=sys.stderr)
    sample = args.temperature > 0
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tokenizer.eos_token_id
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    gen = dict(max_new_tokens=args.max_new_tokens, do_sample=sample, temperature=args.temperature if sample else None,
               top_p=None, top_k=None, eos_token_id=eos, pad_token_id=eos, streamer=streamer)
    with torch.no_grad():
        if cache is None:
            model.generate(ids, **gen)
        else:
            model.generate_from(cache, ids[:, -1:], **gen)
    return 0
