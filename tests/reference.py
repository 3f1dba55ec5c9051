"""Independent, readable reference implementations used by the tests.

Nothing here imports the package's attention code: RoPE, RMSNorm, attention with explicit
masks and softmax are written out again, and FAM runs as Algorithm 2 of the paper — "for each
block: for each layer" — with the readings docs/algorithm.md fixes.
"""

from __future__ import annotations

import math

import torch


def rms_norm(x, weight, eps):
    x32 = x.float()
    return weight * (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(x, positions, theta):
    """x (T, h, hd) rotated at integer positions (T,), rotate-half convention."""
    hd = x.shape[-1]
    out = torch.empty_like(x)
    for t, pos in enumerate(positions.tolist()):
        for i in range(hd // 2):
            angle = math.fmod(pos * theta ** (-2.0 * i / hd), 2 * math.pi)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[t, :, i], x[t, :, i + hd // 2]
            out[t, :, i] = a * c - b * s
            out[t, :, i + hd // 2] = b * c + a * s
    return out


def attend(q, k, v, allowed):
    """q (Tq, H, hd), k/v (Tk, Hk, hd), allowed (Tq, Tk) or per head (H, Tq, Tk) bool -> (Tq, H*hd).
    Explicit softmax."""
    H, Hk, hd = q.shape[1], k.shape[1], q.shape[2]
    k = k.repeat_interleave(H // Hk, dim=1)
    v = v.repeat_interleave(H // Hk, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
    scores = scores.masked_fill(~(allowed if allowed.dim() == 3 else allowed[None]), float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(q.shape[0], H * hd)


class RefLayer:
    """One Llama layer read from a FamForCausalLM's parameters by name."""

    def __init__(self, model, i):
        p = dict(model.named_parameters())
        pre = f"model.layers.{i}."
        self.p = {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)}
        c = model.config
        self.H, self.Hk, self.hd, self.eps, self.theta = (c.num_attention_heads, c.num_key_value_heads,
                                                          c.head_dim, c.rms_norm_eps, c.rope_theta)

    def lin(self, name, x):
        w = self.p[name + ".weight"]
        b = self.p.get(name + ".bias")
        return x @ w.T + (b if b is not None else 0)

    def qkv(self, x, positions):
        """x (T, d) -> q (T, H, hd), k, v (T, Hk, hd) with RoPE."""
        h = rms_norm(x, self.p["input_layernorm.weight"], self.eps)
        q = self.lin("self_attn.q_proj", h).view(-1, self.H, self.hd)
        k = self.lin("self_attn.k_proj", h).view(-1, self.Hk, self.hd)
        v = self.lin("self_attn.v_proj", h).view(-1, self.Hk, self.hd)
        return rope(q, positions, self.theta), rope(k, positions, self.theta), v

    def out(self, attn, residual):
        a = self.lin("self_attn.o_proj", attn) + residual
        h = rms_norm(a, self.p["post_attention_layernorm.weight"], self.eps)
        g = self.lin("mlp.gate_proj", h)
        return a + self.lin("mlp.down_proj", torch.nn.functional.silu(g) * self.lin("mlp.up_proj", h))


def _head(model, x):
    c = model.config
    x = rms_norm(x, model.model.norm.weight, c.rms_norm_eps)
    return x @ model.lm_head.weight.T


def reference_full(model, ids):
    """Plain causal transformer on one sequence ids (T,) -> logits (T, V)."""
    T = ids.shape[0]
    return reference_masked(model, ids, torch.ones(T, T, dtype=torch.bool).tril())


@torch.no_grad()
def reference_bswa_mask(T, L, m):
    """(T, T) allowed matrix of block sliding window attention (used with reference_masked)."""
    b = torch.arange(T) // L
    t = torch.arange(T)
    same = (b[:, None] == b[None, :]) & (t[None, :] <= t[:, None])
    window = (b[None, :] < b[:, None]) & (b[None, :] >= b[:, None] - m)
    return same | window


@torch.no_grad()
def reference_masked(model, ids, allowed):
    """Causal transformer with an explicit (T, T) attention mask."""
    x = model.model.embed_tokens.weight[ids]
    pos = torch.arange(ids.shape[0])
    for i in range(model.config.num_hidden_layers):
        layer = RefLayer(model, i)
        q, k, v = layer.qkv(x, pos)
        x = layer.out(attend(q, k, v, allowed), x)
    return _head(model, x)


@torch.no_grad()
def reference_fam(model, ids):
    """Algorithm 2, block by block and layer by layer, on one sequence ids (T,) -> logits (T, V)."""
    c = model.config
    L, m, Fl, nl = c.block_size, c.mem_segments, c.fam_length, c.num_hidden_layers
    layers = [RefLayer(model, i) for i in range(nl)]
    # initial FAM per layer: the prompt carried through the layers, bidirectional among itself
    init_pos = torch.arange(-Fl, 0)
    fam = []
    f = model.model.fam_prompt.detach().clone()

    def centred(f):  # option O3 (not the paper): readers see the FAM minus its mean over the F vectors
        return f - f.mean(0, keepdim=True) if getattr(c, "fam_center", False) else f

    for layer in layers:
        fam.append(f)
        q, k, v = layer.qkv(centred(f), init_pos)
        f = layer.out(attend(q, k, v, torch.ones(Fl, Fl, dtype=torch.bool)), f)
    first_update = [True] * nl
    memory = [[] for _ in range(nl)]  # per layer: list of (k, v) of previous complete blocks
    logits = []
    T = ids.shape[0]
    for start in range(0, T, L):
        block = ids[start: start + L]
        n = block.shape[0]
        x = model.model.embed_tokens.weight[block]
        tok_pos = torch.arange(start, start + n)
        fam_pos = torch.arange(start - Fl, start)  # F_{b-1} sits on the last F positions of block b-1
        before = list(fam)  # F_{b-1} of every layer (the layers below update theirs during this block)
        for i, layer in enumerate(layers):
            q, k, v = layer.qkv(x, tok_pos)
            qf, kf, vf = layer.qkv(centred(fam[i]), fam_pos)
            rk, rv = kf, vf  # what the block reads: this layer's FAM (rule F3)
            if getattr(c, "fam_read_shift", False) and i > 0 and start > 0:  # option O6: the layer below's
                _, rk, rv = layer.qkv(centred(before[i - 1]), fam_pos)
            mem = memory[i][-m:] if m > 0 else []
            mk = torch.cat([mk for mk, _ in mem] + [rk, k])
            mv = torch.cat([mv for _, mv in mem] + [rv, v])
            n_mem = sum(mk_.shape[0] for mk_, _ in mem)
            allowed = torch.zeros(n, n_mem + Fl + n, dtype=torch.bool)
            allowed[:, : n_mem + Fl] = True
            allowed[:, n_mem + Fl:] = torch.ones(n, n, dtype=torch.bool).tril()
            if getattr(c, "fam_skip_initial_read", False) and start == 0:  # option O7: the initial FAM is not read
                allowed[:, n_mem: n_mem + Fl] = False
            if getattr(c, "fam_read_heads", None) is not None:  # option O5 (not the paper): listed heads read
                readers = {h for lay, h in c.fam_read_heads if lay == i}
                allowed = allowed[None].repeat(layer.H, 1, 1)
                for h in set(range(layer.H)) - readers:
                    allowed[h, :, n_mem: n_mem + Fl] = False
            x_out = layer.out(attend(q, mk, mv, allowed), x)
            if n == L:  # a complete block updates the FAM; a partial one does not
                af = attend(qf, torch.cat([kf, k]), torch.cat([vf, v]), torch.ones(Fl, Fl + n, dtype=torch.bool))
                residual = torch.zeros_like(fam[i]) if first_update[i] else fam[i]
                updated = layer.out(af, residual)
                gate = getattr(model.model.layers[i], "fam_write_gate", None)
                if gate is not None and not first_update[i]:  # option O4 (not the paper): gated increment
                    u = updated - fam[i]
                    z = 2 * torch.sigmoid(u / u.pow(2).mean(-1, keepdim=True).sqrt() @ gate.weight.T + gate.bias)
                    updated = fam[i] + z * u
                fam[i] = updated
                if c.fam_max_rms is not None:  # optional cap (not the paper): rescale rows above it
                    norms = fam[i].norm(dim=-1, keepdim=True) / c.hidden_size ** 0.5
                    fam[i] = torch.where(norms > c.fam_max_rms, fam[i] * c.fam_max_rms / norms, fam[i])
                first_update[i] = False
                memory[i].append((k, v))
            x = x_out
        logits.append(_head(model, x))
    return torch.cat(logits)
