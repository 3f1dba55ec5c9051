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
