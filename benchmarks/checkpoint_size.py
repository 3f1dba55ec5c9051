"""Size on disk of a training checkpoint of the SmolLM2 LoRA recipes (README, "Resume"): one optimiser step
of `fam train RECIPE` (short rows, so it takes seconds), then the bytes of each file of the checkpoint it
wrote and of the final adapter folder. With `finetune: lora` the weights file holds only the trained
parameters (LoRA, FAM prompt, gates) and the frozen weights' sha256.

    python benchmarks/checkpoint_size.py --out docs/checkpoint_size.json      # smollm2-bswa and smollm2-fam
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ARGS = ["max_steps=1", "save_every=1", "batch_size=1", "seq_len=256", "grad_accum=1", "bf16=false", "device=cpu",
        "progress=false", "tensorboard=false"]


def sizes(folder: Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def measure(recipe: str, work: Path) -> dict:
    out = work / recipe
    cmd = [sys.executable, "-m", "transformer_fam.cli", "train", recipe, f"out_dir={out}", *ARGS]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if run.returncode:
        raise SystemExit(f"checkpoint_size: `{' '.join(cmd)}` failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    ckpt = sorted((out / "checkpoints").glob("step-*"))[-1]
    files = sizes(ckpt)
    adapter = sizes(out / "final" / "adapter")
    return {"command": " ".join(["fam train", recipe, *ARGS]), "checkpoint_files": files,
            "checkpoint_mb": round(sum(files.values()) / 1e6, 1),
            "weights_mb": round(files["model.safetensors"] / 1e6, 1),
            "optimizer_mb": round(files.get("optimizer.pt", 0) / 1e6, 1),
            "final_adapter_mb": round(sum(adapter.values()) / 1e6, 1),
            "full_model_mb": round((out / "final" / "model.safetensors").stat().st_size / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["smollm2-bswa", "smollm2-fam"])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                  "recipes": {r: measure(r, Path(tmp)) for r in a.recipes}}
    for r, row in report["recipes"].items():
        print(f"{r}: checkpoint {row['checkpoint_mb']} MB (weights {row['weights_mb']}, optimizer "
              f"{row['optimizer_mb']}); final adapter {row['final_adapter_mb']} MB; merged model {row['full_model_mb']} MB")
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
