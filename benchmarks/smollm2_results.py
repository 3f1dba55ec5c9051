"""Issue 13's table and plots: SmolLM2-135M-Instruct as the original model (full attention),
converted to BSWA and to FAM, untrained and after a pair of bundled recipes, on PassKey by filler
length and on held-out Milton by position. Two sets (``--set``):
- ``transfer``: block 256, 1 memory block, 16 FAM vectors (a 512-token window);
  `smollm2-bswa-transfer` / `smollm2-fam-transfer` (LoRA by attention transfer);
- ``retrieval``: block 128, no memory block, 16 FAM vectors (a 128-token window);
  `smollm2-bswa` / `smollm2-fam` (PassKey retrieval with the read / write supervision).

    python benchmarks/smollm2_results.py                       # everything missing under runs/s2, then the table
    python benchmarks/smollm2_results.py --skip-train --fam runs/x/final --bswa runs/y/final
    python benchmarks/smollm2_results.py --set retrieval --skip-train --fam runs/r13/R4/final   # no BSWA rows

Every step is a `fam` command run as a subprocess (two at a time, one thread each); a step whose
output exists is not run again, so an interrupted run continues where it stopped. Writes
OUT.json (every number), OUT.md (the tables) and OUT_passkey.png / OUT_position.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SETS = {  # shape, window, recipes (fam, bswa), defaults
    "transfer": dict(shape=(256, 1, 16), recipes=("smollm2-fam-transfer", "smollm2-bswa-transfer"), runs="runs/s2",
                     lengths="300,1100,4100", samples=6, buckets="0,512,2048,4096", out="docs/smollm2_results"),
    "retrieval": dict(shape=(128, 0, 16), recipes=("smollm2-fam", "smollm2-bswa"), runs="runs/s2r",
                      lengths="60,200,450,1000,2000", samples=20, buckets="0,128,512,2048",
                      out="docs/smollm2_retrieval"),
}


def fam(*args: str) -> list[str]:
    return [sys.executable, "-m", "transformer_fam.cli", *args]


def run_all(jobs: list[tuple[str, list[str], Path]], workers: int, log_dir: Path) -> None:
    """Run the (name, command, output) jobs whose output is missing, ``workers`` at a time, one
    thread each; each logs to LOG_DIR/name.log."""
    todo = [job for job in jobs if not job[2].exists()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def one(job):
        name, cmd, out = job
        log = log_dir / f"{name}.log"
        print("running:", " ".join(cmd[2:]), flush=True)
        with open(log, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            raise SystemExit(f"failed ({rc}): {' '.join(cmd[2:])}; see {log}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, todo))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="transfer", choices=sorted(SETS), help="the shape and recipe pair")
    p.add_argument("--runs", default=None, help="folder for the converted model, trainings and evaluations")
    p.add_argument("--fam", default=None, help="trained FAM model folder (default RUNS/fam/final)")
    p.add_argument("--bswa", default=None, help="trained BSWA model folder (default RUNS/bswa/final; with "
                                                "--skip-train and no such folder, its rows are left out)")
    p.add_argument("--skip-train", action="store_true", help="use --fam / --bswa as they are")
    p.add_argument("--fam-label", default=None, help="the trained FAM rows' name (default: the recipe's)")
    p.add_argument("--lengths", default=None, help="PassKey filler tokens (not multiples of the block)")
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--buckets", default=None)
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens of each held-out Milton text")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    preset = SETS[a.set]
    for key in ("runs", "lengths", "samples", "buckets", "out"):
        if getattr(a, key) is None:
            setattr(a, key, preset[key])
    L, m, F = preset["shape"]
    a.window = (m + 1) * L
    shape = ["--block-size", str(L), "--mem-segments", str(m), "--fam-length", str(F)]
    fam_recipe, bswa_recipe = preset["recipes"]
    fam_label = a.fam_label or fam_recipe
    runs = Path(a.runs)
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    conv = runs / "converted"
    fam_dir = Path(a.fam or runs / "fam" / "final")
    bswa_dir = Path(a.bswa or runs / "bswa" / "final")
    run_all([("convert", fam("convert", "smollm2", str(conv), "--mode", "fam", *shape), conv / "config.json")], 1,
            runs / "logs")
    if not a.skip_train:
        run_all([("train-fam", fam("train", fam_recipe, f"out_dir={fam_dir.parent}", "progress=false"),
                  fam_dir / "config.json"),
                 ("train-bswa", fam("train", bswa_recipe, f"out_dir={bswa_dir.parent}", "progress=false"),
                  bswa_dir / "config.json")], a.workers, runs / "logs")
    models = {  # row name -> (folder, passkey flags, ppl mode)
        "original (full attention)": (conv, ["--attention-mode", "full"], "full"),
        "BSWA, converted": (conv, ["--attention-mode", "bswa"], "bswa"),
        "FAM, converted": (conv, [], "fam"),
        f"BSWA + {bswa_recipe}": (bswa_dir, [], "bswa"),
        f"FAM + {fam_label}": (fam_dir, [], "fam"),
        f"FAM + {fam_label}, FAM reset every block": (fam_dir, ["--fam-reset"], "fam-reset"),
    }
    if a.skip_train and not (bswa_dir / "config.json").exists():
        del models[f"BSWA + {bswa_recipe}"]
    jobs, where = [], {}
    for i, (name, (folder, flags, mode)) in enumerate(models.items()):
        pk, pp = runs / "eval" / f"passkey-{i}", runs / "eval" / f"ppl-{i}"
        jobs.append((f"passkey-{i}", fam("eval", "passkey", "--model", str(folder), "--lengths", a.lengths, "--samples",
                         str(a.samples), "--threads", "1", "--out", str(pk), *flags), pk / "passkey.json"))
        jobs.append((f"ppl-{i}", fam("eval", "ppl", "--model", str(folder), "--data", "milton", "--modes", mode, "--buckets",
                         a.buckets, "--max-tokens", str(a.max_tokens), "--threads", "1", "--out", str(pp)),
                     pp / "ppl.json"))
        where[name] = (pk / "passkey.json", pp / "ppl.json", mode)
    run_all(jobs, a.workers, runs / "logs")
    results = {}
    for name, (pk, pp, mode) in where.items():
        passkey = json.loads(pk.read_text())["accuracy"]
        ppl = json.loads(pp.read_text())
        results[name] = {"passkey": passkey, "ppl": ppl["modes"][mode]}
    write_outputs(results, a)
    return 0


def write_outputs(results: dict, a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "results": results}, indent=1))
    lengths = a.lengths.split(",")
    buckets = list(next(iter(results.values()))["ppl"])
    lines = ["| model | " + " | ".join(f"PassKey @{n}" for n in lengths) + " | "
             + " | ".join(f"acc {b}" for b in buckets) + " | " + " | ".join(f"loss {b}" for b in buckets) + " |",
             "|---|" + "---:|" * (len(lengths) + 2 * len(buckets))]
    for name, r in results.items():
        pk = [f"{100 * r['passkey'][n]:.0f}%" for n in lengths]
        acc = [f"{100 * r['ppl'][b]['accuracy']:.1f}%" for b in buckets]
        loss = [f"{r['ppl'][b]['loss']:.3f}" for b in buckets]
        lines.append(f"| {name} | " + " | ".join(pk + acc + loss) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, r in results.items():
        ax.plot([int(n) for n in lengths], [100 * r["passkey"][n] for n in lengths], marker="o", label=name)
    ax.set(xscale="log", xlabel="filler tokens", ylabel="PassKey accuracy (%)", ylim=(-5, 105),
           title=f"SmolLM2-135M, window {a.window} ({a.samples} keys per length)")
    ax.axvline(a.window, color="gray", ls=":")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(out) + "_passkey.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, r in results.items():
        ax.plot(range(len(buckets)), [100 * r["ppl"][b]["accuracy"] for b in buckets], marker="o", label=name)
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set(xlabel="token position", ylabel="next-token accuracy (%)",
           title=f"held-out Milton (7 texts), by position; window {a.window}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(out) + "_position.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
