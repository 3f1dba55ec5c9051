"""`fam bench` (cli/bench.py): side-by-side speed and memory of full / bswa / fam and Hugging Face Llama.

Every measurement runs in a fresh subprocess so that its peak memory (ru_maxrss) is its own;
ratios come from one run on one machine. CPU-sized example (about an hour on 2 cores):

    fam bench                      # writes docs/bench.json, docs/bench.png, docs/benchmarks.md
    fam bench --out /tmp/b --lengths 2048 8192 --dtypes float32 --skip-train   # a few minutes
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
                     rope_theta=100000.0, tie_word_embeddings=True, max_position_embeddings=8192)


# ------------------------------------------------------------------------------------ one run
def _fam_model(mode: str, args, dtype):
    from ..core.config import FamConfig
    from ..core.model import FamForCausalLM

    torch.manual_seed(0)
    cfg = FamConfig(**SMOLLM2_SHAPE, attention_mode=mode, block_size=args.block_size,
                    mem_segments=args.mem_segments, fam_length=args.fam_length)
    return FamForCausalLM(cfg).to(dtype).eval()


def _hf_model(args, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(SMOLLM2_SHAPE)
    theta = shape.pop("rope_theta")
    cfg = LlamaConfig(**shape, rope_parameters={"rope_type": "default", "rope_theta": theta})
    cfg.max_position_embeddings = 1 << 21
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _threads(spec: dict) -> None:
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(spec: dict) -> dict:
    """Prefill T tokens, then decode a few; returns timings and peak memory (this process)."""
    from ..core.cache import FamCache
    from ..core.streaming import stream

    args = SimpleNamespace(**spec)
    _threads(spec)
    dtype = getattr(torch, spec["dtype"])
    impl, T = spec["impl"], spec["tokens"]
    model = _hf_model(args, dtype) if impl == "hf" else _fam_model(impl, args, dtype)
    ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (1, T + spec["decode_tokens"]),
                        generator=torch.Generator().manual_seed(1))
    base_rss = _rss_mb()
    chunk = spec.get("chunk") or T
    with torch.no_grad():
        t0 = time.perf_counter()
        if impl == "hf":
            out = model(ids[:, :T], use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
        else:
            cache = stream(model, ids[:, :T], chunk,
                           cache=FamCache(model.config, position_offset=spec.get("position_offset", 0))).cache
        prefill_s = time.perf_counter() - t0
        prefill_rss = _rss_mb()
        step_s = []
        for i in range(spec["decode_tokens"]):
            tok = ids[:, T + i: T + i + 1]
            t1 = time.perf_counter()
            if impl == "hf":
                out = model(tok, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
            else:
                out = model(tok, past_key_values=cache, use_cache=True)
            step_s.append(time.perf_counter() - t1)
    return {**spec, "prefill_s": prefill_s, "prefill_tok_s": T / prefill_s,
            "decode_ms": 1000 * statistics.median(step_s[1:] or step_s),
            "base_rss_mb": base_rss, "peak_rss_mb": max(prefill_rss, _rss_mb())}


def measure_train(spec: dict) -> dict:
    """Forward+backward tokens/s: the layer-wise schedule vs the naive block-by-block loop."""
    from ..core.cache import FamCache

    args = SimpleNamespace(**spec)
    _threads(spec)
    from ..training.setup import set_activation_checkpointing

    model = _fam_model("fam", args, torch.float32).train()
    set_activation_checkpointing(model, True)  # both schedules; without it 8k needs ~20 GB here
    T = spec["tokens"]
    ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (1, T), generator=torch.Generator().manual_seed(1))

    def layerwise():
        model(ids, labels=ids).loss.backward()

    def naive():  # for each block: for each layer: Algorithm 2 (the streaming path, graph kept)
        cache, losses = FamCache(model.config), []
        for a in range(0, T, args.block_size):
            chunk = ids[:, a: a + args.block_size]
            out = model(chunk, labels=chunk, past_key_values=cache, use_cache=True)
            losses.append(out.loss)
        torch.stack(losses).mean().backward()

    fn = layerwise if spec["schedule"] == "layerwise" else naive
    fn()  # warm-up
    times = []
    for _ in range(1 if T > 4096 else 2):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    s = min(times)
    return {**spec, "step_s": s, "train_tok_s": T / s, "peak_rss_mb": _rss_mb()}


def measure_stream(spec: dict) -> dict:
    """Peak memory while streaming N tokens through a small fam model in 4k chunks."""
    from ..core.config import FamConfig
    from ..core.model import FamForCausalLM
    from ..core.streaming import stream

    _threads(spec)
    torch.manual_seed(0)
    cfg = FamConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, attention_mode="fam", block_size=256, mem_segments=1, fam_length=16)
    model = FamForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    chunk, T = 4096, spec["tokens"]
    ids = torch.randint(0, 256, (1, T // chunk * chunk), generator=gen)
    t0 = time.perf_counter()
    cache = stream(model, ids, chunk).cache
    fam_norm = max(float(st.fam.float().norm(dim=-1).max()) for st in cache.layers)
    return {**spec, "seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb(),
            "cache_elements": cache.num_elements(), "max_fam_norm": fam_norm}


def write_markdown(lines: list[str], path: str, append: bool = False) -> None:
    """Print a benchmark script's markdown report and write it to ``path`` (or append to it)."""
    text = "\n".join(lines) + "\n"
    print(text)
    with open(path, "a" if append else "w") as fh:
        fh.write("\n" + text if append else text)


def matmul_peak(dtype: str) -> float:
    """Measured GFLOP/s of a 2048^3 matmul in this dtype (median of 5)."""
    dt = getattr(torch, dtype)
    a, b = torch.randn(2048, 2048, dtype=dt), torch.randn(2048, 2048, dtype=dt)
    a @ b
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


def attended_keys(impl: str, T: int, L: int, m: int, F: int) -> float:
    """Query-key pairs a prefill of T tokens must compute (causal: t + 1 per query; windowed: the
    filled memory blocks, the FAM and the causal current block)."""
    if impl in ("hf", "full"):
        return T * (T + 1) / 2
    keys = 0.0
    for b in range(-(-T // L)):
        n = min(L, T - b * L)
        keys += n * min(b, m) * L + n * (n + 1) / 2 + (n * F if impl == "fam" else 0)
    return keys


def prefill_flops(impl: str, T: int, args) -> float:
    """FLOPs a prefill needs: weight matmuls for every token (and for the FAM rows of each update),
    scores + values for the attended keys."""
    s = SMOLLM2_SHAPE
    d, f, H, Hk, hd, n = (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"],
                          s["num_key_value_heads"], s["head_dim"], s["num_hidden_layers"])
    per_row = 2 * (d * H * hd + 2 * d * Hk * hd + H * hd * d + 3 * d * f)
    L, F = args.block_size, args.fam_length
    flops = per_row * T + 4 * H * hd * attended_keys(impl, T, L, args.mem_segments, F)
    if impl == "fam":  # one update per complete block: F rows through the layer, attending to F + L keys
        flops += (T // L) * (per_row * F + 4 * H * hd * F * (F + L))
    return n * flops


# ------------------------------------------------------------------------------------ driver
def _child(kind: str, spec: dict, timeout: int) -> dict | None:
    cmd = [sys.executable, "-m", "transformer_fam.experiments.bench", "--child", kind, json.dumps(spec)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  {kind} {spec}: timed out after {timeout}s", flush=True)
        return None
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {kind} {spec.get('impl', '')} {spec.get('tokens')}: failed: {tail}", flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads per measurement")


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = dict(block_size=args.block_size, mem_segments=args.mem_segments, fam_length=args.fam_length,
                decode_tokens=args.decode_tokens, threads=args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    given = sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]  # `fam bench ...` or `python -m`
    results = {"machine": machine(), "command": "fam bench " + " ".join(given),
               "peak_gflops": {}, "prefill": [], "train": [], "stream": []}
    for dtype in args.dtypes:
        results["peak_gflops"][dtype] = matmul_peak(dtype)
        print(f"matmul peak {dtype}: {results['peak_gflops'][dtype]:.0f} GFLOP/s", flush=True)
    impls = ["fam", "bswa", "full"] + ([] if args.skip_hf else ["hf"])
    for dtype in args.dtypes:
        lengths = args.lengths if dtype == "float32" else args.bf16_lengths
        for T in list(lengths) + list(args.long_lengths if dtype == "float32" else []):
            for impl in impls:
                if (T not in lengths and impl in ("full", "hf")) or (impl == "full" and T > args.full_max):
                    continue
                spec = {**base, "impl": impl, "tokens": T, "dtype": dtype,
                        "chunk": 8 * args.block_size if impl in ("fam", "bswa") else None}
                r = _child("prefill", spec, args.timeout)
                if r:
                    r["gflops"] = prefill_flops(impl, T, SimpleNamespace(**base)) / r["prefill_s"] / 1e9
                    r["mfu"] = r["gflops"] / results["peak_gflops"][dtype]
                    results["prefill"].append(r)
                    print(f"  {dtype} {impl:5s} T={T:7d}: {r['prefill_tok_s']:8.0f} tok/s, decode "
                          f"{r['decode_ms']:7.1f} ms/token, peak {r['peak_rss_mb']:7.0f} MB, "
                          f"MFU {r['mfu']:.0%}", flush=True)
                _save(results, out)
        # decode far into a stream: the state is constant-size, so start the stream at 508k
        for impl in ("fam", "bswa"):
            spec = {**base, "impl": impl, "tokens": 4096, "dtype": dtype, "chunk": 4096,
                    "position_offset": 512 * 1024 - 4096, "label": "context 512k"}
            r = _child("prefill", spec, args.timeout)
            if r:
                results["prefill"].append(r)
                print(f"  {dtype} {impl:5s} decode at 512k context: {r['decode_ms']:.1f} ms/token", flush=True)
    if not args.skip_train:
        for T in (2048, 8192):
            for schedule in ("layerwise", "naive"):
                r = _child("train", {**base, "tokens": T, "schedule": schedule}, args.timeout)
                if r:
                    results["train"].append(r)
                    print(f"  train T={T} {schedule:9s}: {r['train_tok_s']:.0f} tok/s", flush=True)
                _save(results, out)
    if args.stream_tokens:
        for T in (65536, args.stream_tokens):
            r = _child("stream", {"tokens": T, "threads": args.threads}, args.timeout)
            if r:
                results["stream"].append(r)
                print(f"  stream {T} tokens: peak {r['peak_rss_mb']:.0f} MB, {r['seconds']:.0f}s, "
                      f"max FAM norm {r['max_fam_norm']:.1f}", flush=True)
    _save(results, out)
    print(f"wrote {out / 'bench.json'}, {out / 'benchmarks.md'}, {out / 'bench.png'}")
    return 0


def _save(results: dict, out: Path) -> None:
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out / "bench.json")
    (out / "benchmarks.md").write_text(report_markdown(results))
    plot(results, out / "bench.png")


def _get(results, impl, T, dtype, label=None):
    for r in results["prefill"]:
        if r["impl"] == impl and r["tokens"] == T and r["dtype"] == dtype and r.get("label") == label:
            return r
    return None


def report_markdown(results: dict) -> str:
    lines = ["# Benchmarks", "",
             "SmolLM2-135M shape (random weights), block 1024, 3 memory segments, FAM 64; every number from",
             f"one run of `{results['command']}` (each measurement in its own process; peak RSS includes the",
             "weights). Regenerate with the same command; the machine is shared and noisy, so compare ratios.", "",
             f"Machine: {results['machine']}", "",
             "Matmul peak (2048^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results["peak_gflops"].items()),
             "", "### Prefill and decode", "",
             "| dtype | impl | tokens | prefill tok/s | decode ms/token | peak RSS MB | MFU |",
             "|---|---|---|---|---|---|---|"]
    for r in results["prefill"]:
        ctx = r.get("label") or r["tokens"]
        mfu = f"{r['mfu']:.0%}" if "mfu" in r else ""
        lines.append(f"| {r['dtype']} | {r['impl']} | {ctx} | {r['prefill_tok_s']:.0f} | {r['decode_ms']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {mfu} |")
    lines += ["", "### Ratios (targets from the performance issue)", "", "| ratio | value | target |", "|---|---|---|"]
    for dtype in results["peak_gflops"]:
        Ts = sorted({r["tokens"] for r in results["prefill"] if r["dtype"] == dtype and "label" not in r})
        for T in Ts:
            fam, bswa, hf = (_get(results, i, T, dtype) for i in ("fam", "bswa", "hf"))
            if fam and bswa:
                lines.append(f"| {dtype} fam/bswa prefill T={T} | {fam['prefill_tok_s'] / bswa['prefill_tok_s']:.2f} "
                             f"| >= 0.95 |")
            if fam and hf:
                lines.append(f"| {dtype} fam/HF prefill T={T} | {fam['prefill_tok_s'] / hf['prefill_tok_s']:.2f}x | "
                             f"{'>= 0.9x' if T <= 2048 else '>= 2.5x' if T >= 32768 else ''} |")
                lines.append(f"| {dtype} HF/fam decode latency T={T} | {hf['decode_ms'] / fam['decode_ms']:.2f}x | "
                             f"{'>= 2.5x' if T >= 32768 else ''} |")
        far = _get(results, "fam", 4096, dtype, "context 512k")
        near = _get(results, "fam", 4096, dtype)
        if far and near:
            lines.append(f"| {dtype} fam decode 512k / 4k | {far['decode_ms'] / near['decode_ms']:.2f} | <= 1.1 |")
        f32, b16 = _get(results, "fam", 8192, "float32"), _get(results, "fam", 8192, "bfloat16")
        if dtype == "bfloat16" and f32 and b16:
            lines.append(f"| fam prefill 8k bf16 / fp32 | {b16['prefill_tok_s'] / f32['prefill_tok_s']:.2f} | >= 1.7 |")
        if dtype == "float32" and _get(results, "fam", 8192, "float32"):
            lines.append(f"| fam prefill 8k MFU fp32 | {_get(results, 'fam', 8192, 'float32')['mfu']:.0%} | >= 50% |")
    tr = {(r["tokens"], r["schedule"]): r for r in results["train"]}
    for T in (2048, 8192):
        if (T, "layerwise") in tr and (T, "naive") in tr:
            lines.append(f"| train step T={T} layer-wise / naive | "
                         f"{tr[(T, 'layerwise')]['train_tok_s'] / tr[(T, 'naive')]['train_tok_s']:.2f} | "
                         f"{'>= 1.3' if T == 8192 else ''} |")
    if len(results["stream"]) == 2:
        a, b = results["stream"]
        lines.append(f"| stream peak memory {b['tokens']} / {a['tokens']} tokens (small model) | "
                     f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} | <= 1.1 |")
    if results["train"]:
        lines += ["", "### Training step (forward + backward, fam, float32, activation checkpointing per layer)", "",
                  "| tokens | schedule | tok/s | peak RSS MB |", "|---|---|---|---|"]
        lines += [f"| {r['tokens']} | {r['schedule']} | {r['train_tok_s']:.0f} | {r['peak_rss_mb']:.0f} |"
                  for r in results["train"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for dtype in results["peak_gflops"]:
        for impl in ("fam", "bswa", "full", "hf"):
            rs = sorted((r for r in results["prefill"] if r["impl"] == impl and r["dtype"] == dtype
                         and "label" not in r), key=lambda r: r["tokens"])
            if not rs:
                continue
            style = "-" if dtype == "float32" else "--"
            axes[0].plot([r["tokens"] for r in rs], [r["prefill_tok_s"] for r in rs], style, marker="o",
                         label=f"{impl} {dtype}")
            axes[1].plot([r["tokens"] for r in rs], [r["peak_rss_mb"] for r in rs], style, marker="o",
                         label=f"{impl} {dtype}")
    for ax, title in zip(axes, ("prefill tokens/s", "peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("SmolLM2-135M shape, block 1024, 3 memory segments, FAM 64")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # one measurement in its own process (started by _child)
    fn = {"prefill": measure_one, "train": measure_train, "stream": measure_stream}[sys.argv[2]]
    print(json.dumps(fn(json.loads(sys.argv[3]))))
