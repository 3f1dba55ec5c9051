"""Loading is safe: a checkpoint file that would run code when unpickled is refused, not executed."""

import json
import os
import pickle

import pytest
import torch

from transformer_fam.training import checkpoint as ckpt
from transformer_fam import FamForCausalLM


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(tmp_path, step=1):
    out = tmp_path / "run"
    ckpt.begin(out, step)
    tmp = ckpt.checkpoint_root(out) / f"step-{step:08d}.tmp"
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ckpt.write_rank_state(tmp, 0, {"rng": ckpt.rng_state(), "rsp_state": None, "cache": None})
    ckpt.write_main(tmp, model.state_dict(), opt.state_dict(), sched.state_dict(),
                    {"step": step, "batches_consumed": step, "world_size": 1, "batching": "packed"})
    return out, ckpt.commit(tmp, keep_last_n=5)


def _poison(folder, name, marker):
    torch.save({"state": _Exploit(marker)}, folder / name)
    manifest = json.loads((folder / "manifest.json").read_text())  # a forger also fixes the checksums
    manifest[name] = {"bytes": (folder / name).stat().st_size, "sha256": ckpt._sha256(folder / name)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rank0.pt"])
def test_malicious_pickle_in_a_checkpoint_is_not_executed(tmp_path, name):
    out, folder = _checkpoint(tmp_path)
    assert ckpt.read(folder, 0)["trainer"]["step"] == 1  # the honest checkpoint loads
    marker = tmp_path / "pwned"
    _poison(folder, name, marker)
    messages = []
    assert ckpt.read_newest_good(out, 0, log=messages.append) is None
    assert not marker.exists()
    assert messages and "unusable" in messages[0]
    torch.load(folder / name, weights_only=False)  # the exploit is real: a plain load runs it
    assert marker.exists()


def test_model_weights_are_read_through_safetensors_only(tmp_path):
    from helpers import tiny

    model = tiny("fam")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    marker = tmp_path / "pwned"
    with open(tmp_path / "pytorch_model.bin", "wb") as fh:  # a pickle beside the safetensors file
        pickle.dump({"w": _Exploit(marker)}, fh)
    FamForCausalLM.from_pretrained(tmp_path)
    assert not marker.exists()
