"""Attention transfer for converted checkpoints (an option, not the paper's recipe; LoLCATs' first
stage adapted to FAM): every layer of the bswa / fam student, fed the hidden states that enter
that layer in the original model (the same weights in ``full`` mode with the LoRA adapters off,
which sees the whole sequence), must reproduce that layer's output. Each layer then trains on
its own, with a dense target at every token: where the teacher attends beyond the window, only
the FAM can supply what is missing, so both the FAM's write and its read get a direct signal.

    teacher = teacher_hidden_states(model, ids)          # no grad
    loss = transfer_loss(fam_model(model), teacher)      # differentiable w.r.t. the adapters / FAM prompt

``transfer_loss`` of one layer is its squared error, summed over the hidden dimension and
averaged over tokens, divided by the same average of the teacher layer's own update
(output - input): 1.0 is an error as large as the layer's whole contribution. A converted
BSWA SmolLM2-135M (block 128, no memory blocks) starts near 0.27 on PassKey prompts of ~700
tokens; the untrained FAM of the paper's form near 8 (docs/smollm2_memory.md).

Self-distillation (recipe key ``distill_weight``, also an option): the same teacher's next-token
distribution, KL(teacher || student) per token, on text. It keeps a converted model's text
abilities while it fine-tunes on retrieval: the teacher sees the whole sequence, so beyond the
window the KL rewards what only the FAM can carry.

    kl = distill_loss(student_logits, teacher_logits(model, ids), start=0)   # mean KL per token
"""

from __future__ import annotations

import contextlib

import torch

from .setup import fam_model


@contextlib.contextmanager
def teacher_view(model):
    """Inside: ``model`` (a FamForCausalLM, or a peft model around one) computes as the original
    checkpoint: full attention, adapters off, no autograd."""
    lm = fam_model(model)
    mode = lm.config.attention_mode
    disable = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    lm.config.attention_mode = "full"
    try:
        with torch.no_grad(), disable:
            yield
    finally:
        lm.config.attention_mode = mode


def teacher_hidden_states(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The teacher's hidden states: the embeddings, then every layer's output (before the final norm)."""
    with teacher_view(model):
        _, _, hidden = fam_model(model).model(input_ids, output_hidden_states=True, need_state=False)
    return tuple(hidden)


def teacher_logits(model, input_ids: torch.Tensor, keep: int = 0) -> torch.Tensor:
    """The teacher's next-token logits (B, T, V), no grad; ``keep`` > 0: of the last ``keep`` positions
    only (the teacher still reads the whole sequence)."""
    with teacher_view(model):
        return fam_model(model)(input_ids=input_ids, use_cache=False, logits_to_keep=keep).logits


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, start: int = 0,
                 reduction: str = "mean") -> torch.Tensor:
    """KL(teacher || student) of the next-token distributions at positions ``start``..T-1, summed over
    the vocabulary; ``reduction``: ``mean`` over those positions and rows, or their ``sum``."""
    s = torch.log_softmax(student[:, start:].float(), -1)
    t = torch.log_softmax(teacher[:, start:].float(), -1)
    kl = torch.nn.functional.kl_div(s, t, log_target=True, reduction="sum")
    return kl / (s.shape[0] * s.shape[1]) if reduction == "mean" else kl


def transfer_loss(lm, hidden: tuple[torch.Tensor, ...], per_layer: bool = False):
    """Mean over layers of the normalised layer error (module docstring); ``lm``: the student
    FamForCausalLM (its adapters on); ``hidden``: ``teacher_hidden_states``. With ``per_layer``
    also the list of the layers' values (floats)."""
    outs = lm.model.forward_layers([h.detach() for h in hidden[:-1]])
    losses = []
    for y, x_in, x_out in zip(outs, hidden[:-1], hidden[1:]):
        x_in, x_out = x_in.float(), x_out.float()
        scale = (x_out - x_in).pow(2).sum(-1).mean() + 1e-6
        losses.append((y.float() - x_out).pow(2).sum(-1).mean() / scale)
    total = torch.stack(losses).mean()
    return (total, [float(v.detach()) for v in losses]) if per_layer else total
