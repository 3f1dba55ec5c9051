"""The paper's training-time techniques (docs/algorithm.md, rules T1-T2), outside the model.

- Random Position Offset (T1): each step's stream starts at a random absolute position, drawn
  uniformly in [0, 2*pi*rope_theta) and set to 0 with probability 0.5.
- Random State Passing (T2): at the end of a step the FAM of the first batch row is kept
  (detached, per layer); the next step starts from it with probability p, else from the learned
  initial FAM.

Both act by building the FamCache a step starts from; the model itself has no training-only state.
"""

from __future__ import annotations

import math

import torch

from ..core.cache import FamCache


def random_position_offset(rope_theta: float) -> int:
    """One step's offset (rule T1): 0 with probability 0.5, else uniform in [0, 2*pi*rope_theta).
    Uses torch's global generator (two draws at most), so seeded runs repeat."""
    if torch.rand(()) >= 0.5:
        return int(torch.randint(0, int(2 * math.pi * rope_theta), ()))
    return 0


class RandomStatePassing:
    """Rule T2. ``start(config, offset)`` gives the cache a step starts from (carrying the saved
    FAM with probability ``prob``); ``save(cache)`` keeps the FAM the step ended with.

    Args:
        prob: p, the probability of starting from the saved FAM (paper: 0.8); 0 turns RSP off.
    """

    def __init__(self, prob: float):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"rsp_prob={prob}: must be a probability in [0, 1]")
        self.prob = prob
        self.state: list[torch.Tensor] | None = None  # per layer (1, F, d), detached

    @property
    def active(self) -> bool:
        return self.prob > 0

    def start(self, config, position_offset: int = 0) -> FamCache:
        if self.active and self.state is not None and torch.rand(()) < self.prob:
            return FamCache.from_fam_state(config, self.state, position_offset)
        return FamCache(config, position_offset)

    def save(self, cache: FamCache) -> None:
        if self.active:
            self.state = [f[:1].detach() for f in cache.fam_state()]


def start_cache(config, rsp: RandomStatePassing | None, position_offset: bool) -> FamCache | None:
    """The cache a fresh training step starts from, or None when neither technique is on
    (the model then builds a plain one). The offset is drawn before the RSP coin, the order these
    draws have always had here, so seeded runs repeat their earlier trajectories."""
    offset = random_position_offset(config.rope_theta) if position_offset else 0
    if rsp is not None and rsp.active:
        return rsp.start(config, offset)
    return FamCache(config, offset) if offset else None
