"""PassKey retrieval beyond the window for a converted checkpoint (`data: passkey-retrieval`), with
the read / write supervision that makes its FAM memory work (issue 13; docs/smollm2_memory.md).

    fam train smollm2-fam out_dir=runs/s2-fam         # block 128, no memory block, F 16; read + write

The data: the spec's PassKey prompt (docs/algorithm.md §10), key at depth 0, a random filler length
(not a multiple of the block) chosen so that the question sits ``d`` blocks after the key's block, d
uniform in [d_min, D], D from a curriculum over the steps (``"1:0,2:150"``: D 1 from step 0, 2 from
step 150), plus a share of in-window examples (d = 0). ``depth`` > 0 (recipe key
``retrieval_depth``) moves the key into the filler, at a depth drawn per batch in [0, depth]: d then
bounds the distance. One d and depth per batch, so rows need no padding; batches are a pure
function of the step (exact resume). Targets: the answer's tokens only.

The supervision (training only; options, not the paper's recipe; weights in the recipe):
- the *retrieval heads* are the (layer, head) pairs whose queries predicting key digit j put the
  most attention on key digit j in the original model (full attention, adapters off);
- ``read_weight``: at the query that predicts digit j, each retrieval head attends FAM slot j (the
  cross-entropy of its own attention logits; ``passkey_demo.read_loss``);
- ``write_weight``: at the FAM update of the key's block, FAM slot j's query of each retrieval head
  attends key digit j (``passkey_demo.write_loss``);
- ``probe_weight``: a linear probe (training only, not saved with the model) decodes digit j from
  FAM slot j's value at each retrieval head in the answer's block.
"""

from __future__ import annotations

import contextlib
import random

import torch
import torch.nn.functional as F

from ..data import passkey
from .recipe import parse_curriculum


class RetrievalBatches:
    """PassKey batches whose question lies ``d`` blocks after the key's block (module docstring)."""

    mode = "packed"

    def __init__(self, tokenizer, block_size: int, batch_size: int, seed: int, curriculum: str,
                 d_min: int = 1, p_inwindow: float = 0.1, straddle: bool = False, p_boundary: float = 0.0,
                 depth: float = 0.0):
        self.tokenizer, self.L, self.batch_size, self.seed = tokenizer, block_size, batch_size, seed
        self.stages, self.d_min, self.p_inwindow, self.straddle = parse_curriculum(curriculum), d_min, p_inwindow, straddle
        self.p_boundary, self.depth = p_boundary, depth
        spans = passkey.passkey_spans(0, 0.0, tokenizer)
        ids, _ = passkey.make_passkey_example(0, passkey.KEY_MIN, 0.0, tokenizer)
        question = len(passkey._encode(tokenizer, passkey.QUESTION, False))
        a0, a1 = spans["answer"]
        self.head = len(ids) - (a1 - a0) - question  # intro + key sentence
        self.qa = len(ids) - self.head  # question + answer
        self.key_digits = list(range(*spans["key_digits"]))  # the same for every filler at depth 0 (key_digits_for)
        self.question, self.answer_len = question, a1 - a0
        if self.head + self.qa > block_size:
            raise ValueError(f"block_size={block_size}: a PassKey example without filler needs "
                             f"{self.head + self.qa} tokens; use a block of at least that many")

    def starts_stream(self, index: int) -> bool:
        return True

    @property
    def retrieval(self) -> "RetrievalBatches":
        """The retrieval batches themselves (TextMixedBatches has the same attribute)."""
        return self

    def is_retrieval(self, index: int) -> bool:
        return True

    def distance_bound(self, index: int) -> int:
        return [d for s, d in self.stages if s <= index][-1]

    def filler_for(self, d: int, rng: random.Random) -> int:
        L = self.L
        lo = max(0, d * L - self.head - (self.qa if self.straddle and d else 0))
        hi = (d + 1) * L - self.head - self.qa
        return rng.randint(lo, max(lo, hi))

    def boundary_filler_for(self, d: int, rng: random.Random) -> int:
        """A filler that puts the answer's start from ``answer_len - 1`` tokens before to 11 tokens
        after the start of block d (d >= 1): the answer straddles the boundary, or its first digits
        sit in the first tokens of block d with (most of) the question in block d - 1. A uniform
        filler rarely draws these alignments, and a model trained on it fails them (R4)."""
        offset = rng.randint(-self.answer_len + 1, 11)
        return max(0, d * self.L + offset - self.head - self.question)

    def _geometry(self, index: int) -> tuple[random.Random, int, int, float]:
        """(rng positioned for the keys, filler tokens, d, depth) of batch ``index``. d counts blocks
        from the block the key has at depth 0: a deeper key sits in a later block, nearer the question."""
        rng = random.Random(f"retrieval-{self.seed}-{index}")
        D = self.distance_bound(index)
        d = 0 if rng.random() < self.p_inwindow else rng.randint(min(self.d_min, D), D)
        # later draws come after the earlier ones, so p_boundary=0 / depth=0 keep the batches of earlier runs
        n = self.filler_for(d, rng)
        if self.p_boundary and d >= 1 and rng.random() < self.p_boundary:
            n = self.boundary_filler_for(d, rng)
        depth = rng.uniform(0.0, self.depth) if self.depth else 0.0
        return rng, n, d, depth

    def draw(self, index: int) -> tuple[torch.Tensor, tuple[int, int], int]:
        """(token ids (B, T), answer span, d) of batch ``index``."""
        rng, n, d, depth = self._geometry(index)
        rows, span = [], None
        for _ in range(self.batch_size):
            ids, span = passkey.make_passkey_example(n, passkey.random_key(rng), depth, self.tokenizer)
            rows.append(ids)
        return torch.tensor(rows, dtype=torch.long), span, d

    def key_digits_for(self, index: int) -> list[int]:
        """The positions of the key's digits in batch ``index`` (the same in every row)."""
        if not self.depth:
            return self.key_digits
        _, n, _, depth = self._geometry(index)
        return list(range(*passkey.passkey_spans(n, depth, self.tokenizer)["key_digits"]))

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq, (a0, a1), _ = self.draw(index)
        targets = torch.full((seq.shape[0], seq.shape[1] - 1), -100, dtype=torch.long)
        targets[:, a0 - 1: a1 - 1] = seq[:, a0:a1]
        return seq[:, :-1], targets


class TextMixedBatches:
    """PassKey retrieval with real text mixed in (recipe key ``retrieval_text``): even batch indices
    are retrieval batches, odd ones ``text``'s batches (next-token loss on every token), so that a
    fine-tune that teaches the memory keeps the model's language; ``grad_accum: 2`` puts one of each
    in every optimiser step. The retrieval curriculum counts retrieval batches (= steps there)."""

    mode = "packed"

    def __init__(self, retrieval: RetrievalBatches, text):
        self.retrieval, self.text = retrieval, text

    def starts_stream(self, index: int) -> bool:
        return True

    def is_retrieval(self, index: int) -> bool:
        return index % 2 == 0

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.retrieval if self.is_retrieval(index) else self.text
        return source.batch(index // 2)

    def key_digits_for(self, index: int) -> list[int]:
        """The key digits' positions of retrieval batch ``index`` (an even index)."""
        return self.retrieval.key_digits_for(index // 2)


def retrieval_batches(recipe, tokenizer):
    """The batcher of ``data: passkey-retrieval`` (with ``retrieval_text``: TextMixedBatches)."""
    batches = RetrievalBatches(tokenizer, recipe.block_size, recipe.batch_size, recipe.seed,
                               recipe.retrieval_curriculum, recipe.retrieval_d_min, recipe.retrieval_p_inwindow,
                               recipe.retrieval_straddle, recipe.retrieval_p_boundary, recipe.retrieval_depth)
    if not recipe.retrieval_text:
        return batches
    from ..data.batching import make_batches

    text = make_batches(recipe.retrieval_text, tokenizer, "packed", recipe.text_prefix + recipe.seq_len, recipe.batch_size,
                        recipe.seed, recipe.text_field)
    return TextMixedBatches(batches, text)


def digit_ids(tokenizer) -> torch.Tensor:
    """Token id -> digit value lookup (-1 elsewhere) for a tokenizer whose digits are single tokens."""
    ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    table = torch.full((max(ids) + 1,), -1, dtype=torch.long)
    table[torch.tensor(ids)] = torch.arange(10)
    return table


@contextlib.contextmanager
def record_full_attention(values: bool = False):
    """While active, records (q, k), with ``values`` (q, k, v), of every full-mode attention call
    (one per layer and forward)."""
    from ..core import layers

    calls, original = [], layers.causal_attention

    def recording(q, k, v):
        calls.append((q, k, v) if values else (q, k))
        return original(q, k, v)

    layers.causal_attention = recording
    try:
        yield calls
    finally:
        layers.causal_attention = original


@torch.no_grad()
def retrieval_heads(model, ids: torch.Tensor, answer: tuple[int, int], key_digits: list[int], n_heads: int,
                    bf16: bool = False) -> list[tuple[float, int, int]]:
    """The ``n_heads`` (attention mass, layer, head) whose queries predicting key digit j put the most
    attention on key digit j in the original model (``teacher_view``: full attention, adapters off),
    over the prompts ``ids`` (B, T) with their answer span and key digit positions."""
    from .transfer import teacher_view

    n = len(key_digits)
    queries = [answer[1] - n + j - 1 for j in range(n)]  # the query that predicts digit j
    with teacher_view(model), record_full_attention() as calls, \
            torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        model(input_ids=ids, logits_to_keep=1)
    scores = []
    for layer, (q, k) in enumerate(calls):
        H, Hk = q.shape[1], k.shape[1]
        mass = 0.0
        for j, t in enumerate(queries):
            kk = k[:, :, : t + 1].repeat_interleave(H // Hk, dim=1).float()
            att = torch.softmax(torch.einsum("bhd,bhsd->bhs", q[:, :, t].float(), kk) / q.shape[-1] ** 0.5, -1)
            mass = mass + att[:, :, key_digits[j]].mean(0)
        scores += [(float(mass[h]) / n, layer, h) for h in range(H)]
    scores.sort(reverse=True)
    return scores[:n_heads]


@torch.no_grad()
def distant_heads(model, ids: torch.Tensor, block_size: int, mem_segments: int, n_heads: int,
                  sinks: int = 4, bf16: bool = False, chunk: int = 256,
                  rows_per_pass: int = 2) -> list[tuple[float, int, int]]:
    """The ``n_heads`` (error, layer, head) whose output BSWA changes most in the original model
    (``teacher_view``: full attention, adapters off) over the text rows ``ids`` (B, T): for each query
    past the window ((m+1)L tokens), the head's output with its attention cut to what BSWA shows it
    (its memory blocks and its own block) plus the first ``sinks`` positions, renormalised, against
    full attention, as sum |o_cut - o_full|^2 / sum |o_full|^2 over queries and rows. DuoAttention's
    criterion for its retrieval heads (the heads that lose most when made streaming; the sinks kept,
    as there, because they carry no content: a head that parks its attention on them is not reading
    the distant text), for option O5's ``fam_read_distant``. The rows go through the model
    ``rows_per_pass`` at a time (a pass holds every layer's q, k, v); the sums run over all rows, so
    the ranking does not depend on ``rows_per_pass``."""
    from .transfer import teacher_view

    T, L = ids.shape[1], block_size
    window = (mem_segments + 1) * L
    if T <= window:
        raise ValueError(f"distant_heads: rows of {T} tokens never reach beyond the {window}-token window")
    if rows_per_pass < 1 or ids.shape[0] < 1:
        raise ValueError(f"distant_heads: needs rows ({ids.shape[0]}) and rows_per_pass >= 1 (got {rows_per_pass})")
    pos = torch.arange(T, device=ids.device)
    query = pos[window:, None]
    causal = pos[None, :] <= query
    shown = causal & ((pos[None, :] >= (query // L - mem_segments) * L) | (pos[None, :] < sinks))
    num: dict[int, torch.Tensor] = {}
    den: dict[int, torch.Tensor] = {}
    for r in range(0, ids.shape[0], rows_per_pass):
        with teacher_view(model), record_full_attention(values=True) as calls, \
                torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids[r: r + rows_per_pass], logits_to_keep=1)
        for layer, (q, k, v) in enumerate(calls):
            H, Hk = q.shape[1], k.shape[1]
            kk, vv = (x.repeat_interleave(H // Hk, dim=1).float() for x in (k, v))
            for a in range(0, T - window, chunk):  # chunks of queries: (B, H, chunk, T) scores at a time
                rows = slice(a, a + chunk)
                logits = torch.einsum("bhtd,bhsd->bhts", q[:, :, window + a: window + a + chunk].float(), kk)
                logits = logits / q.shape[-1] ** 0.5
                full = torch.softmax(logits.masked_fill(~causal[rows], float("-inf")), -1) @ vv
                cut = torch.softmax(logits.masked_fill(~shown[rows], float("-inf")), -1) @ vv
                num[layer] = num.get(layer, 0.0) + (cut - full).pow(2).sum((0, 2, 3))
                den[layer] = den.get(layer, 0.0) + full.pow(2).sum((0, 2, 3))
    scores = []
    for layer in sorted(num):
        err = num[layer] / den[layer]  # (H,)
        scores += [(float(err[h]), layer, h) for h in range(err.shape[0])]
    scores.sort(reverse=True)
    return scores[:n_heads]


class ValueProbe(torch.nn.Module):
    """Training-only: digit j from FAM slot j's value, for each supervised (layer, head)."""

    def __init__(self, heads: list[tuple[int, int]], head_dim: int):
        super().__init__()
        self.heads = heads
        self.lin = torch.nn.ModuleList(torch.nn.Linear(head_dim, 10) for _ in heads)
        self.norm = torch.nn.RMSNorm(head_dim, elementwise_affine=False)

    def loss(self, calls: list[dict], digits: torch.Tensor, queries: list[int]) -> torch.Tensor:
        """``digits`` (B, n) the key's digit values; ``queries[j]`` the position predicting digit j."""
        total = 0.0
        n = 0
        for lin, (layer, h) in zip(self.lin, self.heads):
            call = calls[layer]
            fv, L = call["fam_v"], call["plan"].block_size
            hk = h // (call["q"].shape[1] // fv.shape[1])
            for j, t in enumerate(queries):
                if t < 0:  # a query in the key's own block: its FAM has not seen the key
                    continue
                total, n = total + F.cross_entropy(lin(self.norm(fv[:, hk, t // L, j].float())), digits[:, j]), n + 1
        return total / max(n, 1)


def head_read_loss(calls: list[dict], heads: list[tuple[int, int]], queries: list[int]) -> torch.Tensor:
    """The demo's read supervision on the chosen heads: at the query predicting digit j, FAM slot j."""
    from ..experiments.passkey_demo import read_loss

    return sum(read_loss(calls[layer], queries, head=h) for layer, h in heads) / len(heads)


class RetrievalSupervision:
    """The read / write / probe losses of one forward (module docstring); ``record()`` wraps the
    forward, ``losses(...)`` reads what it recorded."""

    def __init__(self, heads: list[tuple[int, int]], head_dim: int, key_digits: list[int], block_size: int,
                 tokenizer, read: float, write: float, probe: float):
        self.heads, self.key_digits, self.block_size = heads, key_digits, block_size
        self.weights = {"read": read, "write": write, "probe": probe}
        self.probe = ValueProbe(heads, head_dim) if probe > 0 else None
        self.digit_table = digit_ids(tokenizer)

    @contextlib.contextmanager
    def record(self):
        from ..experiments.passkey_demo import ReadRecorder, UpdateRecorder

        reads = self.weights["read"] > 0 or self.probe is not None
        with (ReadRecorder() if reads else contextlib.nullcontext()) as reader, \
                (UpdateRecorder() if self.weights["write"] > 0 else contextlib.nullcontext()) as writer:
            yield reader, writer

    def losses(self, reader, writer, ids: torch.Tensor, answer: tuple[int, int],
               key_digits: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Unweighted losses by name; ``ids`` (B, T) the forward's input (the answer's last digit may be
        cut off: its position is then T); ``key_digits`` the digits' positions in it (default: those
        of depth 0)."""
        from ..experiments.passkey_demo import write_loss

        key_digits = self.key_digits if key_digits is None else key_digits
        n, L = len(key_digits), self.block_size
        key_block = key_digits[-1] // L
        # the query predicting digit j reads FAM slot j only in a block after the key's: inside the
        # key's block the FAM is the initial one and the key is in the local window (-1: skipped)
        queries = [t if t // L > key_block else -1 for t in (answer[1] - n + j - 1 for j in range(n))]
        out = {}
        if self.weights["read"] > 0 and max(queries) >= 0:
            out["read"] = head_read_loss(reader.calls, self.heads, queries)
        if self.weights["write"] > 0:
            out["write"] = write_loss(writer, key_digits, self.block_size, self.heads)
        if self.probe is not None and max(queries) >= 0:
            digits = self.digit_table.to(ids.device)[ids[:, key_digits]]
            out["probe"] = self.probe.loss(reader.calls, digits, queries)
        return out

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[k] * v for k, v in losses.items())


def build_supervision(model, head_dim: int, batches: RetrievalBatches, n_heads: int, read: float, write: float,
                      probe: float, bf16: bool = False, log=None) -> RetrievalSupervision:
    """Find the retrieval heads of ``model`` (peft-wrapped, heads of ``head_dim``) on 8 prompts with
    the question two blocks after the key (a fixed draw: the same heads on every run and resume),
    and the supervision on them."""
    rng = random.Random(f"retrieval-heads-{batches.seed}")
    n = batches.filler_for(2, rng)
    rows, span = [], None
    for _ in range(8):
        ids, span = passkey.make_passkey_example(n, passkey.random_key(rng), 0.0, batches.tokenizer)
        rows.append(ids)
    device = next(model.parameters()).device
    scored = retrieval_heads(model, torch.tensor(rows, device=device), span, batches.key_digits, n_heads, bf16)
    if log:
        log("retrieval heads (mass on the key digit, layer, head): "
            + ", ".join(f"({s:.3f}, {layer}, {h})" for s, layer, h in scored))
    heads = [(layer, h) for _, layer, h in scored]
    return RetrievalSupervision(heads, head_dim, batches.key_digits, batches.L,
                                batches.tokenizer, read, write, probe)
