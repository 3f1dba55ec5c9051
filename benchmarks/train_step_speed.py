"""Seconds per training step of one recipe in several variants, each run in-process for a few steps
from the same start (``fam train``'s Trainer; the median of the steps after --warmup is reported).
The default compares R16 / R17's SmolLM2 recipe in BSWA mode, in fam mode, and in fam mode with
``compile_fam_scan`` (the FAM update through torch.compile):

    python benchmarks/train_step_speed.py --device cuda --out docs/train_step_speed_h200.json
    python benchmarks/train_step_speed.py --device cpu --set batch_size=1 --steps 4 --out /tmp/s.json

Each variant is NAME=recipe=RECIPE[,KEY=VALUE...]: a bundled recipe or YAML, the R16 keys below (and the
FAM arms' keys when its attention mode is fam), --set, then its own overrides.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from transformer_fam.training.recipe import load_recipe, parse_overrides
from transformer_fam.training.trainer import Trainer

COMMON = ["retrieval_curriculum=16:0", "retrieval_p_boundary=0.3", "retrieval_text=shakespeare", "grad_accum=2",
          "batch_size=8", "seq_len=1024", "distill_weight=3.0", "activation_checkpointing=false", "progress=false",
          "tensorboard=false"]  # benchmarks/smollm2_gpu_r16.sh / r17.sh, both arms
FAMK = ["read_weight=0", "write_weight=0", "probe_weight=0", "fam_write_gate=true"]  # their FAM arms
VARIANTS = ["bswa=recipe=smollm2-bswa", "fam=recipe=smollm2-fam", "fam-compiled=recipe=smollm2-fam,compile_fam_scan=true"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", default=VARIANTS, metavar="NAME=recipe=RECIPE[,KEY=VALUE]")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every variant")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", default="auto", choices=("auto", "true", "false"),
                    help="auto: bfloat16 autocast on cuda only")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the median (the compiled variant compiles)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bf16 = a.device == "cuda" if a.bf16 == "auto" else a.bf16 == "true"
    report = {"common": COMMON + a.set, "fam_arms": FAMK, "device": a.device, "bf16": bf16, "steps": a.steps,
              "warmup": a.warmup, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None, "variants": {}}
    for item in a.variants:
        name, _, spec = item.partition("=")
        own = parse_overrides(spec.split(",")) if spec else {}
        recipe_name = own.pop("recipe", "smollm2-fam")
        with tempfile.TemporaryDirectory() as tmp:
            fixed = [f"device={a.device}", f"bf16={str(bf16).lower()}", f"max_steps={a.steps}",
                     f"save_every={a.steps}", f"out_dir={tmp}/run"]
            recipe = load_recipe(recipe_name, {**parse_overrides(COMMON + a.set + fixed), **own})
            if recipe.attention_mode == "fam":
                recipe = load_recipe(recipe_name, {**parse_overrides(COMMON + FAMK + a.set + fixed), **own})
            assert Trainer(recipe).run() == 0
            rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        times = [r["step_s"] for r in rows]
        measured = times[a.warmup:] or times
        report["variants"][name] = {"overrides": spec, "step_s_median": round(statistics.median(measured), 4),
                                    "step_s": [round(t, 4) for t in times], "loss": [round(r["loss"], 5) for r in rows]}
        print(name, report["variants"][name]["step_s_median"], "s/step", flush=True)
    base = report["variants"].get("fam", {}).get("step_s_median")
    for name, v in report["variants"].items():
        if base:
            v["relative_to_fam"] = round(v["step_s_median"] / base, 3)
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
