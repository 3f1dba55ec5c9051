"""`fam generate`: read a prompt of any length (a whole book) at constant memory, then stream a reply.

The prompt goes through the model's streaming state one block at a time (progress bar on
stderr); in ``bswa`` / ``fam`` mode the state and the per-chunk work have a fixed size, so the
prompt length is unbounded. The reply is produced by ``model.generate`` continuing that state and
printed token by token. CPU-sized example::

    fam convert smollm2 runs/smollm2-bswa --mode bswa --block-size 1024 --mem-segments 3
    fam generate --model runs/smollm2-bswa --prompt-file book.txt --chat --max-new-tokens 64
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
    add_dtype_argument(parser)


def encode_prompt(tokenizer, text: str, chat: bool) -> torch.LongTensor:
    """(1, T) token ids of the prompt, optionally inside the chat template."""
    if chat:
        if not tokenizer.chat_template:
            raise ValueError("--chat: this model's tokenizer has no chat template")
        enc = tokenizer.apply_chat_template([{"role": "user", "content": text.strip()}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        return enc["input_ids"]
    return tokenizer(text, return_tensors="pt").input_ids


def run(args) -> int:
    from transformers import TextStreamer

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
    ids = encode_prompt(tokenizer, text, args.chat)
    print(f"prompt: {ids.shape[1]} tokens, mode={model.config.attention_mode}", file=sys.stderr)
    # everything but the last prompt token goes through the state in chunks; generate() feeds the last one
    cache = None
    if ids.shape[1] > 1:
        cache = stream(model, ids[:, :-1], args.chunk_size or model.config.block_size, progress=True,
                       desc="reading prompt").cache
    sample = args.temperature > 0
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tokenizer.eos_token_id
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        model.generate(ids, past_key_values=cache, max_new_tokens=args.max_new_tokens, do_sample=sample,
                       temperature=args.temperature if sample else None, top_p=None, top_k=None,
                       eos_token_id=eos, pad_token_id=eos, streamer=streamer)
    return 0
