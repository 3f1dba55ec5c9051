"""Gather the outputs of `fam eval passkey` and `fam eval ppl` into one results file (percent).

    python benchmarks/gather_evals.py --out docs/smollm2_o5.json --meta machine="2-core Xeon" \
        --row "FAM + R11" runs/r11e/pk/passkey.json runs/r11e/pk-long/passkey.json runs/r11e/ppl/ppl.json:fam \
        --row "FAM + R11, FAM reset" runs/r11e/pk-reset/passkey.json runs/r11e/ppl/ppl.json:fam-reset

Each ``--row LABEL FILE...`` merges the PassKey accuracy by filler length of every passkey.json
(``accuracy``; ``accuracy_by_depth`` goes under ``passkey_depth``) and the position buckets of a
ppl.json's mode (``ppl.json:MODE``; the file's only mode when none is named) under the name of its ``--data`` (``milton``).
The command that wrote each file is the source: the output records which files it read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _pct(x: float) -> float:
    return round(100 * x, 2)


def gather_row(files: list[str]) -> dict:
    row: dict = {"sources": files}
    for spec in files:
        path, mode = spec, ""
        head, sep, tail = spec.rpartition(":")
        if sep and tail in ("full", "bswa", "fam", "fam-reset"):
            path, mode = head, tail
        record = json.loads(Path(path).read_text())
        if "modes" in record:  # ppl.json
            modes = record["modes"]
            if not mode:
                if len(modes) != 1:
                    raise SystemExit(f"{path}: holds modes {', '.join(modes)}; name one as {path}:MODE")
                mode = next(iter(modes))
            if mode not in modes:
                raise SystemExit(f"{path}: no mode {mode!r} (it holds {', '.join(modes)})")
            data = Path(str(record.get("data") or "milton")).name  # "milton", or the text folder's name
            row[data] = {b: {"accuracy": _pct(v["accuracy"]), "loss": round(v["loss"], 4), "tokens": v["tokens"]}
                             for b, v in modes[mode].items()}
            if record.get("fam_read_heads") is not None:
                row["fam_read_heads"] = record["fam_read_heads"]
        elif "accuracy" in record:
            row.setdefault("passkey", {}).update({k: _pct(v) for k, v in record["accuracy"].items()})
        elif "accuracy_by_depth" in record:
            row.setdefault("passkey_depth", {}).update(
                {d: {k: _pct(v) for k, v in by_len.items()} for d, by_len in record["accuracy_by_depth"].items()})
        else:
            raise SystemExit(f"{path}: neither a passkey.json nor a ppl.json")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--meta", nargs="*", default=[], help="KEY=VALUE pairs recorded as they are")
    parser.add_argument("--row", nargs="+", action="append", required=True, metavar="LABEL FILE",
                        help="a row's label, then its passkey.json / ppl.json[:MODE] files")
    args = parser.parse_args(argv)
    out = {"units": "percent"}
    for item in args.meta:
        key, _, value = item.partition("=")
        out[key] = value
    for label, *files in args.row:
        if not files:
            raise SystemExit(f"--row {label!r}: give at least one file")
        out[label] = gather_row(files)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} ({len(args.row)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
