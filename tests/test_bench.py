"""The benchmark's FLOP accounting (its MFU numbers) against the model's own attention pattern."""

import pytest

from transformer_fam.experiments.bench import attended_keys
from transformer_fam.core.patterns import token_pattern


@pytest.mark.parametrize("impl,T,L,m,F", [("full", 23, 4, 1, 2), ("bswa", 23, 4, 1, 0), ("bswa", 40, 8, 3, 0),
                                          ("fam", 23, 4, 1, 2), ("fam", 37, 6, 2, 3)])
def test_attended_keys_match_the_attention_pattern(impl, T, L, m, F):
    pattern = token_pattern("full" if impl == "full" else impl, T, L, m, F)
    assert attended_keys(impl, T, L, m, F) == (pattern > 0).sum()
