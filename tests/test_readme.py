"""The README's first code example runs as written (and its claims hold)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_use_example_runs_and_streaming_matches():
    block = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    model, ids, cache = scope["model"], scope["ids"], scope["cache"]
    assert cache.get_seq_length() == ids.shape[1]
    with torch.no_grad():  # the streamed last chunk equals the same positions of one call
        whole = model(ids).logits[:, -(ids.shape[1] % 17 or 17):]
    torch.testing.assert_close(scope["out"].logits, whole, atol=1e-4, rtol=0)


def test_readme_stream_and_carried_fam_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    scope = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    exec(compile(blocks[1], "README.md", "exec"), scope)
    cache, out, model = scope["cache"], scope["out"], scope["model"]
    assert out.logits.shape == (1, 10, 256) and cache.seen_tokens == 10
    with torch.no_grad():  # the carried FAM changes what the block reads: not the fresh-stream logits
        fresh = model(scope["ids"][:, :10]).logits
    assert (out.logits - fresh).abs().max() > 1e-4
