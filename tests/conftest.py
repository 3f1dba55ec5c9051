"""Test-session settings: the unit tests use tiny models, for which one intra-op thread is
fastest and immune to the spin-wait slowdowns of an oversubscribed machine."""

import torch

torch.set_num_threads(1)
