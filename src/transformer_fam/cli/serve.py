"""`fam serve`: an OpenAI-compatible server (FastAPI + uvicorn) with documents read once into saved
states (serving/app.py describes the endpoints).

    fam serve --model runs/s2-fam --port 8000 --state-dir runs/states
    # then, with the official client:  OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .common import add_dtype_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help='a FAM model folder, or "smollm2"')
    parser.add_argument("--name", default=None, help="the model's name in the API (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--state-dir", default="runs/states", help="where documents' saved states are kept")
    parser.add_argument("--workers", type=int, default=2, help="requests that run the model at once")
    parser.add_argument("--queue", type=int, default=8, help="requests that may wait; beyond that: 429")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="the largest max_tokens a request may ask")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    add_dtype_argument(parser)


def run(args) -> int:
    import torch
    import uvicorn

    from ..hf.loading import load_model
    from ..serving.app import create_app

    for name in ("workers", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.queue < 0 or not 0 < args.port < 65536:
        raise UserError("--queue must be >= 0 and --port in 1..65535")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    name = args.name or Path(args.model).name
    app = create_app(model, tokenizer, name, args.state_dir, args.workers, args.queue, args.max_new_tokens)
    print(f"serving {name} (mode={model.config.attention_mode}) on http://{args.host}:{args.port}/v1, "
          f"states in {args.state_dir}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
