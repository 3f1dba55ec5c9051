"""Training recipes: a typed dataclass read from YAML plus ``key=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key (no silent typos).
Bundled recipes live in ``transformer_fam/training/recipes/*.yaml``; ``load_recipe("passkey-tiny")``
finds them by name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..core.config import parse_read_heads

RECIPE_DIR = Path(__file__).parent / "recipes"


@dataclass
class Recipe:
    """Every key a recipe may set. Model sizes apply to ``init=scratch`` (or come from a preset)."""

    # run
    out_dir: str = "runs/train"
    max_steps: int = 1000
    save_every: int = 200
    keep_last_n: int = 3
    seed: int = 0
    device: str = "auto"  # auto / cpu / cuda
    tensorboard: bool = True
    progress: bool = True
    # data
    data: str = "passkey"  # built-in corpus names / files / folders, comma-separated; or passkey / passkey-retrieval
    text_field: str = "text"
    passkey_loss: str = "answer"  # passkey: loss on the answer's digits, or on all tokens
    passkey_curriculum: int = 0  # passkey: batches over which the length grows from the shortest to seq_len
    # passkey-retrieval (training/retrieval.py): the question d blocks after the key, d in [d_min, D]
    retrieval_curriculum: str = "1:0,2:150,4:300,8:450"  # D:first_step,...
    retrieval_d_min: int = 1
    retrieval_p_inwindow: float = 0.1  # share of batches with the question in the key's block (d = 0)
    retrieval_straddle: bool = False  # d >= 1: the question may start in the block before the answer's
    retrieval_p_boundary: float = 0.0  # share of d >= 1 batches whose answer starts at block d's boundary
    retrieval_depth: float = 0.0  # the key's depth: 0 (the spec's prompt, right after the instruction); D > 0:
    #                               drawn per batch uniformly in [0, D] (0.5: the key anywhere in the first half)
    retrieval_text: str = ""  # corpora mixed in: every other micro-batch is seq_len tokens of text (grad_accum 2)
    text_prefix: int = 0  # text rows: first stream this many tokens without gradient (truncated backprop), then seq_len
    retrieval_heads: int = 4  # how many (layer, head) pairs the read / write / probe supervision covers
    read_weight: float = 0.0  # > 0: retrieval heads read FAM slot j for digit j (an option, not the paper)
    write_weight: float = 0.0  # > 0: FAM slot j's query attends key digit j at the key block's update
    probe_weight: float = 0.0  # > 0: a training-only linear probe decodes digit j from FAM slot j's value
    tokenizer: str = "auto"  # auto (byte for scratch, the base model's otherwise) / byte / passkey / path
    batching: str = "packed"  # packed (paper) / document (rows read documents in order, FAM carried)
    seq_len: int = 512
    batch_size: int = 8  # global sequences per micro-batch (split across processes)
    grad_accum: int = 1
    # model
    init: str = "scratch"  # scratch / pretrained
    base_model: str = ""  # pretrained: HF folder, GGUF file, or "smollm2"
    finetune: str = "full"  # full / lora (pretrained only)
    lora_rank: int = 64
    lora_alpha: float = 128.0
    init_adapter: str = ""  # finetune=lora: start from a save_lora folder (adapters + FAM prompt), not from zero
    preset: str = ""  # "" or a key of PRESETS (scratch only)
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 0  # 0: same as num_attention_heads
    tie_word_embeddings: bool = False
    attention_mode: str = "fam"
    block_size: int = 32
    mem_segments: int = 1
    fam_length: int = 8
    # paper techniques (docs/algorithm.md §7)
    rsp_prob: float = 0.0
    random_position_offset: bool = False
    fam_max_rms: float = 0.0  # > 0: cap the FAM's RMS after each update (an option, not the paper); 0: off
    fam_read_gate: bool = False  # option, not the paper: FAM read through its own softmax, zero-init gate tanh(g)
    fam_center: bool = False  # option, not the paper: FAM readers see it minus its mean over the F vectors
    fam_write_gate: bool = False  # option, not the paper: a learned gate on each FAM increment (zero init = paper)
    fam_write_gate_reset: str = ""  # with init_adapter: set these layers' write gates back to zero (the paper's
    #                                 update) before training: "all", "unsupervised" (every layer holding no
    #                                 supervised head), or layer indices "0,1,4"; "": keep the adapter's gates
    fam_read_heads: str = ""  # option O5, not the paper: only these heads read the FAM ("17.3,18.6": LAYER.HEAD;
    #                           "retrieval": the heads the retrieval supervision finds); "": every head (paper)
    fam_read_distant: int = 0  # option O5: > 0 adds the K heads whose output BSWA changes most in the original
    #                            model on the first text rows (training/retrieval.py distant_heads) to the readers
    fam_read_distant_rows: int = 8  # how many text rows (the first batches', in order) rank them
    fam_read_shift: bool = False  # option O6, not the paper: block queries of layer l read layer l-1's FAM
    fam_skip_initial_read: bool = False  # option O7, not the paper: no block reads the initial FAM (block 0 is BSWA's)
    # attention transfer (training/transfer.py; an option for converted checkpoints, not the paper)
    transfer_weight: float = 0.0  # > 0: add every layer's error against the original model's layer (lora only)
    distill_weight: float = 0.0  # > 0: add KL(original model in full attention || student) on text (lora only)
    distill_from: int = 0  # the first position of each sequence that the KL covers (e.g. the window: beyond it only)
    lm_weight: float = 1.0  # weight of the next-token loss (0 with transfer_weight > 0: transfer alone; the loss
    #                         is then still computed, without gradients, for the log: one forward per step)
    # optimisation
    optimizer: str = "adamw"  # adamw / adafactor
    lr: float = 1e-3
    fam_lr: float = 0.0  # lr of the FAM prompt; 0: lr
    gate_lr: float = 0.0  # lr of the options' gates (fam_read_gate, fam_write_gate); 0: lr
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    schedule: str = "constant"  # constant / cosine
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine: final lr = lr * min_lr_ratio
    clip: float = 1.0  # max grad norm; 0 disables
    bf16: bool = False  # autocast to bfloat16 (CPU or GPU)
    activation_checkpointing: bool = False
    compile_fam_scan: bool = False  # torch.compile each layer's FAM update (speed only: fewer kernels on a GPU)
    # several processes (torchrun)
    distributed: str = "ddp"  # ddp / fsdp2

    def _validate_read_distant(self) -> None:
        key = f"recipe key fam_read_distant={self.fam_read_distant}"
        if self.fam_read_distant < 0:
            raise ValueError(f"{key}: must be >= 0 (0: off)")
        if self.attention_mode != "fam":
            raise ValueError(f"{key}: acts on the FAM only, but attention_mode={self.attention_mode}; "
                             "set it to 0 or use attention_mode=fam")
        if self.init != "pretrained":
            raise ValueError(f"{key}: ranks the heads of the original checkpoint; needs init=pretrained")
        if self.data == "passkey-retrieval" and not self.retrieval_text:
            raise ValueError(f"{key}: ranks the heads on text rows; set retrieval_text (e.g. retrieval_text=shakespeare)")
        if self.data == "passkey":
            raise ValueError(f"{key}: ranks the heads on text rows, not PassKey filler; use a text corpus, or "
                             "data=passkey-retrieval with retrieval_text")
        window = (self.mem_segments + 1) * self.block_size
        if self.seq_len <= window:
            raise ValueError(f"{key}: rows of seq_len={self.seq_len} never reach beyond the {window}-token "
                             "window; use a longer seq_len")

    def validate(self) -> "Recipe":
        choices = {"device": ("auto", "cpu", "cuda"), "batching": ("packed", "document"),
                   "init": ("scratch", "pretrained"), "finetune": ("full", "lora"),
                   "optimizer": ("adamw", "adafactor"), "schedule": ("constant", "cosine"),
                   "distributed": ("ddp", "fsdp2"), "passkey_loss": ("answer", "all"), "attention_mode": ("full", "bswa", "fam")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"recipe key {key}={getattr(self, key)!r}: must be one of {', '.join(allowed)}")
        for key in ("max_steps", "save_every", "keep_last_n", "seq_len", "batch_size", "grad_accum"):
            if getattr(self, key) < 1:
                raise ValueError(f"recipe key {key}={getattr(self, key)}: must be >= 1")
        for key in ("lr", "fam_lr", "gate_lr", "weight_decay", "beta1", "beta2", "min_lr_ratio", "clip", "rsp_prob",
                    "fam_max_rms", "transfer_weight", "lm_weight", "distill_weight", "retrieval_p_inwindow", "retrieval_p_boundary", "retrieval_depth", "read_weight",
                    "write_weight", "probe_weight"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"recipe key {key}={getattr(self, key)}: must be a finite number")
        if self.lr <= 0:
            raise ValueError(f"recipe key lr={self.lr}: must be > 0")
        for key in ("fam_lr", "gate_lr"):
            if getattr(self, key) < 0:
                raise ValueError(f"recipe key {key}={getattr(self, key)}: must be >= 0 (0: lr)")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"recipe key seed={self.seed}: must be in [0, 2**32) (numpy's seed range)")
        if not 0.0 <= self.rsp_prob <= 1.0:
            raise ValueError(f"recipe key rsp_prob={self.rsp_prob}: must be in [0, 1]")
        if self.fam_max_rms < 0:
            raise ValueError(f"recipe key fam_max_rms={self.fam_max_rms}: must be >= 0 (0 is the paper's update)")
        for key, off in (("rsp_prob", 0.0), ("fam_max_rms", 0.0), ("fam_read_gate", False),
                         ("fam_center", False), ("fam_write_gate", False), ("fam_read_heads", ""),
                         ("fam_read_shift", False), ("fam_skip_initial_read", False)):  # FAM only
            if getattr(self, key) != off and self.attention_mode != "fam":
                raise ValueError(f"recipe key {key}={getattr(self, key)}: acts on the FAM only, but "
                                 f"attention_mode={self.attention_mode}; set it to {off} or use attention_mode=fam")
        if self.fam_read_distant_rows < 1:
            raise ValueError(f"recipe key fam_read_distant_rows={self.fam_read_distant_rows}: must be >= 1 "
                             "(the text rows that rank fam_read_distant's heads)")
        if self.fam_read_distant:
            self._validate_read_distant()
        if self.fam_write_gate_reset:
            self._validate_write_gate_reset()
        if self.fam_read_heads == "retrieval":
            if self.read_weight <= 0 and self.write_weight <= 0:
                raise ValueError("recipe key fam_read_heads=retrieval: names the heads the retrieval supervision "
                                 "finds, which needs read_weight > 0 or write_weight > 0")
        else:
            try:
                parse_read_heads(self.fam_read_heads)
            except ValueError as err:
                raise ValueError(f"recipe key fam_read_heads={self.fam_read_heads!r}: {err}") from None
        for key in ("transfer_weight", "lm_weight", "distill_weight", "distill_from"):
            if getattr(self, key) < 0:
                raise ValueError(f"recipe key {key}={getattr(self, key)}: must be >= 0")
        if self.transfer_weight == 0 and self.distill_weight == 0 and self.lm_weight == 0:
            raise ValueError("recipe key lm_weight=0: nothing to train without transfer_weight > 0 or "
                             "distill_weight > 0")
        for option in ("transfer_weight", "distill_weight"):
            if getattr(self, option) == 0:
                continue
            needs = {"finetune": "lora", "batching": "packed", "rsp_prob": 0.0}  # the teacher: adapters off, one sequence
            for key, value in needs.items():
                if getattr(self, key) != value:
                    raise ValueError(f"recipe key {option}={getattr(self, option)}: needs {key}={value} "
                                     f"(got {getattr(self, key)!r})")
            if self.attention_mode == "full":
                raise ValueError(f"recipe key {option}: the student must be bswa or fam (attention_mode=full "
                                 "is the teacher itself)")
        if self.text_prefix:
            self._validate_text_prefix()
        if self.distill_weight > 0 and self.distill_from >= self.seq_len:
            raise ValueError(f"recipe key distill_from={self.distill_from}: must be < seq_len={self.seq_len}")
        if (self.distill_weight > 0 and self.lm_weight == 0 and self.transfer_weight == 0 and self.data == "passkey-retrieval"
                and self.read_weight == self.write_weight == self.probe_weight == 0):
            raise ValueError("recipe key lm_weight=0: the retrieval micro-batches have no loss (distill_weight acts on "
                             "the text ones); keep lm_weight > 0 or set read_weight / write_weight / probe_weight")
        if self.distill_weight > 0 and self.data == "passkey-retrieval" and not self.retrieval_text:
            raise ValueError("recipe key distill_weight: with data=passkey-retrieval it acts on the text "
                             "micro-batches; set retrieval_text (e.g. retrieval_text=shakespeare)")
        if self.data == "passkey-retrieval":
            parse_curriculum(self.retrieval_curriculum)
            if self.batching != "packed" or self.rsp_prob > 0:
                raise ValueError("recipe key data=passkey-retrieval: examples are independent; needs "
                                 "batching=packed and rsp_prob=0")
            if not 0.0 <= self.retrieval_p_inwindow <= 1.0 or self.retrieval_d_min < 1 or self.retrieval_heads < 1:
                raise ValueError("recipe keys retrieval_p_inwindow / retrieval_d_min / retrieval_heads: need "
                                 "0 <= p <= 1, d_min >= 1, heads >= 1")
            for key in ("retrieval_p_boundary", "retrieval_depth"):
                if not 0.0 <= getattr(self, key) <= 1.0:
                    raise ValueError(f"recipe key {key}={getattr(self, key)}: must be in [0, 1]")
            if self.retrieval_text and self.grad_accum % 2:
                raise ValueError(f"recipe key retrieval_text={self.retrieval_text!r}: every other micro-batch is "
                                 f"text, so grad_accum must be even (got {self.grad_accum})")
        else:
            for key, off in (("retrieval_text", ""), ("retrieval_p_boundary", 0.0), ("retrieval_depth", 0.0)):
                if getattr(self, key) != off:
                    raise ValueError(f"recipe key {key}={getattr(self, key)!r}: needs data=passkey-retrieval "
                                     f"(got data={self.data!r})")
        for key in ("read_weight", "write_weight", "probe_weight"):
            value = getattr(self, key)
            if value < 0:
                raise ValueError(f"recipe key {key}={value}: must be >= 0")
            if value > 0:
                # the heads come from the original model (adapters off); the supervision writes and probes
                # a head's own layer's FAM, which O6's readers do not read, and supervises reads in any
                # block, block 0's included (O7 has none there)
                needs = {"data": "passkey-retrieval", "attention_mode": "fam", "finetune": "lora",
                         "fam_read_gate": False, "fam_read_shift": False, "fam_skip_initial_read": False}
                for need, want in needs.items():
                    if getattr(self, need) != want:
                        raise ValueError(f"recipe key {key}={value}: needs {need}={want} (got {getattr(self, need)!r})")
        if self.init == "pretrained" and not self.base_model:
            raise ValueError("recipe key base_model: required with init=pretrained")
        if self.init_adapter and self.finetune != "lora":
            raise ValueError(f"recipe key init_adapter={self.init_adapter!r}: needs finetune=lora "
                             f"(got {self.finetune!r})")
        if self.finetune == "lora" and self.init != "pretrained":
            raise ValueError("recipe key finetune=lora: needs init=pretrained (LoRA adapts pretrained weights)")
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"recipe key preset={self.preset!r}: must be one of {', '.join(PRESETS)}")
        return self

    def write_gate_reset_layers(self, n_layers: int | None, supervised: set[int] = frozenset()) -> list[int]:
        """The layers ``fam_write_gate_reset`` names, for a model of ``n_layers`` whose supervised heads
        sit in the layers ``supervised``; ValueError (one line) on a bad spec or a layer out of range.
        ``n_layers=None`` (before the model is built) checks the spec's form only: an explicit list
        comes back unchecked for range, "all" / "unsupervised" as []."""
        key, spec = f"recipe key fam_write_gate_reset={self.fam_write_gate_reset}", self.fam_write_gate_reset
        if spec in ("", "all", "unsupervised"):
            if not spec or n_layers is None:
                return []
            return [i for i in range(n_layers) if spec == "all" or i not in supervised]
        try:
            layers = sorted({int(x) for x in spec.split(",")})
        except ValueError:
            raise ValueError(f"{key}: expected all, unsupervised or layer indices like 0,1,4") from None
        if layers[0] < 0:
            raise ValueError(f"{key}: layer indices must be >= 0")
        if n_layers is not None and layers[-1] >= n_layers:
            raise ValueError(f"{key}: layer {layers[-1]} does not exist (the model has {n_layers} layers)")
        return layers

    def _validate_write_gate_reset(self) -> None:
        key, spec = f"recipe key fam_write_gate_reset={self.fam_write_gate_reset}", self.fam_write_gate_reset
        self.write_gate_reset_layers(None)  # the spec's form; the layers' range once the model is built
        if not self.fam_write_gate:
            raise ValueError(f"{key}: resets option O4's write gates; needs fam_write_gate=true")
        if not self.init_adapter:
            raise ValueError(f"{key}: resets the gates an init_adapter brings (new gates start at zero); "
                             "set init_adapter")
        if spec == "unsupervised" and self.read_weight <= 0 and self.write_weight <= 0:
            raise ValueError(f"{key}: keeps the layers of the supervised heads, which needs read_weight > 0 "
                             "or write_weight > 0")

    def _validate_text_prefix(self) -> None:
        """``text_prefix``: text rows of text_prefix + seq_len tokens, the prefix streamed without
        gradient (its FAM state carried into the trained part): a whole number of blocks, on text."""
        n = self.text_prefix
        if n < 0 or n % self.block_size:
            raise ValueError(f"recipe key text_prefix={n}: must be a whole number of blocks "
                             f"(block_size={self.block_size}) and >= 0")
        if self.data == "passkey" or (self.data == "passkey-retrieval" and not self.retrieval_text):
            raise ValueError(f"recipe key text_prefix={n}: acts on text micro-batches, but data={self.data!r}"
                             + (" has none; set retrieval_text" if self.data == "passkey-retrieval" else ""))
        for key, value in (("batching", "packed"), ("rsp_prob", 0.0), ("transfer_weight", 0.0)):
            if getattr(self, key) != value:
                raise ValueError(f"recipe key text_prefix={n}: needs {key}={value} (got {getattr(self, key)!r})")


def parse_curriculum(spec: str) -> list[tuple[int, int]]:
    """``"1:0,2:150"`` -> [(0, 1), (150, 2)]: (first step, largest distance D in blocks), sorted;
    the first entry must start at step 0."""
    try:
        stages = sorted((int(s), int(d)) for d, s in (x.split(":") for x in spec.split(",") if x.strip()))
    except ValueError:
        raise ValueError(f"retrieval_curriculum={spec!r}: expected D:step,... (e.g. 1:0,2:150)") from None
    if not stages or stages[0][0] != 0 or any(d < 1 or s < 0 for s, d in stages):
        raise ValueError(f"retrieval_curriculum={spec!r}: needs a stage at step 0, distances >= 1, steps >= 0")
    return stages


# Flan-PaLM shapes of docs/algorithm.md §7 (SwiGLU FFN, shared 256k embeddings as in PaLM).
PRESETS: dict[str, dict] = {
    "flan-palm-1b": dict(num_hidden_layers=18, hidden_size=1536, num_attention_heads=12,
                         intermediate_size=8 * 1536, vocab_size=256000, tie_word_embeddings=True),
    "flan-palm-8b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                         intermediate_size=4 * 4096, vocab_size=256000, tie_word_embeddings=True),
    "flan-palm-24b": dict(num_hidden_layers=56, hidden_size=4096, num_attention_heads=32, num_key_value_heads=1,
                          intermediate_size=8 * 4096, vocab_size=256000, tie_word_embeddings=True),
}
# paper FAM defaults for the presets: block 1024, 3 memory segments, 64 FAM vectors
PAPER_FAM = dict(attention_mode="fam", block_size=1024, mem_segments=3, fam_length=64)


def preset_config(name: str, **overrides):
    """A FamConfig of a paper-shaped preset (see PRESETS) with the paper's FAM defaults."""
    from ..core.config import FamConfig

    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: must be one of {', '.join(PRESETS)}")
    return FamConfig(**{**PAPER_FAM, **PRESETS[name], **overrides})


def _check_type(key: str, value, annotation):
    hint = eval(annotation, {}) if isinstance(annotation, str) else annotation  # noqa: S307 (builtins only)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"recipe key {key}={value!r}: expected {hint.__name__}, got {type(value).__name__}")


def recipe_from_dict(values: dict, source: str = "recipe") -> Recipe:
    """Build and validate a Recipe; unknown keys / wrong types raise ValueError naming the key."""
    known = {f.name: f for f in fields(Recipe)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            near = [k for k in known if k.startswith(str(key)[:3])]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"{source}: unknown key {key!r}{hint}")
        kwargs[key] = _check_type(key, value, known[key].type)
    return Recipe(**kwargs).validate()


def parse_overrides(items: list[str]) -> dict:
    """``["lr=3e-4", "bf16=true"]`` -> ``{"lr": 0.0003, "bf16": True}`` (values parsed as YAML;
    a string key keeps its raw text, so ``data=123`` stays the name "123")."""
    string_keys = {f.name for f in fields(Recipe) if f.type == "str"}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        if key in string_keys:
            out[key] = raw
            continue
        try:
            out[key] = yaml.safe_load(raw)
        except Exception:  # not YAML (or a YAML tag that fails): keep the text, the type check names the key
            out[key] = raw
    return out


def recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if str(name_or_path).endswith((".yaml", ".yml")) or path.exists():  # ".yaml" alone has no suffix
        if not path.is_file():
            raise FileNotFoundError(f"recipe {name_or_path!r}: no such file")
        return path
    bundled = RECIPE_DIR / f"{name_or_path}.yaml"
    if not bundled.exists():
        names = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"recipe {name_or_path!r}: not a YAML file nor a bundled recipe ({names})")
    return bundled


def load_recipe(name_or_path: str, overrides: list[str] | dict | None = None) -> Recipe:
    """A bundled recipe name or YAML path, then ``key=value`` overrides."""
    path = recipe_path(name_or_path)
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path}: expected a mapping of key: value")
    values = {**values, **(parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {}))}
    return recipe_from_dict(values, source=f"recipe {path.name}")


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)

