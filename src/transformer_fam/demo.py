"""`fam demo`: a short synthetic run of the three attention modes (placeholder for the PassKey demo).

    fam demo --out runs/demo        # ~1 minute on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .config import FamConfig
from .model import FamForCausalLM


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a shorter run")
    parser.add_argument("--seed", type=int, default=0)


def copy_task(batch: int, blocks: int, block_size: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Sequences whose first block is repeated at the end: only memory can predict the copy."""
    head = torch.randint(2, vocab, (batch, block_size), generator=gen)
    filler = torch.ones(batch, (blocks - 2) * block_size, dtype=torch.long)
    return torch.cat((head, filler, head), dim=1)


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = 60 if args.quick else 300
    L, blocks, vocab = 8, 5, 32
    results = {}
    for mode in ("bswa", "fam"):
        torch.manual_seed(args.seed)
        cfg = FamConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, attention_mode=mode, block_size=L, mem_segments=1, fam_length=4)
        model = FamForCausalLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(args.seed)
        t0 = time.time()
        for step in range(steps):
            ids = copy_task(16, blocks, L, vocab, gen)
            labels = torch.full_like(ids, -100)
            labels[:, -L + 1:] = ids[:, -L + 1:]
            loss = model(ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            ids = copy_task(64, blocks, L, vocab, torch.Generator().manual_seed(123))
            pred = model(ids).logits[:, -L:-1].argmax(-1)
            acc = (pred == ids[:, -L + 1:]).float().mean().item()
        results[mode] = {"copy_accuracy": acc, "final_loss": loss.item(), "seconds": time.time() - t0}
        print(f"{mode:5s} copy accuracy {acc:.3f}  loss {loss.item():.3f}  ({time.time() - t0:.0f}s)")
        model.save_pretrained(out / mode)
    (out / "demo.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'demo.json'}")
    return 0
