"""Settings and fixtures shared by every test folder."""

import gzip
import random
from pathlib import Path

import pytest
import torch

DHS = Path(__file__).resolve().parents[1] / "data" / "dna_dhs_human_200bp_16k.tsv.gz"

# Tests run tiny models, which gain nothing from intra-op threads; on a shared, loaded machine the
# threads' barriers made a 16-wide transformer's forward pass 40x slower (65 ms instead of 1.4 ms).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Start every test from the same RNG state, so a tolerance that holds once holds every run."""
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def dhs_table(tmp_path_factory) -> Path:
    """40 real DHS rows (every 400th of the shipped file): all four cell types, all splits."""
    with gzip.open(DHS, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    path = tmp_path_factory.mktemp("dhs") / "dhs.tsv"
    path.write_text("\n".join([lines[0], *lines[1::400]]) + "\n")
    return path
