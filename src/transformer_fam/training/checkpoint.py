"""Training checkpoints: written atomically, verified on load, the last N kept.

A checkpoint is a folder ``OUT/checkpoints/step-00000123/`` holding

- ``model.safetensors``  the model's state dict; of a partly frozen model (LoRA) only the trained
  parameters and the buffers, with a sha256 of the frozen weights that loading checks (the frozen
  weights come from the base model again: SmolLM2 with rank-16 LoRA, ~20 MB instead of 670)
- ``optimizer.pt``, ``scheduler.pt``  their state dicts (loaded with ``weights_only=True``)
- ``trainer_state.json``  step, data position, world size
- ``rank{r}.pt``  per process: RNG states (torch, python, numpy, cuda), the Random State
  Passing FAM (``rsp_state``) and, in document-continuous batching, the carried FamCache
- ``manifest.json``  size and sha256 of every file, written last

Everything is written into ``step-….tmp`` and renamed with ``os.replace``, so a crash (even
SIGKILL) leaves either a whole checkpoint or a temp folder that is ignored. On load a checkpoint
whose files do not match its manifest is reported and the next older one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..core.cache import FamCache

STEP_DIR = re.compile(r"^step-(\d{8})$")


# ---------------------------------------------------------------------------------------------- state pieces
def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cache_to_dict(cache: FamCache | None) -> dict | None:
    """A FamCache as plain tensors and numbers (what ``torch.load(weights_only=True)`` accepts)."""
    return None if cache is None else cache.state_dict()


def cache_from_dict(state: dict | None, config, device) -> FamCache | None:
    return None if state is None else FamCache.from_state_dict(config, state, device)


FROZEN_KEY = "__frozen_sha256__"  # model.safetensors' metadata of a trainable-only checkpoint


def _frozen(model) -> list[tuple[str, torch.Tensor]]:
    """(state-dict name, tensor) of the frozen parameters, in state-dict order, tied copies included."""
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    return [(n, t) for n, t in model.state_dict(keep_vars=True).items() if id(t) in frozen]


def frozen_sha256(model) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the frozen parameters."""
    h = hashlib.sha256()
    for name, t in _frozen(model):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def trainable_state(model, sha: str | None = None) -> dict:
    """The state dict to checkpoint: everything, or, when some parameters are frozen (LoRA), everything
    but them, with their sha256 under FROZEN_KEY (a string; ``write_main`` puts it in the metadata).
    ``sha``: ``frozen_sha256(model)`` if already known (the frozen weights do not change in a run; hashing
    SmolLM2's takes ~2 s on a CPU)."""
    frozen = {n for n, _ in _frozen(model)}
    state = model.state_dict()
    if not frozen:
        return state
    kept = {n: t for n, t in state.items() if n not in frozen}
    kept[FROZEN_KEY] = sha or frozen_sha256(model)
    return kept


def load_trainable_state(model, state: dict) -> None:
    """Load what ``trainable_state`` saved (a full state dict too); one-line ValueError when it does not fit."""
    state = dict(state)
    saved_sha = state.pop(FROZEN_KEY, None)
    frozen = {n for n, _ in _frozen(model)}
    partial = saved_sha is not None
    try:
        missing, unexpected = model.load_state_dict(state, strict=not partial)
    except RuntimeError as err:  # "Error(s) in loading state_dict for ...:" then one line per problem
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else lines[0]
        raise ValueError(f"checkpoint weights do not fit this recipe's model: {detail}") from None
    if partial:
        if unexpected or set(missing) != frozen:
            names = (unexpected or sorted(set(missing) ^ frozen))[:3]
            raise ValueError(f"checkpoint weights do not fit this recipe's model: trained parameters differ "
                             f"({', '.join(names)})")
        if frozen_sha256(model) != saved_sha:
            raise ValueError("checkpoint was saved on other frozen weights (another base model or "
                             "conversion): its trained parameters do not apply to this recipe's model")


# ---------------------------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_root(out_dir) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir) -> list[Path]:
    """Complete checkpoint folders (temp folders excluded), newest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)), reverse=True)


def begin(out_dir, step: int) -> Path:
    """Create (fresh) the temp folder of the checkpoint of ``step``; call on one process."""
    tmp = checkpoint_root(out_dir) / f"step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_state(tmp: Path, rank: int, state: dict) -> None:
    torch.save(state, tmp / f"rank{rank}.pt")


def write_main(tmp: Path, model_state: dict, optimizer_state: dict, scheduler_state: dict, trainer_state: dict):
    from safetensors.torch import save_file

    # clone: tied weights share storage, which safetensors refuses; loading restores the tie
    meta = {FROZEN_KEY: model_state[FROZEN_KEY]} if FROZEN_KEY in model_state else None
    save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in model_state.items() if k != FROZEN_KEY},
              tmp / "model.safetensors", metadata=meta)
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler_state, tmp / "scheduler.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))


def commit(tmp: Path, keep_last_n: int) -> Path:
    """Write the manifest, rename the temp folder into place, drop checkpoints beyond the last N."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
    with open(tmp / "manifest.json", "w") as fh:
        json.dump(files, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(tmp.parent.parent)[keep_last_n:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path) -> None:
    """Raise ValueError if a file is missing or differs from the manifest."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise ValueError("no manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        raise ValueError("manifest.json is not valid JSON") from None
    for name, meta in manifest.items():
        path = folder / name
        if not path.exists():
            raise ValueError(f"{name} is missing")
        if path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
            raise ValueError(f"{name} does not match its checksum (corrupted or truncated)")


def _load_model_file(path: Path) -> dict:
    """model.safetensors as ``trainable_state`` wrote it (the frozen weights' sha256 back under FROZEN_KEY)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(path)
    with safe_open(path, "pt") as fh:
        meta = fh.metadata() or {}
    if FROZEN_KEY in meta:
        state[FROZEN_KEY] = meta[FROZEN_KEY]
    return state


def read(folder: Path, rank: int) -> dict:
    """Load and return everything of a verified checkpoint for process ``rank``."""
    verify(folder)
    state = json.loads((folder / "trainer_state.json").read_text())
    rank_file = folder / f"rank{rank}.pt"
    if not rank_file.exists():
        raise ValueError(f"has no state for process {rank} (saved with world size {state.get('world_size')})")
    return {"model": _load_model_file(folder / "model.safetensors"),
            "optimizer": torch.load(folder / "optimizer.pt", weights_only=True),
            "scheduler": torch.load(folder / "scheduler.pt", weights_only=True),
            "trainer": state,
            "rank": torch.load(rank_file, weights_only=True),
            "folder": folder}


def read_newest_good(out_dir, rank: int, log=print) -> dict | None:
    """The newest checkpoint that verifies and loads; older ones are tried after a clear message."""
    found = list_checkpoints(out_dir)
    for i, folder in enumerate(found):
        try:
            return read(folder, rank)
        except Exception as err:  # noqa: BLE001 — any unreadable file means: try the previous one
            nxt = found[i + 1].name if i + 1 < len(found) else None
            log(f"checkpoint {folder} is unusable ({err}); "
                + (f"falling back to {nxt}" if nxt else "no older checkpoint left"))
    return None
