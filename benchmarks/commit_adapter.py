"""Copy a finished LoRA run into benchmarks/adapters/ as the SmolLM2 runs there were committed: the
adapter folder of RUN/final (peft's adapter_config.json, fam.json, the FAM prompt and gates in float32)
with the LoRA weights cast to bfloat16 (half the bytes; evaluations of such copies match the float32
runs' to 0.1 point, docs/smollm2_memory.md), plus the run's recipe.yaml and metrics.jsonl.

    python benchmarks/commit_adapter.py runs/r19/fama benchmarks/adapters/smollm2-r19/fama
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "adapter_model.safetensors"
COPIED = ("adapter_config.json", "fam.json", "fam_prompt.safetensors")


def commit(run: Path, dest: Path) -> None:
    adapter = run / "final" / "adapter"
    if not (adapter / WEIGHTS).is_file():
        raise SystemExit(f"commit_adapter: {adapter / WEIGHTS} not found (is {run} a finished LoRA run?)")
    dest.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(adapter / WEIGHTS))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, str(dest / WEIGHTS),
              metadata={"format": "pt"})
    for name in COPIED:
        if (adapter / name).is_file():
            shutil.copy2(adapter / name, dest / name)
    for name in ("recipe.yaml", "metrics.jsonl"):
        shutil.copy2(run / name, dest / name)
    size = sum(p.stat().st_size for p in dest.iterdir()) / 1e6
    print(f"{run} -> {dest} ({size:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training out_dir with final/adapter")
    parser.add_argument("dest", type=Path, help="the folder to write")
    args = parser.parse_args(argv)
    commit(args.run, args.dest)


if __name__ == "__main__":
    sys.exit(main())
