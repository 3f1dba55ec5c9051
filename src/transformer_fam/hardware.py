"""What this machine runs fast: bfloat16 only pays on CPUs with native support (AMX, AVX512-BF16).

On an AVX2-only CPU (measured here: an AMD EPYC) a bfloat16 linear layer runs 5-9x slower than
in float32 and a SmolLM2-shaped prefill 4.3x slower; on a Sapphire Rapids Xeon (AMX) bfloat16 is
~3x faster. The choice is measured, not guessed from CPU flags.
"""

from __future__ import annotations

import functools
import sys
import time

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def bf16_speedup(device: str = "cpu") -> float:
    """float32 / bfloat16 time of a linear layer (256 rows, 1024 -> 1024) on ``device`` (> 1:
    bfloat16 is faster). Measured once per process (~0.3 s on a slow CPU); accelerators count as
    fast (they are built for it)."""
    if torch.device(device).type != "cpu":
        return 2.0
    times, gen = {}, torch.Generator().manual_seed(0)  # own generator: the global RNG stays as seeded
    for dt in (torch.float32, torch.bfloat16):
        x, w = torch.randn(256, 1024, generator=gen).to(dt), torch.randn(1024, 1024, generator=gen).to(dt)
        F.linear(x, w)  # warm up (weight packing, thread pool)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            F.linear(x, w)
            best = min(best, time.perf_counter() - t0)
        times[dt] = best
    return times[torch.float32] / times[torch.bfloat16]


def slow_bf16_note(device: str = "cpu") -> str | None:
    """"bfloat16 matmuls run Nx slower ..." where bfloat16 is slower than float32 on ``device``, else None."""
    speedup = bf16_speedup(device)
    if speedup >= 1.0:
        return None
    return f"bfloat16 matmuls run {1 / speedup:.1f}x slower than float32 on this CPU (no native bfloat16)"


def resolve_dtype(requested: str, stored: torch.dtype, n_params: int,
                  device: str = "cpu") -> tuple[torch.dtype, str | None]:
    """The dtype to run a model in, and a one-line note when "auto" had to choose.

    requested: "auto" (the stored dtype, except that a bfloat16 checkpoint runs in float32 on a
    CPU where bfloat16 is slower and the float32 copy fits in half the free memory), "float32",
    "bfloat16" or "float16".
    """
    if requested != "auto":
        return getattr(torch, requested), None
    slower = slow_bf16_note(device) if stored == torch.bfloat16 else None
    if slower is None:
        return stored, None
    import psutil

    extra = 2 * n_params  # bytes added by float32
    if extra > psutil.virtual_memory().available / 2:
        return stored, f"{slower}, but float32 weights would not fit: kept bfloat16 (--dtype float32 forces it)"
    return torch.float32, f"{slower}: running in float32 (--dtype bfloat16 keeps bfloat16)"


def to_run_dtype(model, requested: str = "auto"):
    """``model`` moved to resolve_dtype's choice; the note, if any, goes to stderr as one line."""
    dtype, note = resolve_dtype(requested, model.dtype, model.num_parameters(), model.device.type)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return model.to(dtype)
