"""The PassKey demo (`fam demo`, the main job). Train a small FAM and a same-size BSWA model on PassKey from nothing,
evaluate both far beyond the training length, and show that only FAM keeps the key (paper Fig. 3a).

    fam demo --out runs/demo        # the any-length recipe, ~9 minutes on a 2-core CPU; passkey.json/png, fam/, bswa/
    fam demo --seeds 0,1,2          # three seeds, minimum and median (the README's table)
    fam demo --recipe aligned       # whole-block fillers, FAM m = 0 (the paper's PassKey setup)
    fam demo --quick                # the block-aligned recipe + write supervision, <= 800 steps, fillers <= 48
    fam demo --fam-only --seed 1 --threads 1 --set drift_weight=0   # FAM only, one recipe field changed
    fam demo --fam-max-rms 640 --fam-only --out runs/demo-cap   # FAM only, its RMS capped (not the paper)

Both models train with the same curriculum: fillers of any token count (UNALIGNED, the default:
the answer anywhere in its block) or in whole blocks (ALIGNED), lengthened when the running answer
accuracy passes 0.9, loss on the answer digits. FAM (m = 0, the paper's PassKey setup; m = 1 like
BSWA in UNALIGNED) additionally gets training-only losses on its FAM state: a key probe (it breaks
the write side of the write/read plateau) and, in UNALIGNED, a drift loss (1 - cos between each
FAM slot after the key sentence and entering the answer's block) and the read supervision (one
head of the last layer is taught to attend FAM slot j when it predicts digit j: the read side);
optionally (``write_weight``) the write supervision, its mirror (at the FAM update of the key's
block, FAM slot j's query of the last head in every layer is taught to attend key digit j);
then a phase of long fillers streamed through the FamCache with truncated backpropagation. Numbers, what failed, and the limits of the resulting
models: docs/results.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch

from ..core.cache import FamCache
from ..core.config import FamConfig
from ..core.layers import center_slots
from ..core.model import FamForCausalLM, next_token_loss
from ..core.streaming import stream
from ..data.passkey import passkey_batch, passkey_spans, passkey_tokenizer
from ..evaluation.passkey import evaluate_passkey, format_table
from ..plots import plot_accuracy
from .passkey_recipes import DemoRecipe, final_multiple


def make_model(recipe: DemoRecipe, mode: str, vocab_size: int) -> FamForCausalLM:
    cfg = FamConfig(vocab_size=vocab_size, hidden_size=recipe.hidden_size, intermediate_size=2 * recipe.hidden_size,
                    num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads, attention_mode=mode,
                    block_size=recipe.block_size, mem_segments=recipe.fam_mem_segments if mode == "fam" else 1,
                    fam_length=recipe.fam_length, max_position_embeddings=1 << 20,
                    fam_max_rms=recipe.fam_max_rms if mode == "fam" else None,
                    fam_center=recipe.fam_center and mode == "fam",
                    fam_write_gate=recipe.fam_write_gate and mode == "fam",
                    pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return FamForCausalLM(cfg)


def _answer_stats(logits: torch.Tensor, ids: torch.Tensor, span: tuple[int, int]) -> float:
    """Teacher-forced exact match of the answer digits (== greedy decoding when all are right)."""
    pred = logits[:, span[0] - 1: span[1] - 1].argmax(-1)
    return (pred == ids[:, span[0]: span[1]]).all(-1).float().mean().item()


class KeyProbe(torch.nn.Module):
    """Training-only auxiliary head: decode key digit j from FAM slot j of every layer, read from the
    FAM that enters the answer's block. It gives the FAM's write path a direct signal (the answer
    alone reaches it only through the read attention: a plateau) and is discarded after training."""

    def __init__(self, config: FamConfig, digits: int = 5, drift_slots: int = 0, drift_centered: bool = False):
        super().__init__()
        self.digits = min(digits, config.fam_length)
        self.drift_slots = min(drift_slots, config.fam_length) or self.digits
        self.drift_centered = drift_centered
        self.heads = torch.nn.ModuleList(torch.nn.Linear(config.hidden_size, 10 * self.digits)
                                         for _ in range(config.num_hidden_layers))
        self.norm = torch.nn.RMSNorm(config.hidden_size, elementwise_affine=False)

    def forward_with_probe(self, model, ids, labels, span, cache: FamCache | None = None):
        ep = episode_forward(model, self, ids, labels, span, cache=cache)
        return ep.out, ep.probe_loss

    def drift(self, before: list[torch.Tensor], after: list[torch.Tensor]) -> torch.Tensor:
        """Mean over layers and the drift slots of 1 - cos(FAM slot right after the key sentence
        (detached), the same slot entering the answer's block): 0 when the key memory is stationary.
        With ``drift_centered``, of the slots minus their mean over all F (what fam_center's readers see)."""
        D = self.drift_slots
        total = 0.0
        for f0, f1 in zip(before, after):
            if self.drift_centered:
                f0, f1 = center_slots(f0), center_slots(f1)
            total = total + (1 - torch.nn.functional.cosine_similarity(f0[:, :D].detach(), f1[:, :D], dim=-1)).mean()
        return total / len(after)

    def loss(self, fam: list[torch.Tensor], ids: torch.Tensor, span) -> torch.Tensor:
        """Mean over layers of the cross-entropy of digit j read from FAM slot j; fam: per layer (B, F, d)."""
        digits = (ids[:, span[0]: span[0] + self.digits] - 4).clamp(0, 9)  # word tokenizer: "0".."9" are ids 4..13
        total = 0.0
        for head, f in zip(self.heads, fam):
            pred = head(self.norm(f[:, : self.digits]))  # (B, D, 10 * D)
            pred = pred.view(f.shape[0], self.digits, self.digits, 10).diagonal(dim1=1, dim2=2).transpose(1, 2)
            total = total + torch.nn.functional.cross_entropy(pred.reshape(-1, 10), digits.reshape(-1))
        return total / len(fam)


class ReadRecorder:
    """Training-only: while active, records the queries, keys and plan of every ``window_attention``
    call (one per layer and forward), for the read supervision (``read_loss``)."""

    def __init__(self):
        self.calls: list[dict] = []

    def __enter__(self):
        from ..core import layers

        self._original = original = layers.window_attention

        def recording(q, k_seq, v_seq, fam_k, fam_v, plan, backend="auto", fam_gate=None, fam_readers=None):
            out = original(q, k_seq, v_seq, fam_k, fam_v, plan, backend, fam_gate, fam_readers)
            self.calls.append(dict(q=q, k_seq=k_seq, v_seq=v_seq, fam_k=fam_k, fam_v=fam_v, plan=plan, out=out,
                                   gated=fam_gate is not None))
            return out

        layers.window_attention = recording
        return self

    def __exit__(self, *exc):
        from ..core import layers

        layers.window_attention = self._original


def head_window(call: dict, t: int, head: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One head's attention at local query position ``t`` of a ReadRecorder record (a call that
    starts at a block boundary, paper form): its masked logits over the key window [memory | FAM |
    current block] (B, S), in the order of BlockPlan.mask, and the values (B, S, hd)."""
    q, plan = call["q"], call["plan"]
    if call["gated"]:
        raise ValueError("head_window: the read-gate option (O2) reads the FAM in a softmax of its own; "
                         "the read supervision covers the paper's joint softmax only")
    L, m = plan.block_size, plan.mem_segments
    hk = head // (q.shape[1] // call["k_seq"].shape[1])
    b, r = divmod(t, L) if plan.nb > 1 else (0, t)

    def window(seq, fam):
        return torch.cat((seq[:, hk, b * L: b * L + m * L], fam[:, hk, b],
                          seq[:, hk, m * L + b * L: m * L + (b + 1) * L]), dim=1)

    keys, values = window(call["k_seq"], call["fam_k"]), window(call["v_seq"], call["fam_v"])
    logits = torch.einsum("bd,bsd->bs", q[:, head, t].float(), keys.float()) / math.sqrt(q.shape[-1])
    logits = logits.masked_fill(~plan.mask[b, 0, r][None, : keys.shape[1]], float("-inf"))
    return logits, values


def read_loss(call: dict, positions: list[int], head: int = 0) -> torch.Tensor:
    """Read supervision: cross-entropy of one head's attention (the model's own logits, masked as
    the model masks them, ``head_window``) at the query that predicts key digit j, with FAM slot j
    as the target. ``call``: the ReadRecorder record of the last layer's forward over the answer's
    block; ``positions``: the local query position of each digit (negative: not in this call)."""
    m, L = call["plan"].mem_segments, call["plan"].block_size
    total, n = 0.0, 0
    for j, t in enumerate(positions):
        if t < 0 or call["fam_k"] is None:
            continue
        logits, _ = head_window(call, t, head)
        target = torch.full((logits.shape[0],), m * L + j, dtype=torch.long)
        total, n = total + torch.nn.functional.cross_entropy(logits, target), n + 1
    return total / max(n, 1)


class UpdateRecorder:
    """Training-only: while active, records the queries and keys of every FAM update (the F queries
    over [previous FAM ; block], ``FamDecoderLayer._fam_update``), per layer in scan order, for the
    write supervision (``write_loss``)."""

    def __init__(self):
        self.calls: list[dict] = []

    def __enter__(self):
        from ..core.layers import FamDecoderLayer

        self._original = original = FamDecoderLayer._fam_update
        calls = self.calls

        def recording(layer, fam, fq, kv_k, kv_v, residual, cos, sin):
            calls.append(dict(layer=layer.layer_idx, fq=fq, kv_k=kv_k, kv_v=kv_v))
            return original(layer, fam, fq, kv_k, kv_v, residual, cos, sin)

        FamDecoderLayer._fam_update = recording
        return self

    def __exit__(self, *exc):
        from ..core.layers import FamDecoderLayer

        FamDecoderLayer._fam_update = self._original

    def updates(self, layer: int) -> list[dict]:
        """One layer's records, block by block."""
        return [c for c in self.calls if c["layer"] == layer]


def update_logits(call: dict, slot: int, head: int) -> torch.Tensor:
    """One head's attention logits of FAM slot ``slot`` in an UpdateRecorder record: (B, F + L) over
    [previous FAM ; block] (the FAM update attends all of them)."""
    fq, kk = call["fq"], call["kv_k"]
    hk = head // (fq.shape[1] // kk.shape[1])
    return torch.einsum("bd,bsd->bs", fq[:, head, slot].float(), kk[:, hk].float()) / math.sqrt(fq.shape[-1])


def write_loss(recorder: UpdateRecorder, digits: list[int | None], block_size: int, heads: list[tuple[int, int]],
               first_block: int = 0) -> torch.Tensor:
    """Write supervision: at the FAM update of the block that holds key digit j (absolute position
    ``digits[j]``), FAM slot j's query of each (layer, head) in ``heads`` must attend that digit: the
    mean cross-entropy of the model's own attention logits (``update_logits``). ``recorder`` holds a
    forward that starts at block ``first_block``; a digit that is None or whose block's update it did
    not record is skipped (zero when none is left). The mirror of ``read_loss`` on the FAM's write side."""
    total, n = 0.0, 0
    for layer, head in heads:
        updates = recorder.updates(layer)
        for j, pos in enumerate(digits):
            b = -1 if pos is None else pos // block_size - first_block
            if not 0 <= b < len(updates):
                continue
            logits = update_logits(updates[b], j, head)
            n_fam = updates[b]["fq"].shape[2]
            target = torch.full((logits.shape[0],), n_fam + pos % block_size, dtype=torch.long)
            total, n = total + torch.nn.functional.cross_entropy(logits, target), n + 1
    return total / n if n else torch.zeros(())


def _sample_filler(rng: random.Random, longest: int, multiple: int) -> int:
    return rng.randint(0, longest // multiple) * multiple


class Marks(NamedTuple):
    """Where an episode's training-only losses look (None where the recipe does not use them)."""

    key_end: int | None = None  # the index after the key sentence (drift loss)
    digits: list[int] | None = None  # the key digits' positions (write supervision)


def _batch(recipe: DemoRecipe, batch_size: int, filler: int, tokenizer, rng: random.Random):
    """passkey_batch at the recipe's depth (drawn here when random: the same RNG use)
    -> ids, labels, span, Marks."""
    d = rng.random() if recipe.depth is None else recipe.depth
    ids, labels, _, span = passkey_batch(batch_size, filler, tokenizer, rng, d, recipe.loss_on)
    if recipe.drift_weight <= 0 and recipe.write_weight <= 0:
        return ids, labels, span, Marks()
    spans = passkey_spans(filler, d, tokenizer)
    return ids, labels, span, Marks(spans["key_sentence_end"] if recipe.drift_weight > 0 else None,
                                    list(range(*spans["key_digits"])) if recipe.write_weight > 0 else None)


def _train_step(model, probe, opt, recipe: DemoRecipe, ids, labels, span, cache: FamCache | None = None,
                marks: Marks = Marks(), grad_tokens: int | None = None,
                fam_scale: float = 1.0) -> tuple[float, float, object]:
    """One optimiser step on a batch; ``cache``: a stream to continue (a carried FAM), else fresh;
    ``grad_tokens``, ``fam_scale``: truncated backpropagation and the FAM shrink (see episode_forward);
    ``marks``: for the drift loss and the write supervision."""
    if probe is None and grad_tokens is None:
        out = model(ids, labels=labels, past_key_values=cache, use_cache=True)
        loss = out.loss
    else:
        ep = episode_forward(model, probe, ids, labels, span, grad_tokens, marks.key_end, cache,
                             read=recipe.read_weight > 0, write_digits=marks.digits, fam_scale=fam_scale)
        out = ep.out
        loss = out.loss + recipe.probe_weight * ep.probe_loss
        if recipe.drift_weight > 0:
            loss = loss + recipe.drift_weight * ep.drift
        if recipe.read_weight > 0:
            loss = loss + recipe.read_weight * ep.read_loss
        if recipe.write_weight > 0:
            loss = loss + recipe.write_weight * ep.write_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    n = out.logits.shape[1]  # the logits cover the last n tokens (all of them without truncation)
    acc = _answer_stats(out.logits, ids[:, -n:], (span[0] - ids.shape[1] + n, span[1] - ids.shape[1] + n))
    return out.loss.item(), acc, out.past_key_values


def train_curriculum(model, tokenizer, recipe: DemoRecipe, seed: int, desc: str, log: list,
                     position: int = 0) -> tuple[int, KeyProbe | None]:
    """Curriculum on the filler length; returns the longest filler reached and the key probe."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    probe = (KeyProbe(model.config, drift_slots=recipe.drift_slots, drift_centered=recipe.drift_centered)
             if recipe.probe_weight > 0 and model.config.attention_mode == "fam" else None)
    params = list(model.parameters()) + (list(probe.parameters()) if probe is not None else [])
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    model.train()
    cur, running, t0 = recipe.start_filler, 0.0, time.time()
    mult = recipe.filler_multiple
    bar = tqdm(range(recipe.steps), desc=desc, leave=False, position=position)
    for step in bar:
        filler = _sample_filler(rng, cur, mult)
        ids, labels, span, marks = _batch(recipe, recipe.batch_size, filler, tokenizer, rng)
        loss, acc, _ = _train_step(model, probe, opt, recipe, ids, labels, span, marks=marks)
        running = 0.9 * running + 0.1 * acc
        if step % 10 == 0:
            log.append({"phase": "curriculum", "step": step, "t": round(time.time() - t0, 1), "max_filler": cur,
                        "multiple": mult, "filler": filler, "loss": round(loss, 4), "running_acc": round(running, 3)})
        bar.set_postfix(max_filler=cur, mult=mult, loss=f"{loss:.3f}", acc=f"{running:.2f}")
        if running > recipe.promote_acc:
            if mult > final_multiple(recipe) and cur >= min(recipe.dealign_at, recipe.train_max_filler):
                mult = max(final_multiple(recipe), mult // 2)  # unaligned fillers: the answer anywhere in its block
                running = 0.5 * running
            elif cur < recipe.train_max_filler:
                cur = min(recipe.train_max_filler, cur + recipe.filler_step)
                running = 0.5 * running
            elif step > 50:
                break
        if time.time() - t0 > recipe.seconds:
            break
    bar.close()
    return cur, probe


def _phase_optimizer(model, probe, recipe: DemoRecipe) -> torch.optim.Optimizer:
    params = list(model.parameters()) + (list(probe.parameters()) if probe is not None else [])
    return torch.optim.AdamW(params, lr=recipe.phase_lr, weight_decay=0.0)


def train_carried(model, tokenizer, recipe: DemoRecipe, seed: int, desc: str, log: list, probe=None,
                  position: int = 0) -> None:
    """Document-continuous fine-tuning: each row's FAM continues from where its previous episode
    left it (backprop within the episode only), so the memory must overwrite an old key and stay
    stable over an unbounded number of updates. A step starts fresh with probability carry_reset."""
    from tqdm.auto import tqdm

    if recipe.carry_steps <= 0:
        return
    rng = random.Random(seed + 1)
    opt = _phase_optimizer(model, probe, recipe)
    model.train()
    state, running, t0 = None, 0.0, time.time()
    bar = tqdm(range(recipe.carry_steps), desc=desc, leave=False, position=position)
    try:
        for step in bar:
            fresh = state is None or rng.random() < recipe.carry_reset
            start = None if fresh else FamCache.from_fam_state(model.config, state)
            filler = _sample_filler(rng, recipe.train_max_filler, final_multiple(recipe))
            ids, labels, _, span = passkey_batch(recipe.batch_size, filler, tokenizer, rng, recipe.depth,
                                                 recipe.loss_on)
            loss, acc, cache = _train_step(model, probe, opt, recipe, ids, labels, span, start)
            state = [f.detach() for f in cache.fam_state()]
            running = 0.9 * running + 0.1 * acc
            if step % 10 == 0:
                log.append({"phase": "carried", "step": step, "t": round(time.time() - t0, 1), "carried": not fresh,
                            "filler": filler, "loss": round(loss, 4), "running_acc": round(running, 3),
                            "fam_norm": round(state[-1].norm(dim=-1).mean().item(), 2)})
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{running:.2f}")
            if time.time() - t0 > recipe.carry_seconds:
                break
    finally:
        bar.close()


class Episode(NamedTuple):
    """What ``episode_forward`` returns: the model output (logits from the gradient part on) and the
    training-only losses (0 where not asked for)."""

    out: object  # CausalLMOutputWithPast
    probe_loss: torch.Tensor | float
    drift: torch.Tensor
    read_loss: torch.Tensor
    write_loss: torch.Tensor


def episode_forward(model, probe, ids, labels, span, grad_tokens: int | None = None, key_end: int | None = None,
                    cache: FamCache | None = None, read: bool = False, write_digits: list[int] | None = None,
                    fam_scale: float = 1.0):
    """One episode's forward -> Episode(out, probe loss, drift, read loss, write loss). The prefix before the last grad_tokens
    tokens ahead of the answer's block runs without gradients (streamed through the FamCache in
    16-block chunks: truncated backpropagation); None backpropagates through everything. With
    key_end (the index after the key sentence), the FAM at the first block boundary after it is
    kept for the drift loss (0 when not given or when that boundary is not before the answer's
    block). ``cache``: a stream to continue (a carried FAM), else fresh. ``write_digits``: the key
    digits' positions for the write supervision (``write_loss`` on the last head of every layer, over the
    blocks that run with gradients). ``fam_scale``: every layer's FAM entering the gradient part (after
    a no-grad prefix) is multiplied by it (the FAM shrink, training only: readers see the FAM through
    RMSNorm, so the read is unchanged, but each later update then weighs 1/fam_scale times more, as
    in a FAM that has absorbed fewer blocks). out.logits cover the tokens from the gradient part on;
    probe loss is 0.0 without a probe."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    L = model.config.block_size
    cut = (span[0] // L) * L  # block boundary at or before the first answer token
    g0 = 0 if grad_tokens is None else max(0, (cut - grad_tokens) // L * L)
    c1 = None if key_end is None else -(-key_end // L) * L
    if c1 is not None and not 0 < c1 < cut:
        c1 = None
    bounds = sorted({0, g0, cut, ids.shape[1]} | ({c1} if c1 is not None else set()))
    segments = list(itertools.pairwise(bounds))
    if cut == 0:
        segments.insert(0, (0, 0))  # the FAM entering the first block (as a zero-length forward)
    logits, fam_key, fam, read_l, write_l = [], None, None, torch.zeros(()), []
    # the write supervision on the last head: head 0 of the last layer is the read's (read_loss), and a
    # head's FAM queries and its token queries share one projection
    heads = [(layer, model.config.num_attention_heads - 1) for layer in range(model.config.num_hidden_layers)]
    for s0, s1 in segments:
        if s1 <= g0 and s1 > s0:
            cache = stream(model, ids[:, s0:s1], 16 * L, cache=cache).cache  # no autograd
        else:
            if s0 == g0 and g0 > 0 and fam_scale != 1.0 and cache is not None and not cache.is_empty:
                for st in cache.layers:
                    st.fam = st.fam * fam_scale
            reading = read and s0 == cut and s1 > s0
            writing = write_digits is not None and s1 > s0 and any(s0 <= p < s1 for p in write_digits)
            with ReadRecorder() if reading else contextlib.nullcontext() as rec, \
                    UpdateRecorder() if writing else contextlib.nullcontext() as upd:
                res = model(ids[:, s0:s1], past_key_values=cache, use_cache=True)
            if reading and rec.calls:  # the last layer's read of the answer's block
                read_l = read_loss(rec.calls[-1], [span[0] - 1 + j - cut for j in range(span[1] - span[0])])
            if writing:
                w = write_loss(upd, [p if s0 <= p < s1 else None for p in write_digits], L, heads, s0 // L)
                if w.requires_grad:
                    write_l.append(w)
            cache = res.past_key_values
            logits.append(res.logits)
        if s1 == c1:
            fam_key = cache.fam_state()
        if s1 == cut and fam is None:
            fam = cache.fam_state()
    logits = torch.cat(logits, dim=1)
    loss = next_token_loss(logits, labels[:, g0:])
    probe_loss = probe.loss(fam, ids, span) if probe is not None else 0.0
    drift = probe.drift(fam_key, fam) if probe is not None and fam_key is not None else torch.zeros(())
    write = sum(write_l) / len(write_l) if write_l else torch.zeros(())
    return Episode(CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache), probe_loss, drift, read_l,
                   write)


def long_lr_factor(recipe: DemoRecipe, step: int) -> float:
    """The long phase's learning rate at ``step``, as a multiple of phase_lr: a cosine from 1 down to
    long_lr_final over long_steps (constant when long_lr_final is 1). Closed form on purpose: torch's
    CosineAnnealingLR gives the same curve by recursion, ~1e-16 apart, which would not reproduce the
    recorded runs bit for bit (docs/results.md, issue 14's sixth session)."""
    progress = min(1.0, step / max(1, recipe.long_steps - 1))
    return recipe.long_lr_final + (1.0 - recipe.long_lr_final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_long(model, tokenizer, recipe: DemoRecipe, seed: int, desc: str, log: list, probe=None,
               position: int = 0) -> None:
    """Long forward chains: fillers up to long_max_filler (log-uniform, whole blocks), streamed
    without gradients except the last long_grad_tokens before the answer (truncated
    backpropagation), mixed with curriculum-range episodes that keep the write path trained."""
    from tqdm.auto import tqdm

    if recipe.long_steps <= 0:
        return
    rng = random.Random(seed + 2)
    opt = _phase_optimizer(model, probe, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: long_lr_factor(recipe, step))
    model.train()
    running, t0, state, mult = 0.0, time.time(), None, final_multiple(recipe)
    bar = tqdm(range(recipe.long_steps), desc=desc, leave=False, position=position)
    try:
        for step in bar:
            long = rng.random() < recipe.long_fraction
            if long:
                lo, hi = math.log(max(1, recipe.train_max_filler)), math.log(recipe.long_max_filler)
                filler = int(math.exp(rng.uniform(lo, hi))) // mult * mult
                batch = recipe.long_batch_size
            elif recipe.short_log_fraction > 0 and rng.random() < recipe.short_log_fraction:
                # log-uniform in [0, train_max_filler]: short fillers (0 included) stay trained
                filler = int(math.exp(rng.uniform(0, math.log(recipe.train_max_filler + 1)))) - 1
                filler, batch = filler // mult * mult, recipe.batch_size
            else:
                filler, batch = _sample_filler(rng, recipe.train_max_filler, mult), recipe.batch_size
            p_carry = recipe.long_carry * min(1.0, (step + 1) / max(1, recipe.long_carry_ramp))
            carried = p_carry > 0 and state is not None and rng.random() < p_carry
            # a carried FAM enters as the start of the stream: each row continues from its own previous
            # FAM, which holds the previous episode's key (the new key must overwrite it)
            start = (FamCache.from_fam_state(model.config, [f[torch.arange(batch) % f.shape[0]] for f in state])
                     if carried else None)
            ids, labels, span, marks = _batch(recipe, batch, filler, tokenizer, rng)
            scale = 1.0  # the FAM shrink (long episodes only; no draw when off, so older runs are unchanged)
            if long and recipe.long_fam_shrink < 1.0:
                scale = math.exp(rng.uniform(math.log(recipe.long_fam_shrink), 0.0))
            loss_v, acc, cache = _train_step(model, probe, opt, recipe, ids, labels, span, start, marks,
                                             recipe.long_grad_tokens if long else None, scale)
            schedule.step()
            state = [f.detach() for f in cache.fam_state()]
            running = 0.9 * running + 0.1 * acc
            if step % 10 == 0:
                log.append({"phase": "long", "step": step, "t": round(time.time() - t0, 1), "filler": filler,
                            "carried": carried, "loss": round(loss_v, 4), "acc": acc,
                            "running_acc": round(running, 3),
                            "fam_rms": round(state[-1].pow(2).mean().sqrt().item(), 1)})
            bar.set_postfix(filler=filler, carried=int(carried), loss=f"{loss_v:.3f}", acc=f"{running:.2f}")
            if time.time() - t0 > recipe.long_seconds:
                break
    finally:
        bar.close()


def train_and_evaluate(mode: str, recipe: DemoRecipe, seed: int, out: str, threads: int, position: int = 0) -> dict:
    """Train one model from nothing, evaluate it, save it (with the tokenizer) to out/mode."""
    torch.set_num_threads(threads)
    tokenizer = passkey_tokenizer()
    torch.manual_seed(seed)
    random.seed(seed)
    model = make_model(recipe, mode, 8 * math.ceil(len(tokenizer) / 8))
    log: list = []
    t0 = time.time()
    reached, probe = train_curriculum(model, tokenizer, recipe, seed, f"train {mode}", log, position)
    if mode == "fam":
        train_carried(model, tokenizer, recipe, seed, f"carry {mode}", log, probe, position)
        train_long(model, tokenizer, recipe, seed, f"long {mode}", log, probe, position)
    train_s = time.time() - t0
    accuracy = evaluate_passkey(model, tokenizer, recipe.eval_lengths, samples=recipe.eval_samples,
                                seed=seed + 1000, batch_size=recipe.eval_samples, desc=f"eval {mode}",
                                position=position)
    model.save_pretrained(Path(out) / mode)
    tokenizer.save_pretrained(Path(out) / mode)
    return {"mode": mode, "accuracy": accuracy, "train_seconds": round(train_s, 1),
            "eval_seconds": round(time.time() - t0 - train_s, 1), "max_filler_reached": reached, "log": log}


def _worker(job):
    return train_and_evaluate(*job)


def run_demo(recipe: DemoRecipe, seed: int = 0, out="runs/demo", threads: int | None = None,
             fam_only: bool = False) -> dict:
    """Train FAM (and BSWA unless ``fam_only``) from nothing, evaluate both, write passkey.json,
    train_log.json, passkey.png and the models under ``out``; returns what passkey.json holds."""
    threads = threads or recipe.threads
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    # the two models are independent: on 2+ cores they train side by side, one thread each
    modes = ("fam",) if fam_only else ("fam", "bswa")
    jobs = [(mode, recipe, seed, str(out), max(1, threads // len(modes)), i) for i, mode in enumerate(modes)]
    if threads >= 2 and len(jobs) == 2:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(2) as pool:
            results = pool.map(_worker, jobs)
    else:
        results = [_worker(job) for job in jobs]
    runs = {r["mode"]: r for r in results}
    for mode, r in runs.items():
        print(f"{mode}: trained {r['train_seconds']:.0f}s (curriculum reached filler {r['max_filler_reached']}), "
              f"evaluated {r['eval_seconds']:.0f}s")
    columns = {mode: runs[mode]["accuracy"] for mode in modes}
    # the longest filler any training example had (the long phase runs it forward, backprop on the tail)
    train_max = max(recipe.train_max_filler, recipe.long_max_filler if recipe.long_steps > 0 else 0)
    print(f"\nPassKey accuracy (all 5 digits right, {recipe.eval_samples} prompts per length; "
          f"longest training filler {train_max} tokens ({recipe.train_max_filler} with full backpropagation), "
          f"block {recipe.block_size}):")
    print(format_table(columns))
    result = {"train_max_filler": train_max, "train_max_backprop_filler": recipe.train_max_filler,
              "fam_max_rms": recipe.fam_max_rms, "fam_center": recipe.fam_center,
              "fam_write_gate": recipe.fam_write_gate, **columns}
    (out / "passkey.json").write_text(json.dumps(result, indent=2))
    (out / "train_log.json").write_text(json.dumps({"recipe": asdict(recipe), "seed": seed,
                                                    "seconds": round(time.time() - t_start, 1), **runs}))
    names = model_names(recipe)
    plot_accuracy({names[mode]: col for mode, col in columns.items()}, out / "passkey.png",
                  f"PassKey, {recipe.hidden_size}-d {recipe.layers}-layer models, block {recipe.block_size}",
                  train_max, recipe.train_max_filler)
    print(f"wrote {out}/passkey.json, passkey.png, {', '.join(m + '/' for m in modes)} in {time.time() - t_start:.0f}s")
    return result


def model_names(recipe: DemoRecipe) -> dict[str, str]:
    """The plots' names of the two models, with the FAM options that depart from the paper."""
    options = ([f"fam_max_rms {recipe.fam_max_rms:g}"] if recipe.fam_max_rms is not None else []) + \
        (["fam_center"] if recipe.fam_center else []) + (["fam_write_gate"] if recipe.fam_write_gate else [])
    return {"fam": f"FAM (m={recipe.fam_mem_segments}{''.join(', ' + o for o in options)})", "bswa": "BSWA (m=1)"}


def summarize_seeds(results: dict[int, dict], modes: tuple[str, ...]) -> dict:
    """Per mode and filler length, the minimum and the median accuracy over seeds' passkey.json."""
    import statistics

    summary = {"seeds": sorted(results), "train_max_filler": next(iter(results.values()))["train_max_filler"],
               "train_max_backprop_filler": next(iter(results.values()))["train_max_backprop_filler"]}
    for mode in modes:
        lengths = sorted({int(n) for r in results.values() for n in r[mode]})
        per_seed = {str(n): [results[s][mode][str(n)] for s in sorted(results)] for n in lengths}
        summary[mode] = {n: min(v) for n, v in per_seed.items()}  # the headline: the worst seed
        summary[f"{mode}_median"] = {n: statistics.median(v) for n, v in per_seed.items()}
        summary[f"{mode}_per_seed"] = per_seed
    return summary


def run_seeds(recipe: DemoRecipe, seeds: list[int], out="runs/demo", threads: int | None = None,
              fam_only: bool = False) -> dict:
    """``run_demo`` once per seed (into out/seed-S), then out/passkey.json with the minimum (``fam``,
    ``bswa``) and the median (``fam_median`` ...) over seeds, and a plot of both."""
    out = Path(out)
    results = {s: run_demo(recipe, s, out / f"seed-{s}", threads, fam_only) for s in seeds}
    modes = ("fam",) if fam_only else ("fam", "bswa")
    summary = summarize_seeds(results, modes)
    (out / "passkey.json").write_text(json.dumps(summary, indent=2))
    print(f"\nPassKey accuracy over seeds {', '.join(map(str, seeds))}: minimum (median)")
    print(format_table({f"{m} min": summary[m] for m in modes} | {f"{m} median": summary[f"{m}_median"]
                                                                  for m in modes}))
    plot_seeds(recipe, summary, out / "passkey.png")
    return summary


def plot_seeds(recipe: DemoRecipe, summary: dict, path) -> None:
    """The minimum and the median over seeds of each model in ``summary`` (run_seeds' passkey.json)."""
    names, seeds = model_names(recipe), summary["seeds"]
    columns = {}
    for m in ("fam", "bswa"):
        if m in summary:
            columns[f"{names[m]}, min of {len(seeds)} seeds"] = summary[m]
            columns[f"{names[m]}, median"] = summary[f"{m}_median"]
    plot_accuracy(columns, path,
                  f"PassKey, seeds {', '.join(map(str, seeds))}, {recipe.hidden_size}-d {recipe.layers}-layer models",
                  summary["train_max_filler"], summary["train_max_backprop_filler"])
