"""benchmarks/commit_adapter.py: the committed copy of a LoRA run holds its LoRA weights cast to bfloat16
(values equal to the cast, names unchanged), the FAM prompt and configs byte for byte, the run's recipe
and metrics; a folder without a final adapter is a one-line error."""

import runpy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "commit_adapter.py"


def _run(tmp_path):
    run = tmp_path / "run"
    adapter = run / "final" / "adapter"
    adapter.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    weights = {"base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(4, 16, generator=g),
               "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(16, 4, generator=g) * 1e-3}
    save_file(weights, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    save_file({"fam_prompt": torch.randn(2, 16, generator=g)}, str(adapter / "fam_prompt.safetensors"))
    (adapter / "adapter_config.json").write_text('{"r": 4}\n')
    (adapter / "fam.json").write_text('{"block_size": 128}\n')
    (run / "recipe.yaml").write_text("max_steps: 5\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    return run, weights


def test_commit_adapter_casts_lora_and_copies_the_rest(tmp_path):
    run, weights = _run(tmp_path)
    dest = tmp_path / "dest"
    runpy.run_path(str(SCRIPT))["main"]([str(run), str(dest)])
    got = load_file(str(dest / "adapter_model.safetensors"))
    assert got.keys() == weights.keys()
    for k, v in weights.items():
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], v.to(torch.bfloat16))
    adapter = run / "final" / "adapter"
    for name in ("fam_prompt.safetensors", "adapter_config.json", "fam.json"):
        assert (dest / name).read_bytes() == (adapter / name).read_bytes()
    for name in ("recipe.yaml", "metrics.jsonl"):
        assert (dest / name).read_bytes() == (run / name).read_bytes()


def test_commit_adapter_refuses_a_run_without_final_adapter(tmp_path):
    with pytest.raises(SystemExit, match=r"adapter_model.safetensors not found \(is .* a finished LoRA run\?\)"):
        runpy.run_path(str(SCRIPT))["main"]([str(tmp_path), str(tmp_path / "dest")])
