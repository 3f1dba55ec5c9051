"""The fine-tuned models that ship with the package (hf/bundled/): `--model smollm2-fam` is the
bundled LoRA adapter on SmolLM2-135M-Instruct, merged, offline; small enough to ship; and it finds
a pass key 16x beyond its 128-token window (slow)."""

import json
from pathlib import Path

import pytest
import torch

from transformer_fam.hf.loading import load_model
from transformer_fam.hf.lora import load_lora
from transformer_fam.hf.smollm2 import BUNDLED_DIR, bundled_names, bundled_shape, smollm2

FOLDER = BUNDLED_DIR / "smollm2-fam"


def test_smollm2_fam_ships_small_and_loads_offline():
    assert "smollm2-fam" in bundled_names()
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 20 * 2**20  # issue 13: <= 20 MB
    shape = bundled_shape(json.loads((FOLDER / "fam.json").read_text()))  # the shape and the options used
    model, tokenizer = load_model("smollm2-fam", dtype="float32")
    for key, value in shape.items():
        assert getattr(model.config, key) == value
    assert tokenizer.decode(tokenizer("The pass key is 12345.")["input_ids"]) == "The pass key is 12345."
    # the merged model computes what the unmerged adapter on a fresh conversion computes
    base = smollm2(**shape)
    reference = load_lora(base, FOLDER)
    ids = torch.randint(0, model.config.vocab_size, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, reference(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0)
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.99
    # and the adapter is not a no-op: the converted model without it differs
    plain = smollm2(**shape)
    with torch.no_grad():
        assert (plain(input_ids=ids).logits - ours).abs().max() > 1.0
    bswa, _ = load_model("smollm2-fam", attention_mode="bswa", dtype="float32")
    assert bswa.config.attention_mode == "bswa"


def test_unknown_model_names_the_bundled_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: no such folder \\(nor a bundled model: smollm2, smollm2-fam"):
        load_model(str(tmp_path / "nope"))


@pytest.mark.slow
def test_smollm2_fam_finds_a_pass_key_16x_beyond_its_window():
    from transformer_fam.evaluation.passkey import evaluate_passkey

    model, tokenizer = load_model("smollm2-fam", dtype="float32")
    window = (model.config.mem_segments + 1) * model.config.block_size
    acc = evaluate_passkey(model, tokenizer, [16 * window], samples=10, seed=1, progress=False)
    assert acc[str(16 * window)] >= 0.8


def test_bundled_options_reach_the_conversion():
    """fam.json may name the options a fine-tune used, list-valued ones included (O5's heads); the
    conversion then builds the model with them, and absent options stay off (the paper)."""
    meta = {"attention_mode": "fam", "block_size": 128, "mem_segments": 0, "fam_length": 16,
            "fam_write_gate": True, "fam_read_heads": [[17, 3], [18, 6]], "trained_by": "someone"}
    shape = bundled_shape(meta)
    assert shape == {k: v for k, v in meta.items() if k != "trained_by"}
    model = smollm2(**shape)
    assert model.config.fam_read_heads == [[17, 3], [18, 6]] and model.model.layers[0].fam_write_gate is not None
    assert model.config.fam_readers(17) == [3] and model.config.fam_readers(0) == []
    assert smollm2(**bundled_shape({k: meta[k] for k in ("attention_mode", "block_size", "mem_segments",
                                                          "fam_length")})).config.fam_read_heads is None


def test_an_adapter_folder_loads_by_path_and_its_fam_json_round_trips(tmp_path):
    """A SmolLM2 fine-tune saved as its adapter alone (fam.json + peft files) loads with --model PATH,
    the same model as the bundled name; adapter_meta writes back the bundled fam.json; a fam.json of
    another base is refused in one line."""
    from transformer_fam.hf.smollm2 import adapter_meta, is_adapter_folder

    folder = tmp_path / "copy"
    folder.mkdir()
    for p in FOLDER.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    assert is_adapter_folder(folder) and not is_adapter_folder(tmp_path)
    by_path, tokenizer = load_model(str(folder), dtype="float32")
    by_name, _ = load_model("smollm2-fam", dtype="float32")
    ids = torch.randint(0, by_name.config.vocab_size, (1, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(by_path(input_ids=ids).logits, by_name(input_ids=ids).logits)
    assert tokenizer("The pass key is 12345.")["input_ids"] == load_model("smollm2-fam")[1](
        "The pass key is 12345.")["input_ids"]
    assert adapter_meta(by_name.config) == json.loads((FOLDER / "fam.json").read_text())
    assert load_model(str(folder), attention_mode="bswa")[0].config.attention_mode == "bswa"
    (folder / "fam.json").write_text(json.dumps({"base": "llama", "attention_mode": "fam", "block_size": 128,
                                                 "mem_segments": 0, "fam_length": 16}))
    with pytest.raises(ValueError, match="fam.json: base 'llama'; only smollm2 adapters load by folder"):
        load_model(str(folder))


def test_fam_train_on_smollm2_saves_an_adapter_folder_that_loads_by_path(tmp_path):
    """OUT/final/adapter of a LoRA fine-tune of SmolLM2 carries its fam.json (shape and options), so
    --model OUT/final/adapter gives the merged OUT/final model."""
    from transformer_fam.training.recipe import load_recipe
    from transformer_fam.training.trainer import train

    text = tmp_path / "t.txt"
    text.write_text("The grass is green and the sky is blue. " * 200)
    keys = [f"out_dir={tmp_path / 'run'}", f"data={text}", "seq_len=80", "batch_size=1", "grad_accum=1",
            "max_steps=1", "block_size=32", "mem_segments=0", "fam_length=4", "lora_rank=4", "rsp_prob=0",
            "random_position_offset=false", "bf16=false", "activation_checkpointing=false", "warmup_steps=0",
            "fam_write_gate=true", "fam_read_heads=3.1,7.2", "tensorboard=false", "progress=false", "lr=0.01"]
    assert train(load_recipe("smollm2-fam-lora", keys)) == 0
    adapter = tmp_path / "run" / "final" / "adapter"
    assert json.loads((adapter / "fam.json").read_text()) == {
        "base": "smollm2", "attention_mode": "fam", "block_size": 32, "mem_segments": 0, "fam_length": 4,
        "fam_write_gate": True, "fam_read_heads": [[3, 1], [7, 2]]}
    by_path, _ = load_model(str(adapter), dtype="float32")
    merged, _ = load_model(str(tmp_path / "run" / "final"), dtype="float32")
    plain = smollm2(attention_mode="fam", block_size=32, mem_segments=0, fam_length=4)
    ids = torch.randint(0, merged.config.vocab_size, (1, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = by_path(input_ids=ids).logits, merged(input_ids=ids).logits
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        assert (plain(input_ids=ids).logits - theirs).abs().max() > 1e-3  # the step changed the model


def test_smollm2_fam_is_the_run_its_numbers_were_measured_on():
    """README and the bundled README report R20b's evaluations of benchmarks/adapters/smollm2-r20b/fama:
    the shipped files must be those, byte for byte (shipping another adapter means new numbers), and
    fam.json R20b's with option O7 switched on (measured with `--fam-skip-initial-read on`)."""
    measured = Path(__file__).parents[1] / "benchmarks" / "adapters" / "smollm2-r20b" / "fama"
    for name in ("adapter_model.safetensors", "fam_prompt.safetensors", "adapter_config.json"):
        assert (FOLDER / name).read_bytes() == (measured / name).read_bytes(), name
    trained = json.loads((measured / "fam.json").read_text())
    assert "fam_skip_initial_read" not in trained  # R20b trained with the paper's read of the initial FAM
    assert json.loads((FOLDER / "fam.json").read_text()) == {**trained, "fam_skip_initial_read": True}
