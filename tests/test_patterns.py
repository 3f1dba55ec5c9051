"""The README figure is drawn from the model's own BlockPlan mask: check it against the reference masks."""

import numpy as np
import pytest

from reference import reference_bswa_mask
from transformer_fam.core.patterns import token_pattern


@pytest.mark.parametrize("T,L,m", [(24, 6, 1), (23, 4, 2), (10, 5, 0)])
def test_bswa_pattern_matches_reference(T, L, m):
    pat = token_pattern("bswa", T, L, m, 0)
    np.testing.assert_array_equal(pat > 0, reference_bswa_mask(T, L, m).numpy())


def test_fam_pattern_is_bswa_plus_the_previous_fam():
    T, L, m, F = 24, 6, 1, 2
    fam, bswa = token_pattern("fam", T, L, m, F), token_pattern("bswa", T, L, m, 0)
    np.testing.assert_array_equal(fam[:, F:] > 0, bswa > 0)
    for t in range(T):  # every query of block b reads FAM vectors made from block b - 1 (code 2 + b)
        assert (fam[t, :F] == 2 + t // L).all()


def test_full_pattern_is_causal():
    np.testing.assert_array_equal(token_pattern("full", 7, 3, 1, 2)[:, 2:], np.tril(np.ones((7, 7))))
