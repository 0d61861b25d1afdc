"""Settings and fixtures shared by every test folder."""

import random

import pytest
import torch

# Tests run tiny models, which gain nothing from intra-op threads; on a shared, loaded machine the
# threads' barriers made a 16-wide transformer's forward pass 40x slower (65 ms instead of 1.4 ms).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Start every test from the same RNG state, so a tolerance that holds once holds every run."""
    random.seed(0)
    torch.manual_seed(0)
