"""The shipped DNA, RNA and protein priors (models/<domain>/prior.ckpt): small, slim, and they
load with ``LightningModule.load_from_checkpoint`` and sample valid sequences."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from seiko.datamodules.sequences import ALPHABETS
from seiko.lightning_modules.biosequences import DNADiffusion, ProteinDiffusion, RNADiffusion

ROOT = Path(__file__).resolve().parents[2]
#: domain -> (class, padded length)
PRIORS = {
    "dna": (DNADiffusion, 200),
    "rna": (RNADiffusion, 96),
    "protein": (ProteinDiffusion, 256),
}
DNA_LABELS = ["GM12878_ENCLB441ZZZ", "HepG2_ENCLB029COU", "K562_ENCLB843GMH", "hESCT0_ENCLB449ZZZ"]


@pytest.mark.parametrize("domain", sorted(PRIORS))
def test_shipped_prior_is_small_and_slim(domain):
    path = ROOT / "models" / domain / "prior.ckpt"
    assert path.stat().st_size < 10 * 2**20
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert "optimizer_states" not in checkpoint and "callbacks" not in checkpoint
    assert checkpoint["hyper_parameters"]["pretrained_checkpoint"] is None
    assert checkpoint["hyper_parameters"]["mode"] == "pretrain"


@pytest.mark.parametrize("domain", sorted(PRIORS))
def test_shipped_prior_loads_and_samples_valid_sequences(domain):
    cls, seq_len = PRIORS[domain]
    torch.manual_seed(0)
    model = L.LightningModule.load_from_checkpoint(
        ROOT / "models" / domain / "prior.ckpt", map_location="cpu"
    )
    assert type(model) is cls
    assert model.seq_len == seq_len
    generator = torch.Generator().manual_seed(0)
    cond = model.label_ids(model.labels) if domain == "dna" else None
    x = model.sample(4, cond=cond, generator=generator)
    assert x.shape == (4, seq_len, len(model.vocabulary))
    assert torch.isfinite(x).all()
    designs = model.decode(x)
    letters = set(ALPHABETS[domain])
    for design in designs:
        assert isinstance(design, str) and design
        assert set(design) <= letters, design
    if domain == "dna":
        assert model.labels == DNA_LABELS
        assert all(len(d) == 200 for d in designs)
    else:
        assert model.pad_symbol == "-"
        assert all(len(d) <= seq_len for d in designs)
    # decode(encode(s)) == s: the designs are valid inputs of the model again
    assert model.decode(model.encode(designs)) == designs
