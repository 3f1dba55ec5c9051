"""`fam train RECIPE [key=value ...] [--resume]`: train a FAM model from scratch or fine-tune one.

    fam train passkey-tiny out_dir=runs/pk max_steps=300        # from scratch, minutes on a CPU
    fam train smollm2-fam-lora out_dir=runs/smol                # LoRA on SmolLM2-135M, books
    fam train runs/pk/recipe.yaml --resume                      # continue exactly where it stopped
    torchrun --nproc_per_node=2 -m transformer_fam.cli train passkey-tiny out_dir=runs/ddp   # DDP

The loop: global batches are pure functions of the step (data/batching.py), each process takes
its rows; the loss of a micro-batch is the sum over its target tokens divided by the *global*
number of target tokens, so DDP's gradient average gives exactly the one-process gradient.
In document-continuous batching the FamCache is carried (detached) from step to step.
Writes OUT/metrics.jsonl (one line per optimiser step), OUT/checkpoints/ (checkpoint.py) and
OUT/final/ (save_pretrained + tokenizer; LoRA merged, and the adapters alone in OUT/final/adapter).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import yaml

from . import checkpoint as ckpt
from ..core.layers import compile_fam_scan
from ..core.model import next_token_loss
from ..hardware import slow_bf16_note
from .recipe import Recipe, recipe_to_dict
from .setup import (Dist, build_model, build_optimizer, build_tokenizer, fam_model, lr_factor,
                    seed_everything, set_activation_checkpointing)
from .techniques import RandomStatePassing, start_cache
from .transfer import distill_loss, teacher_hidden_states, teacher_logits, transfer_loss


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run; ``run()`` returns the process exit code (0, or 130 after Ctrl-C)."""

    def __init__(self, recipe: Recipe, resume: bool = False, log=None):
        from ..data.batching import make_batches

        self.recipe, self.resume = recipe, resume
        self._frozen_sha: str | None = None  # checkpoint.frozen_sha256 of the model, at its first checkpoint
        self.dist = Dist(recipe)
        self.out = Path(recipe.out_dir)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True) if self.dist.main else None)
        if recipe.transfer_weight > 0 and self.dist.world > 1:
            raise ValueError(f"recipe key transfer_weight={recipe.transfer_weight}: runs in one process only "
                             f"(got {self.dist.world}); use transfer_weight=0 with torchrun")
        if recipe.batch_size % self.dist.world:
            raise ValueError(f"recipe key batch_size={recipe.batch_size}: must be divisible by the "
                             f"{self.dist.world} processes")
        if ckpt.list_checkpoints(self.out) and not resume:
            raise ValueError(f"recipe key out_dir={recipe.out_dir!r}: holds checkpoints; pass --resume to "
                             f"continue, or choose another out_dir")
        if recipe.bf16 and (slower := slow_bf16_note(self.dist.device.type)):
            self.log(f"note: recipe key bf16=true: {slower}; bf16=false is faster here")
        supervised = recipe.read_weight > 0 or recipe.write_weight > 0 or recipe.probe_weight > 0
        if supervised and self.dist.world > 1:
            raise ValueError(f"recipe keys read_weight / write_weight / probe_weight: run in one process only "
                             f"(got {self.dist.world}); set them to 0 with torchrun")
        seed_everything(recipe.seed)
        self.tokenizer = build_tokenizer(recipe)
        if recipe.data == "passkey-retrieval":
            from .retrieval import retrieval_batches

            self.batches = retrieval_batches(recipe, self.tokenizer)
        else:
            self.batches = make_batches(recipe.data, self.tokenizer, recipe.batching, recipe.text_prefix + recipe.seq_len,
                                        recipe.batch_size, recipe.seed, recipe.text_field, recipe.passkey_loss,
                                        recipe.passkey_curriculum)
        self.model = build_model(recipe, self.tokenizer).to(self.dist.device)
        self.fam = fam_model(self.model)
        self.recipe.write_gate_reset_layers(len(self.fam.model.layers))  # layers out of range: fail before the slow set-up
        self.supervision = None  # read / write / probe supervision (training/retrieval.py)
        if supervised:
            from .retrieval import build_supervision

            self.supervision = build_supervision(self.model, self.fam.config.head_dim,
                                                 self.batches.retrieval,
                                                 recipe.retrieval_heads,
                                                 recipe.read_weight, recipe.write_weight, recipe.probe_weight,
                                                 recipe.bf16, self.log)
            if recipe.fam_read_heads == "retrieval":  # option O5: only the supervised heads read the FAM
                self.fam.config.fam_read_heads = [list(h) for h in self.supervision.heads]
                self.log("fam_read_heads: " + ",".join(f"{layer}.{h}" for layer, h in self.supervision.heads))
            elif self.fam.config.fam_read_heads is not None:
                missing = set(self.supervision.heads) - {tuple(h) for h in self.fam.config.fam_read_heads}
                if missing:  # the read loss would train attention onto FAM columns those heads never see
                    raise ValueError(f"recipe key fam_read_heads={recipe.fam_read_heads}: lacks the supervised "
                                     f"heads {', '.join(f'{a}.{b}' for a, b in sorted(missing))}; add them or "
                                     "use fam_read_heads=retrieval")
        if recipe.fam_read_distant:
            self._add_distant_readers()
        if recipe.fam_write_gate_reset:
            self._reset_write_gates()
        if recipe.activation_checkpointing:
            set_activation_checkpointing(self.fam, True)
        if recipe.compile_fam_scan:
            compile_fam_scan(self.fam, True)
        self.model.train()
        self.wrapped = self._wrap(self.model)
        probe = self.supervision.probe if self.supervision is not None else None
        self.optimizer = build_optimizer(recipe, self.model, extra=probe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(recipe))
        self.step = 0
        self.cache = None  # document-continuous: the FamCache carried across steps
        self._transfer = 0.0  # this optimiser step's attention-transfer loss (transfer_weight > 0)
        self._distill: list[float] = []  # this step's KL per text micro-batch (distill_weight > 0)
        self._supervised: dict[str, float] = {}  # this step's read / write / probe (and answer / text) losses
        fam_mode = self.fam.config.attention_mode == "fam"
        self.rsp = RandomStatePassing(recipe.rsp_prob if fam_mode else 0.0)
        self.stop_requested = False
        self.rows = slice(self.dist.rank * recipe.batch_size // self.dist.world,
                          (self.dist.rank + 1) * recipe.batch_size // self.dist.world)

    def _add_distant_readers(self) -> None:
        """Option O5's ``fam_read_distant``: the K heads whose output BSWA changes most in the original
        model, over the first ``fam_read_distant_rows`` text rows (the first batches' rows in order: a
        fixed draw, the same heads on resume), join the readers (the supervised or listed ones; alone,
        they are all the readers). Every rank ranks the same rows with the unwrapped model; rank 0's
        list is broadcast, so the ranks cannot disagree on it (by rounding). A resumed run takes the
        readers saved with its checkpoint (``load_checkpoint``)."""
        from .retrieval import distant_heads

        r, config = self.recipe, self.fam.config
        if self.supervision is not None and not r.fam_read_heads:  # the supervised heads would stop reading
            raise ValueError(f"recipe key fam_read_distant={r.fam_read_distant}: with read / write / probe "
                             "supervision the supervised heads must read too; set fam_read_heads=retrieval")
        text, rows, index = getattr(self.batches, "text", self.batches), [], 0
        while sum(len(x) for x in rows) < r.fam_read_distant_rows:
            rows.append(text.batch(index)[0])
            index += 1
        ids = torch.cat(rows)[: r.fam_read_distant_rows].to(self.dist.device)
        scored = distant_heads(self.model, ids, config.block_size, config.mem_segments, r.fam_read_distant,
                               bf16=r.bf16)
        if self.dist.world > 1:
            shared = [scored]
            torch.distributed.broadcast_object_list(shared, src=0)
            scored = shared[0]
        self.log("distant heads (output error under BSWA, layer, head): "
                 + ", ".join(f"({s:.3f}, {layer}, {h})" for s, layer, h in scored))
        readers = [tuple(h) for h in (config.fam_read_heads if r.fam_read_heads else [])]
        readers += [(layer, h) for _, layer, h in scored if (layer, h) not in readers]
        config.fam_read_heads = [list(h) for h in readers]
        self.log("fam_read_heads: " + ",".join(f"{layer}.{h}" for layer, h in readers))

    def _reset_write_gates(self) -> None:
        """Recipe key ``fam_write_gate_reset``: the listed layers' write gates (option O4) back to zero,
        the paper's update, after ``init_adapter`` loaded them. A gate saturated near 0 (z ~ 1e-11 in
        a layer whose FAM an earlier stage learned to freeze) has no gradient left to reopen it; the
        layers that gain readers here may need it open. On resume the checkpoint's gates replace these."""
        layers = self.fam.model.layers
        supervised = {layer for layer, _ in self.supervision.heads} if self.supervision is not None else set()
        chosen = self.recipe.write_gate_reset_layers(len(layers), supervised)
        with torch.no_grad():
            for i in chosen:
                for p in layers[i].fam_write_gate.parameters():
                    p.zero_()
        self.log("write gates reset to zero (the paper's update) in layers " + ",".join(map(str, chosen))
                 + (" (a resumed run then loads its checkpoint's)" if self.resume else ""))

    def _wrap(self, model):
        r = self.recipe
        if self.dist.world == 1:
            return model
        if r.distributed == "fsdp2":
            from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

            for layer in self.fam.model.layers:
                fully_shard(layer)
                # the initial FAM runs each layer outside its forward (rule F4): gather there too
                register_fsdp_forward_method(layer, "initial_fam")
                register_fsdp_forward_method(layer, "carried_fam")  # RSP: a FAM from the last step
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        # the FAM prompt goes unused on steps that start from a carried FAM (RSP, document mode); with
        # option O5 a layer without readers updates a FAM nobody reads (its write gate gets no gradient)
        unused = self.fam.config.attention_mode == "fam" and (r.rsp_prob > 0 or r.batching == "document"
                                                               or bool(r.fam_read_heads) or r.fam_read_distant > 0)
        dev = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=dev, find_unused_parameters=unused)

    # ------------------------------------------------------------------ state
    def _model_state(self) -> dict:
        if self.recipe.distributed == "fsdp2" and self.dist.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return dict(zip(("model", "optimizer"), get_state_dict(self.model, self.optimizer, options=opts)))
        if self._frozen_sha is None:  # once per run: the frozen weights do not change
            self._frozen_sha = ckpt.frozen_sha256(self.model)
        return {"model": ckpt.trainable_state(self.model, self._frozen_sha), "optimizer": self.optimizer.state_dict()}

    def _load_model_state(self, model_sd: dict, optim_sd: dict) -> None:
        if self.recipe.distributed == "fsdp2" and self.dist.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(self.model, self.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                           options=StateDictOptions(full_state_dict=True))
            return
        ckpt.load_trainable_state(self.model, model_sd)
        self.optimizer.load_state_dict(optim_sd)

    def save_checkpoint(self) -> None:
        d, step = self.dist, self.step
        tmp = ckpt.checkpoint_root(self.out) / f"step-{step:08d}.tmp"
        if d.main:
            ckpt.begin(self.out, step)
        d.barrier()
        states = self._model_state()
        ckpt.write_rank_state(tmp, d.rank, {
            "rng": ckpt.rng_state(),
            "rsp_state": None if self.rsp.state is None else [t.cpu() for t in self.rsp.state],
            "cache": ckpt.cache_to_dict(self.cache),
            "probe": None if self.supervision is None or self.supervision.probe is None
            else self.supervision.probe.state_dict()})
        if d.main:
            trainer_state = {"step": step, "batches_consumed": step * self.recipe.grad_accum,
                             "world_size": d.world, "batching": self.recipe.batching,
                             "fam_read_heads": self.fam.config.fam_read_heads}  # option O5's readers, as trained
            ckpt.write_main(tmp, states["model"], states["optimizer"], self.scheduler.state_dict(), trainer_state)
        d.barrier()
        if d.main:
            ckpt.commit(tmp, self.recipe.keep_last_n)
        d.barrier()

    def load_checkpoint(self) -> bool:
        state = ckpt.read_newest_good(self.out, self.dist.rank, log=self.log)
        if state is None:
            return False
        world = state["trainer"]["world_size"]
        if self.recipe.batching == "document" and world != self.dist.world:
            raise ValueError(f"--resume: document batching carries per-process FAM state; resume with "
                             f"{world} processes, not {self.dist.world}")
        self._load_model_state(state["model"], state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["trainer"]["step"]
        saved = state["trainer"].get("fam_read_heads", self.fam.config.fam_read_heads)
        if saved != self.fam.config.fam_read_heads:  # e.g. fam_read_distant ranked other heads this time
            named = ",".join(f"{layer}.{h}" for layer, h in saved) if saved else "every head"
            self.log(f"--resume: the readers saved in {state['folder']} replace the ones chosen now: {named}")
            self.fam.config.fam_read_heads = saved
        rank = state["rank"]
        self.rsp.state = (None if rank["rsp_state"] is None
                          else [t.to(self.dist.device) for t in rank["rsp_state"]])
        self.cache = ckpt.cache_from_dict(rank["cache"], self.fam.config, self.dist.device)
        if self.supervision is not None and self.supervision.probe is not None:
            if rank.get("probe") is None:
                raise ValueError(f"--resume: {state['folder']} holds no key probe, but probe_weight="
                                 f"{self.recipe.probe_weight}; resume with the recipe it was saved with")
            self.supervision.probe.load_state_dict(rank["probe"])
        ckpt.set_rng_state(rank["rng"])
        self.log(f"resumed from {state['folder']} (step {self.step})")
        return True

    # ------------------------------------------------------------------ one optimiser step
    def micro_step(self, index: int, sync: bool) -> tuple[float, int]:
        """Forward + backward of global batch ``index`` (this process's rows); returns
        (this process's share of the mean loss, input tokens of the global batch)."""
        r = self.recipe
        inputs, targets = self.batches.batch(index)
        retrieval = r.data == "passkey-retrieval" and self.batches.is_retrieval(index)
        prefix = r.text_prefix if not retrieval else 0  # text rows: streamed first, without gradient
        n_targets = int((targets[:, prefix:] != -100).sum())
        inputs, targets = inputs[self.rows].to(self.dist.device), targets[self.rows].to(self.dist.device)
        document = r.batching == "document"
        if not document or self.batches.starts_stream(index):
            self.cache = start_cache(self.fam.config, self.rsp, r.random_position_offset)
        full_inputs = inputs
        if prefix:  # truncated backprop: the trained part starts from the state the prefix leaves
            with torch.no_grad(), torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=r.bf16):
                self.cache = self.wrapped(input_ids=inputs[:, :prefix], past_key_values=self.cache,
                                          use_cache=True, logits_to_keep=1).past_key_values
            inputs, targets = inputs[:, prefix:], targets[:, prefix:]
        keep_state = document or self.rsp.active  # someone reads the cache after this step
        no_sync = (not sync and self.dist.world > 1 and hasattr(self.wrapped, "no_sync"))
        kw, answer = {}, None
        if retrieval:  # logits of the answer's positions only (the targets' columns)
            first = int((targets != -100).any(0).nonzero()[0])  # = answer start - 1 (targets: next tokens)
            answer = (first + 1, first + 1 + int((targets[0] != -100).sum()))
            kw["logits_to_keep"] = inputs.shape[1] - first
            targets = targets[:, first:]
        sup = self.supervision if retrieval else None  # text batches (retrieval_text): next-token loss only
        with self.wrapped.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=r.bf16), \
                    torch.set_grad_enabled(r.lm_weight > 0 or r.distill_weight > 0 or self.supervision is not None), \
                    (sup.record() if sup is not None else contextlib.nullcontext((None, None))) as (reader, writer):
                out = self.wrapped(input_ids=inputs, past_key_values=self.cache, use_cache=keep_state, **kw)
            logits = out.logits.float()
            loss_sum = next_token_loss(logits, targets, shift=False, reduction="sum")  # targets: next tokens
            share = loss_sum / max(n_targets, 1) / r.grad_accum
            if r.retrieval_text:  # each kind's mean loss, logged apart: half of the micro-batches are of each kind
                kind = "answer_loss" if retrieval else "text_loss"
                self._supervised[kind] = self._supervised.get(kind, 0.0) + float(share.detach()) * 2
            total = r.lm_weight * share if r.lm_weight > 0 else 0.0
            if sup is not None:
                parts = sup.losses(reader, writer, inputs, answer, self.batches.key_digits_for(index))
                for k, v in parts.items():
                    self._supervised[k] = self._supervised.get(k, 0.0) + float(v.detach()) / r.grad_accum
                total = total + sup.total(parts) / r.grad_accum
            if r.distill_weight > 0 and not retrieval:  # self-distillation on text (training/transfer.py)
                with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=r.bf16):
                    teacher = teacher_logits(self.model, full_inputs, keep=inputs.shape[1])
                # this process's KL sum over the global number of distilled positions: DDP's average is the mean
                kl = (distill_loss(logits, teacher, r.distill_from, reduction="sum")
                      / (r.batch_size * (inputs.shape[1] - r.distill_from)))
                self._distill.append(float(kl.detach()))
                total = total + r.distill_weight * kl / r.grad_accum
            if r.transfer_weight > 0:  # attention transfer (training/transfer.py): one process only
                with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=r.bf16):
                    transfer = transfer_loss(self.fam, teacher_hidden_states(self.model, inputs))
                self._transfer += float(transfer.detach()) / r.grad_accum
                total = total + r.transfer_weight * transfer / r.grad_accum
            (total * self.dist.world).backward()  # DDP averages gradients over processes
        if self.rsp.active:
            self.rsp.save(out.past_key_values)
        if document:
            self.cache = out.past_key_values.detach_()
        return float(share.detach()), full_inputs.numel() * self.dist.world

    def optimizer_step(self) -> dict:
        r = self.recipe
        t0 = time.perf_counter()
        loss, tokens, self._transfer, self._supervised, self._distill = 0.0, 0, 0.0, {}, []
        for micro in range(r.grad_accum):
            share, n = self.micro_step(self.step * r.grad_accum + micro, sync=micro == r.grad_accum - 1)
            loss += share
            tokens += n
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, r.clip if r.clip > 0 else float("inf"))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = self.dist.sum(loss)
        seconds = time.perf_counter() - t0
        rec = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
               "tokens": tokens, "tokens_per_s": tokens / seconds, "step_s": seconds}
        if r.transfer_weight > 0:
            rec["transfer"] = self._transfer
        if self._distill:  # the mean KL per distilled token over this step's text micro-batches
            rec["distill"] = self.dist.sum(sum(self._distill) / len(self._distill))
        for kind in ("answer_loss", "text_loss"):  # shares of this process's rows: summed like the loss
            if kind in self._supervised:
                self._supervised[kind] = self.dist.sum(self._supervised[kind])
        rec.update(self._supervised)
        return rec

    # ------------------------------------------------------------------ the run
    def _open_metrics(self):
        path = self.out / "metrics.jsonl"
        kept = []
        if self.step and path.exists():  # drop lines logged after the checkpoint we resumed from
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= self.step:
                    kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))
        return open(path, "a")

    def _tensorboard(self):
        if not self.recipe.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def _on_signal(self, signum, frame):
        if self.stop_requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop_requested = True
        self.log(f"signal {signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                 f"(again to abort)")

    def run(self) -> int:
        from tqdm import tqdm

        r, d = self.recipe, self.dist
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(r), sort_keys=False))
        d.barrier()
        if self.resume and not self.load_checkpoint():
            self.log(f"--resume: no checkpoint in {self.out / 'checkpoints'}; starting from step 0")
        metrics = self._open_metrics() if d.main else None
        board = self._tensorboard() if d.main else None
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        delay = float(os.environ.get("FAM_TRAIN_STEP_DELAY", "0"))  # tests: widen the window for a kill
        bar = tqdm(total=r.max_steps, initial=self.step, disable=not (r.progress and d.main), dynamic_ncols=True,
                   desc="train")
        interrupted = False
        try:
            while self.step < r.max_steps:
                rec = self.optimizer_step()
                if d.main:
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
                    if board is not None:
                        for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                            board.add_scalar(f"train/{key}", rec[key], rec["step"])
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
                stop = d.sum(float(self.stop_requested)) > 0
                if stop or self.step % r.save_every == 0 or self.step == r.max_steps:
                    self.save_checkpoint()
                if stop:
                    interrupted = True
                    break
                if delay:
                    time.sleep(delay)
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if metrics is not None:
                metrics.close()
            if board is not None:
                board.close()
        if interrupted:
            self.log(f"interrupted: checkpoint at step {self.step} in {ckpt.checkpoint_root(self.out)}; "
                     f"continue with --resume")
            return 130
        self.save_final()
        return 0

    def save_final(self) -> Path:
        """OUT/final: a model folder (LoRA merged) with its tokenizer, for from_pretrained / fam generate;
        with LoRA also OUT/final/adapter (``save_lora``: the adapters and the FAM prompt; on SmolLM2 with
        its ``fam.json``, so that ``--model OUT/final/adapter`` loads it like a bundled model)."""
        final = self.out / "final"
        states = self._model_state()
        if not self.dist.main:
            self.dist.barrier()
            return final
        model = self.model
        if self.dist.world > 1 and self.recipe.distributed == "fsdp2":
            model = build_model(self.recipe, self.tokenizer)
            model.load_state_dict(states["model"])
        model = copy.deepcopy(model).cpu().eval()
        tmp = final.with_name("final.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if hasattr(model, "merge_and_unload"):
            from ..hf.lora import merge_lora, save_lora

            save_lora(model, tmp / "adapter")  # the small shareable part: init_adapter / load_lora take it
            if self.recipe.base_model == "smollm2":  # and --model OUT/final/adapter loads it (hf/smollm2.py)
                from ..hf.smollm2 import adapter_meta

                meta = adapter_meta(fam_model(model).config)
                (tmp / "adapter" / "fam.json").write_text(json.dumps(meta, indent=2) + "\n")
            model = merge_lora(model)
        model = fam_model(model)
        set_activation_checkpointing(model, False)
        model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.log(f"final model: {final}")
        self.dist.barrier()
        return final


def train(recipe: Recipe, resume: bool = False) -> int:
    """Run a recipe; returns the exit code."""
    trainer = Trainer(recipe, resume=resume)
    try:
        return trainer.run()
    finally:
        trainer.dist.close()
