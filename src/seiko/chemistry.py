"""RDKit helpers shared by the molecule datamodule, model, oracles, metrics and plots."""

from __future__ import annotations

from rdkit import Chem, rdBase


def parse_smiles(smiles: object) -> Chem.Mol | None:
    """RDKit molecule of a SMILES, or None for anything that is not a non-empty valid SMILES.

    Never raises and prints nothing (RDKit's parse errors are silenced): a design that is not a
    string, an empty string, whitespace or an unparsable string all give None. RDKit parses ""
    to a molecule with no atoms; that is None here too.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


def canonical_smiles(smiles: object) -> str | None:
    """RDKit's canonical SMILES of ``smiles``, or None if it is not a valid non-empty SMILES."""
    mol = parse_smiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


__all__ = ["canonical_smiles", "parse_smiles"]
