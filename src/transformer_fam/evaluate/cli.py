"""`fam eval`: evaluation subcommands (passkey, ppl), each backed by its module's add_arguments / run."""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = {
    "passkey": ("transformer_fam.evaluate.passkey", "PassKey retrieval accuracy by filler length (and key depth)"),
    "ppl": ("transformer_fam.evaluate.perplexity", "next-token loss / accuracy by position, comparing attention modes"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="TASK", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sp)
        sp.set_defaults(_eval_module=module)


def run(args) -> int:
    return importlib.import_module(args._eval_module).run(args)
