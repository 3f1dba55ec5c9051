"""Issue 13 probes: LoRA-fine-tune SmolLM2-135M-Instruct converted to FAM (or BSWA) on synthetic
PassKey retrieval beyond the attention window, on a CPU budget; evaluate teacher-forced.

    PYTHONPATH=src python benchmarks/smollm2_passkey_lora.py --mode fam --gate --minutes 8 --out runs/p1

Data: the spec's PassKey prompt (docs/algorithm.md §10) with a random, non-block-aligned filler length
chosen so that the question sits ``d`` blocks after the key's block, d drawn uniformly in
[1, D] with a curriculum over D (``--curriculum 2:0,4:80`` = D 2 from step 0, D 4 from step 80),
plus a share of in-window examples (d = 0); key depth 0, or uniform with ``--depth-mix``.
Loss: cross-entropy on the 5 answer digits; optionally (``--distill``) hidden-state and logit
distillation from the same weights in ``full`` mode with the adapters off (the teacher sees the
whole context) at the question / answer positions.
``--transfer W`` adds the layer-wise attention transfer of transformer_fam.training.transfer
(``--ce 0``: transfer alone).
``--read W`` / ``--probe W`` (single-question data, paper form) port the demo's read supervision
and key probe: the ``--read-heads`` heads that retrieve the key in the original model (full
attention: most attention from the query predicting digit j onto key digit j) must attend FAM
slot j there, and a linear probe must decode digit j from slot j's value at those heads.
``--write W`` adds the demo's write supervision (passkey_demo.write_loss) on the same heads: at the
FAM update of the key's block, FAM slot j's query attends key digit j.
Eval: teacher-forced whole-key accuracy at several filler lengths (depth 0, new keys); with the
read gate also with the gates closed (= BSWA, the memory not read).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from transformer_fam import from_hf
from transformer_fam.data.tokenizer import load_tokenizer
from transformer_fam.evaluation.ablation import FamResetEachBlock
from transformer_fam.hf.smollm2 import smollm2_folder
from transformer_fam.data.passkey import _build, passkey_spans, random_key
from transformer_fam.experiments.passkey_demo import ReadRecorder, UpdateRecorder, write_loss
from transformer_fam.hf.lora import apply_lora, read_gates, save_lora
from transformer_fam.training.setup import fam_model
from transformer_fam.training.retrieval import (RetrievalBatches, ValueProbe, head_read_loss,
                                                retrieval_heads as find_heads)
from transformer_fam.training.transfer import teacher_hidden_states, teacher_view, transfer_loss


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="fam", choices=("fam", "bswa"))
    p.add_argument("--gate", action="store_true", help="fam_read_gate option")
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--mem", type=int, default=0)
    p.add_argument("--F", type=int, default=16)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--fam-lr", type=float, default=1e-3)
    p.add_argument("--gate-lr", type=float, default=1e-2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--minutes", type=float, default=8)
    p.add_argument("--curriculum", default="2:0,4:80", help="D:start_step,...")
    p.add_argument("--p-inwindow", type=float, default=0.1)
    p.add_argument("--d-min", type=int, default=1,
                   help="beyond-window examples put the question d in [d_min, D] blocks after the key's block")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--depth-mix", type=float, default=0.0, help="share of examples with a uniform depth")
    p.add_argument("--distill", type=float, default=0.0, help="weight of the hidden-state distillation")
    p.add_argument("--kl", type=float, default=0.0, help="weight of the answer-logit KL to the teacher")
    p.add_argument("--distill-span", type=int, default=12, help="positions before the answer distilled")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--grad-ckpt", action="store_true",
                   help="activation checkpointing per layer (recomputed in backward): about 1/3 more time, "
                        "activation memory of one layer instead of all, so that d = 16 blocks fit in memory")
    p.add_argument("--eval-lengths", default="60,200,450,1000,2000")
    p.add_argument("--eval-samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--multi", default="", help="nq:gap_lo:gap_hi dense multi-question data (e.g. 4:100:300)")
    p.add_argument("--save-final", action="store_true", help="write OUT/final (LoRA merged) for fam eval passkey")
    p.add_argument("--bench", action="store_true", help="time fp32 vs bf16 fwd+bwd once, then exit")
    p.add_argument("--transfer", type=float, default=0.0,
                   help="weight of the layer-wise attention transfer (LoLCATs-style): every layer, fed the "
                        "full-attention teacher's input hidden states, must reproduce the teacher's output")
    p.add_argument("--ce", type=float, default=1.0, help="weight of the end-to-end answer cross-entropy (multi)")
    p.add_argument("--read", type=float, default=0.0,
                   help="weight of the read supervision (single-question data, paper form): the --read-heads "
                        "heads that attend the key most in the full-attention teacher must attend FAM slot j "
                        "when predicting key digit j (the demo's read_loss)")
    p.add_argument("--probe", type=float, default=0.0,
                   help="weight of a key probe on those heads' FAM values: digit j decoded from slot j's value "
                        "in the answer's block (the write side, training only)")
    p.add_argument("--read-heads", type=int, default=4, help="how many (layer, head) pairs --read / --probe cover")
    p.add_argument("--init-adapter", default=None, help="start from a save_lora folder (e.g. OUT/adapter of a run)")
    p.add_argument("--straddle", action="store_true",
                   help="d >= 1 fillers also put the question's end in the block before the answer's (the answer "
                        "straddles a block boundary)")
    p.add_argument("--write", type=float, default=0.0,
                   help="weight of the write supervision: at the key block's FAM update, FAM slot j's query "
                        "of each --read-heads pair attends key digit j (cross-entropy of its own logits)")
    return p.parse_args()


class Data:
    """The benchmark's batches: the geometry of transformer_fam.training.retrieval.RetrievalBatches
    (the question d blocks after the key) drawn from one running RNG, so that the commands in
    docs/smollm2_memory.md keep drawing the batches they drew (``fam train`` draws per step)."""

    def __init__(self, tok, L, seed, straddle: bool = False):
        self.tok, self.L, self.rng, self.straddle = tok, L, random.Random(seed), straddle
        self.geometry = RetrievalBatches(tok, L, 1, seed, "1:0", straddle=straddle)
        self.head, self.qa = self.geometry.head, self.geometry.qa

    def filler_for(self, d: int) -> int:
        return self.geometry.filler_for(d, self.rng)

    def batch(self, B, D, p_in, depth_mix, d_min: int = 1):
        d = 0 if self.rng.random() < p_in else self.rng.randint(min(d_min, D), D)
        n = self.filler_for(d)
        depth = self.rng.random() if self.rng.random() < depth_mix else 0.0
        rows, keys = [], []
        for _ in range(B):
            k = random_key(self.rng)
            ids, spans = _build(n, k, depth, self.tok)
            rows.append(ids)
            keys.append(k)
        return torch.tensor(rows), spans["answer"], d


class MultiData(Data):
    """Dense retrieval supervision: after the key, ``nq`` rounds of (random filler of gap tokens,
    question, answer); every answer is a target. With m memory blocks, an answer whose last
    occurrence of the key (the key sentence or an earlier answer) lies outside its window can
    only come from the FAM."""

    def batch_multi(self, B, nq, gap_lo, gap_hi, m):
        from transformer_fam.data.passkey import INTRO, KEY_TEMPLATE, QUESTION, _encode, filler_ids

        tok, L = self.tok, self.L
        gaps = [self.rng.randint(gap_lo, gap_hi) for _ in range(nq)]
        rows, spans = [], []
        for r in range(B):
            k = random_key(self.rng)
            ids = _encode(tok, INTRO, True)
            head = _encode(tok, KEY_TEMPLATE.format(key=k), False)
            last_key = len(ids) + len(head) - 1  # where the key was last seen (end of the key sentence)
            ids += head
            spans = []
            for g in gaps:
                ids += filler_ids(tok, g) + _encode(tok, QUESTION, False)
                a0 = len(ids)
                ids += _encode(tok, str(k), False)
                a1 = len(ids)
                needs = last_key // L < a0 // L - m  # key outside this answer's window
                spans.append((a0, a1, needs))
                last_key = a1 - 1
            rows.append(ids)
        return torch.tensor(rows), spans


DIGIT0 = 32  # SmolLM2's token id of "0" ("0".."9" are ids 32..41); the answer is " " + 5 digit tokens


def retrieval_heads(peft, data: Data, n_heads: int, bf16: bool, rows: int = 8) -> list[tuple[int, int]]:
    """transformer_fam.training.retrieval.retrieval_heads over prompts with the question two blocks
    after the key: the (layer, head) pairs the checkpoint retrieves the key with."""
    ids, answer, _ = data.batch(rows, 2, 0.0, 0.0)
    key_digits = list(range(*passkey_spans(0, 0.0, data.tok)["key_digits"]))  # depth 0: the prompt's start
    scores = find_heads(peft, ids, answer, key_digits, n_heads, bf16)
    print("retrieval heads (mass on the key digit, layer, head):", [(round(s, 3), l, h) for s, l, h in scores],
          flush=True)
    return [(layer, h) for _, layer, h in scores]


def hidden_distill(student: tuple, teacher: tuple, pos) -> torch.Tensor:
    """Smooth-L1 between student and teacher hidden states at positions ``pos`` (an index tensor or
    a slice), each layer scaled by the teacher's RMS there (robust to tiny vectors); mean over layers."""
    total = 0.0
    for hs_s, hs_t in zip(student[1:], teacher[1:]):
        t = hs_t[:, pos].float()
        rms = t.pow(2).mean().sqrt() + 1e-6
        total = total + F.smooth_l1_loss(hs_s[:, pos].float() / rms, t / rms, beta=1.0)
    return total / (len(student) - 1)


def answer_logits(model, ids, a0, a1, **kw):
    out = model(input_ids=ids, logits_to_keep=ids.shape[1] - a0 + 1, **kw)
    return out, out.logits[:, : a1 - a0]  # positions a0-1 .. a1-2 predict a0 .. a1-1


@contextlib.contextmanager
def gates_closed(peft_model):
    gates = read_gates(peft_model)
    saved = {n: g.detach().clone() for n, g in gates.items()}
    with torch.no_grad():
        for g in gates.values():
            g.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for n, g in gates.items():
                g.copy_(saved[n])


@torch.no_grad()
def eval_tf(model, tok, lengths, samples, bf16, seed=123, depth=0.0, chunk=8):
    model.eval()
    res = {}
    for n in lengths:
        rng = random.Random(f"{seed}-{n}-{depth}")
        right, digits = 0, 0.0
        for s in range(0, samples, chunk):
            rows = []
            for _ in range(min(chunk, samples - s)):
                ids, spans = _build(n, random_key(rng), depth, tok)
                rows.append(ids)
            ids = torch.tensor(rows)
            a0, a1 = spans["answer"]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, lg = answer_logits(model, ids, a0, a1)
            right += int((lg.argmax(-1) == ids[:, a0:a1]).all(-1).sum())
            digits += float((lg.argmax(-1) == ids[:, a0:a1]).float().mean(-1).sum())
        res[str(n)] = right / samples
        res[f"{n}_digits"] = round(digits / samples, 3)
    return res


def eval_tf_reset(model, tok, lengths, samples, bf16, seed=123, depth=0.0, chunk=8):
    """``eval_tf`` with the FAM reset to its initial value after every block (the ablation of
    transformer_fam.evaluation.ablation; peft's LoRA layers live inside the base model, so the
    adapters stay on)."""
    return eval_tf(FamResetEachBlock(fam_model(model)), tok, lengths, samples, bf16, seed, depth, chunk)


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(smollm2_folder())
    extra = {"fam_read_gate": True} if a.gate else {}
    model = from_hf("smollm2", attention_mode=a.mode, block_size=a.block, mem_segments=a.mem, fam_length=a.F,
                    dtype=torch.float32, **extra)
    if a.init_adapter:
        from transformer_fam.hf.lora import load_lora

        peft = load_lora(model, a.init_adapter, is_trainable=True)
    else:
        peft = apply_lora(model, rank=a.rank, alpha=a.alpha)
    bf16 = not a.fp32
    if a.grad_ckpt:
        fam_model(peft).model.gradient_checkpointing = True
    data = MultiData(tok, a.block, a.seed, a.straddle)
    if a.bench:
        ids = torch.randint(0, 1000, (4, 384))
        for name, on in (("fp32", False), ("bf16", True), ("fp32", False), ("bf16", True)):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                loss = peft(input_ids=ids, labels=ids).loss
            loss.backward()
            print(name, f"{time.perf_counter() - t:.2f}s fwd+bwd 4x384", flush=True)
        return
    groups = [{"params": [p for n, p in peft.named_parameters() if p.requires_grad and "lora_" in n], "lr": a.lr},
              {"params": [p for n, p in peft.named_parameters() if p.requires_grad and n.endswith("fam_prompt")],
               "lr": a.fam_lr},
              {"params": list(read_gates(peft).values()), "lr": a.gate_lr}]
    heads, vprobe = [], None
    if a.read > 0 or a.probe > 0 or a.write > 0:
        if a.mode != "fam" or a.gate or a.multi:
            sys.exit("--read / --probe / --write: fam mode, the paper's joint softmax (no --gate), "
                     "single-question data")
        heads = retrieval_heads(peft, data, a.read_heads, bf16)
        if a.probe > 0:
            vprobe = ValueProbe(heads, fam_model(peft).config.head_dim)
            groups.append({"params": list(vprobe.parameters()), "lr": 1e-3})
    opt = torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.99), weight_decay=0.0)
    cur = sorted((int(s), int(d)) for d, s in (x.split(":") for x in a.curriculum.split(",")))
    log = open(out / "metrics.jsonl", "w")
    (out / "args.json").write_text(json.dumps(vars(a), indent=1))
    lengths = [int(x) for x in a.eval_lengths.split(",")]
    t_start, tokens, step = time.time(), 0, 0
    print(f"head {data.head} qa {data.qa}", flush=True)
    digit_pos = list(range(*passkey_spans(0, 0.0, tok)["key_digits"]))  # depth 0: the same for every filler

    def step_and_log(loss, ids, rec: dict) -> None:
        """One optimiser step on ``loss``, then one metrics.jsonl line (``rec`` + step, sizes, time, gate)."""
        nonlocal step, tokens
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], a.clip)
        opt.step()
        step += 1
        tokens += ids.numel()
        rec.update(step=step, T=ids.shape[1], gn=float(gn), tokens=tokens, min=(time.time() - t_start) / 60,
                   gate=max((float(torch.tanh(g).abs().max()) for g in read_gates(peft).values()), default=0.0))
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if step % 10 == 0 or step == 1:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}), flush=True)

    while step < a.steps and time.time() - t_start < a.minutes * 60:
        D = [d for s, d in cur if s <= step][-1]
        peft.train()
        if a.multi:
            nq, glo, ghi = (int(x) for x in a.multi.split(":"))
            ids, spans = data.batch_multi(a.batch, nq, glo, ghi, a.mem)
            need_h = a.distill > 0
            if need_h:  # teacher: the same weights in full mode, adapters off, whole context
                with teacher_view(peft), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    t_out = peft(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
            tr = None
            loss = 0.0
            if a.transfer > 0:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    tr = transfer_loss(fam_model(peft), teacher_hidden_states(peft, ids))
                loss = a.transfer * tr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), \
                    torch.set_grad_enabled(a.ce > 0 or need_h):
                s_out = peft(input_ids=ids, output_hidden_states=need_h)
            lg = s_out.logits
            lg_pred = torch.cat([lg[:, a0 - 1:a1 - 1] for a0, a1, _ in spans], 1).float()
            tgt = torch.cat([ids[:, a0:a1] for a0, a1, _ in spans], 1)
            ce = F.cross_entropy(lg_pred.reshape(-1, lg_pred.shape[-1]), tgt.reshape(-1))
            if a.ce > 0:
                loss = loss + a.ce * ce
            hid = None
            if need_h:  # hidden states at the question / answer positions of answers that need memory
                pos = torch.cat([torch.arange(a0 - a.distill_span, a1 - 1) for a0, a1, n in spans if n] or
                                [torch.arange(a0 - a.distill_span, a1 - 1) for a0, a1, _ in spans])
                hid = hidden_distill(s_out.hidden_states, t_out.hidden_states, pos)
                loss = loss + a.distill * hid
            right = torch.stack([(lg[:, a0 - 1:a1 - 1].argmax(-1) == ids[:, a0:a1]).all(-1) for a0, a1, _ in spans], 1)
            needs = torch.tensor([n for _, _, n in spans])
            step_and_log(loss, ids, dict(
                ce=float(ce), hid=None if hid is None else float(hid), transfer=None if tr is None else float(tr),
                n_mem=int(needs.sum()), acc_mem=float(right[:, needs].float().mean()) if needs.any() else None,
                acc_win=float(right[:, ~needs].float().mean()) if (~needs).any() else None))
            continue
        ids, (a0, a1), d = data.batch(a.batch, D, a.p_inwindow, a.depth_mix, a.d_min)
        need_h = a.distill > 0
        if need_h or a.kl > 0:
            with teacher_view(peft), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                t_out, t_lg = answer_logits(peft, ids, a0, a1, output_hidden_states=need_h)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), \
                (ReadRecorder() if heads else contextlib.nullcontext()) as recorder, \
                (UpdateRecorder() if a.write > 0 else contextlib.nullcontext()) as updates:
            s_out, s_lg = answer_logits(peft, ids, a0, a1, output_hidden_states=need_h)
        s_lg = s_lg.float()
        ce = F.cross_entropy(s_lg.reshape(-1, s_lg.shape[-1]), ids[:, a0:a1].reshape(-1))
        loss = ce
        rec = {}
        if heads and a.read > 0:
            rl = head_read_loss(recorder.calls, heads, [a0 + j for j in range(5)])
            loss = loss + a.read * rl
            rec["read"] = rl.item()
        if a.write > 0:
            wl = write_loss(updates, digit_pos, a.block, heads)
            loss = loss + a.write * wl
            rec["write"] = wl.item()
        if vprobe is not None:
            pl = vprobe.loss(recorder.calls, ids[:, a0 + 1:a0 + 6] - DIGIT0, [a0 + j for j in range(5)])
            loss = loss + a.probe * pl
            rec["probe"] = pl.item()
        if a.kl > 0:
            kl = F.kl_div(F.log_softmax(s_lg, -1), F.log_softmax(t_lg.float(), -1), log_target=True,
                          reduction="batchmean") / (a1 - a0)
            loss = loss + a.kl * kl
            rec["kl"] = float(kl)
        if need_h:
            hs = hidden_distill(s_out.hidden_states, t_out.hidden_states, slice(a0 - a.distill_span, a1 - 1))
            loss = loss + a.distill * hs
            rec["hid"] = float(hs)
        rec.update(d=d, ce=float(ce), acc=float((s_lg.argmax(-1) == ids[:, a0:a1]).all(-1).float().mean()))
        step_and_log(loss, ids, rec)
    b = torch.cat([p.detach().flatten() for n, p in peft.named_parameters() if "lora_B" in n])
    train_min = (time.time() - t_start) / 60
    save_lora(peft, out / "adapter")
    result = {"steps": step, "tokens": tokens, "train_min": round(train_min, 2), "lora_b_rms": float(b.pow(2).mean().sqrt())}
    result["tf"] = eval_tf(peft, tok, lengths, a.eval_samples, bf16)
    print("eval tf", result["tf"], flush=True)
    if read_gates(peft):
        with gates_closed(peft):
            result["tf_gates_closed"] = eval_tf(peft, tok, lengths, a.eval_samples, bf16)
        print("eval tf gates closed", result["tf_gates_closed"], flush=True)
    if a.mode == "fam":
        result["tf_fam_reset"] = eval_tf_reset(peft, tok, lengths, a.eval_samples, bf16)
        print("eval tf fam reset every block", result["tf_fam_reset"], flush=True)
    if a.save_final:
        import copy

        from transformer_fam.hf.lora import merge_lora

        merged = fam_model(merge_lora(copy.deepcopy(peft)))
        merged.save_pretrained(out / "final")
        tok.save_pretrained(out / "final")
    result["eval_min"] = round((time.time() - t_start) / 60 - train_min, 2)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
