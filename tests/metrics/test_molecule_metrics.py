"""Molecule metrics against RDKit computed by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from seiko.metrics import (
    InternalDiversity,
    MoleculeNovelty,
    MoleculeUniqueness,
    MoleculeValidity,
    canonical_smiles,
)
from seiko.metrics import molecules as molecule_metrics

ETHANOL, PHENOL, ASPIRIN = "CCO", "Oc1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"


def bulk_tanimoto_diversity(smiles: list[str]) -> float:
    """1 - mean over distinct pairs of RDKit's BulkTanimotoSimilarity (Morgan r2, 2048 bits)."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    similarities = [
        DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1 :]) for i in range(len(fps) - 1)
    ]
    flat = list(itertools.chain.from_iterable(similarities))
    return 1.0 - sum(flat) / len(flat)


def test_canonical_smiles():
    assert canonical_smiles("OCC") == canonical_smiles("C(O)C") == "CCO"
    assert canonical_smiles("C1CC") is None  # unclosed ring
    assert canonical_smiles("") is None  # parses to a molecule without atoms


def test_internal_diversity_of_three_molecules_matches_rdkit():
    # BulkTanimotoSimilarity gives s(ethanol, phenol), s(ethanol, aspirin), s(phenol, aspirin);
    # the diversity is 1 - their mean.
    metric = InternalDiversity()
    metric.update([ETHANOL, "not a smiles", None])
    metric.update([PHENOL, ASPIRIN])
    expected = bulk_tanimoto_diversity([ETHANOL, PHENOL, ASPIRIN])
    assert 0.0 < expected < 1.0
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


def test_internal_diversity_keeps_duplicates_and_is_nan_below_two_molecules():
    metric = InternalDiversity()
    metric.update([ETHANOL, "OCC", PHENOL])  # ethanol twice, in two spellings
    expected = bulk_tanimoto_diversity([ETHANOL, ETHANOL, PHENOL])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    single = InternalDiversity()
    single.update([ETHANOL, "not a smiles"])
    assert single.compute().isnan()


def test_internal_diversity_in_row_blocks_equals_one_block(monkeypatch):
    smiles = [ETHANOL, PHENOL, ASPIRIN, "c1ccncc1", "CCN(CC)CC"]
    whole = InternalDiversity()
    whole.update(smiles)
    expected = whole.compute().item()
    monkeypatch.setattr(molecule_metrics, "SIMILARITY_BLOCK_ENTRIES", 10)  # 2 rows per block
    blocked = InternalDiversity()
    blocked.update(smiles)
    assert blocked.compute().item() == pytest.approx(expected, abs=1e-7)
    assert expected == pytest.approx(bulk_tanimoto_diversity(smiles), abs=1e-6)


def test_internal_diversity_merged_across_ranks_counts_cross_rank_pairs():
    rank0, rank1 = InternalDiversity(), InternalDiversity()
    rank0.update([ETHANOL])
    rank1.update([PHENOL, ASPIRIN])
    rank0.merge_state(rank1)
    expected = bulk_tanimoto_diversity([ETHANOL, PHENOL, ASPIRIN])
    assert rank0.compute().item() == pytest.approx(expected, abs=1e-6)


def test_molecule_validity_uniqueness_novelty_by_hand():
    smiles = [ETHANOL, "OCC", PHENOL, "C1CC", None, ASPIRIN]
    validity = MoleculeValidity()
    validity.update(smiles)
    assert validity.compute().item() == pytest.approx(4 / 6)
    uniqueness = MoleculeUniqueness()
    uniqueness.update(smiles)
    assert uniqueness.compute().item() == pytest.approx(3 / 4)  # ethanol spelled twice
    # Reference spelled differently from the designs; distinct valid: ethanol, phenol, aspirin.
    novelty = MoleculeNovelty(reference=["C(O)C", "c1ccccc1O"])
    novelty.update(smiles)
    assert novelty.compute().item() == pytest.approx(1 / 3)


def test_molecule_novelty_rejects_an_invalid_reference():
    with pytest.raises(ValueError, match="1 of 2 reference designs are infeasible, e.g. 'C1CC'"):
        MoleculeNovelty(reference=[ETHANOL, "C1CC"])


def test_internal_diversity_states_are_typed_for_ddp():
    metric = InternalDiversity()
    assert metric.fingerprints[0].dtype == torch.uint8
    assert metric.fingerprints[0].shape == (0, 256)
    metric.update([ETHANOL])
    metric.reset()
    assert [f.shape for f in metric.fingerprints] == [(0, 256)]
