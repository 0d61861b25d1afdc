"""ViennaRNA oracles for RNA: minimum free energy, structure match, ensemble defect.

Every oracle takes a list of RNA strings (the output of an RNA model's ``decode``) and returns a
(N,) float64 tensor. A design that is not a non-empty string of the upper-case letters A, C, G, U
(T, N, lower case, None, a non-string) is NaN, and so is, for the oracles with a target
structure, a design whose length differs from the target's; a design on which ViennaRNA fails is
NaN (logged). One bad design never fails the batch.

Energies are ViennaRNA's (Lorenz et al., Algorithms Mol. Biol. 2011; ``pip install viennarna``,
``import RNA``) with its defaults: Turner 2004 nearest-neighbour parameters, 37 degrees C,
dangles=2. For a sequence x of length n and a target dot-bracket structure s:

* MFE: the minimum free energy over all secondary structures of x, in kcal/mol (Zuker & Stiegler,
  Nucleic Acids Res. 1981), ``fold_compound(x).mfe()``. Lower is more stable.
* Structure match: 1 - d_bp(mfe_structure(x), s) / n, in [0, 1], 1 when x folds into s. d_bp is
  the base-pair distance (``RNA.bp_distance``): the number of base pairs in one structure but
  not in the other, at most n.
* Ensemble defect (Dirks et al., Nucleic Acids Res. 2004; Zadeh et al., J. Comput. Chem. 2011):
  the expected fraction of nucleotides in another state than in s under the Boltzmann ensemble,
  ED = 1 - (1/n) sum_i P(i is in its target state) with P = p_ij for a target pair (i, j) and
  1 - sum_j p_ij for a target-unpaired i; in [0, 1], lower is better
  (``fold_compound(x).ensemble_defect(s)`` after the partition function).

Targets are dot-brackets of '(', ')' and '.', or a tRNA's cloverleaf from the tRNA structure
table (TSV with columns ``id``, ``seq``, ``structure``, the Infernal tRNA1415G alignment, see
data/PROVENANCE.md) by ``target_id`` (its id, or a 0-based row number).
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import RNA
import torch
from torch import Tensor

log = logging.getLogger(__name__)

# seiko.datamodules.sequences.ALPHABETS["rna"], not imported from there: that pulls in Lightning
# (seconds), which an oracle in a worker process does not need.
RNA_ALPHABET = "ACGU"
_ALLOWED = re.compile(f"[{RNA_ALPHABET}]+")


def is_rna(design: Any) -> bool:
    """True for a non-empty string of upper-case A, C, G, U."""
    return isinstance(design, str) and _ALLOWED.fullmatch(design) is not None


def check_dot_bracket(structure: Any) -> str:
    """``structure`` itself if it is a balanced dot-bracket of '(', ')' and '.'.

    Raises:
        ValueError: naming the structure and the first offending (0-based) position.
    """
    if not isinstance(structure, str) or not structure:
        raise ValueError(f"target structure {structure!r} is not a non-empty dot-bracket string")
    expected = "expected a balanced dot-bracket string of '(', ')' and '.'"
    open_at: list[int] = []
    for position, char in enumerate(structure):
        if char == "(":
            open_at.append(position)
        elif char == ")":
            if not open_at:
                raise ValueError(
                    f"target structure {structure!r}: unmatched ')' at position {position}; "
                    f"{expected}"
                )
            open_at.pop()
        elif char != ".":
            raise ValueError(
                f"target structure {structure!r}: character {char!r} at position {position}; "
                f"{expected}"
            )
    if open_at:
        raise ValueError(
            f"target structure {structure!r}: unmatched '(' at position {open_at[-1]}; {expected}"
        )
    return structure


def read_structures(path: str | Path) -> list[dict[str, str]]:
    """Rows (``id``, ``seq``, ``structure``) of a tRNA structure table (TSV, gzipped or not).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RNA structure table {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = {"id", "seq", "structure"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: columns {sorted(missing)} missing; expected a TSV with columns id, seq, "
                f"structure, got {reader.fieldnames}"
            )
        return list(reader)


def load_target(path: str | Path, target_id: str | int) -> tuple[str, str, str]:
    """(id, sequence, structure) of one row of a structure table, by id or 0-based row number.

    Raises:
        ValueError: no row has that id, or the row number is out of range.
    """
    rows = read_structures(path)
    if isinstance(target_id, int):
        if not 0 <= target_id < len(rows):
            raise ValueError(f"target row {target_id} is out of range: {path} has {len(rows)} rows")
        row = rows[target_id]
    else:
        row = next((r for r in rows if r["id"] == target_id), None)
        if row is None:
            examples = [r["id"] for r in rows[:3]]
            raise ValueError(f"no row with id {target_id!r} in {path} (ids like {examples})")
    return row["id"], row["seq"], check_dot_bracket(row["structure"])


def _score_each(
    name: str, designs: Sequence[Any], valid: Callable[[Any], bool], score: Callable[[str], float]
) -> Tensor:
    values = []
    for design in designs:
        value = math.nan
        if valid(design):
            # Broad on purpose: one sequence that trips ViennaRNA must not fail the paid batch.
            try:
                value = float(score(design))
            except Exception as err:
                log.warning("%s: scoring %r failed (%s); NaN", name, design, err)
        values.append(value)
    return torch.tensor(values, dtype=torch.float64)


class MinimumFreeEnergy:
    """Minimum free energy of the sequence's secondary structure (kcal/mol).

    Args:
        negate: False: the MFE, lower (more stable) is better; True: -MFE, higher is better (the
            direction the online loop maximises).
    """

    def __init__(self, negate: bool = False) -> None:
        self.negate = negate
        self.name = "neg_mfe" if negate else "mfe"
        self.higher_is_better = negate

    def __repr__(self) -> str:
        return f"MinimumFreeEnergy(negate={self.negate})"

    def score(self, sequence: str) -> float:
        _, energy = RNA.fold_compound(sequence).mfe()
        return -energy if self.negate else energy

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values for N RNA strings, NaN where a design is not valid RNA."""
        return _score_each(self.name, designs, is_rna, self.score)


class _TargetOracle:
    """Shared set-up of the oracles that compare a design's folding with a target structure."""

    def __init__(
        self,
        target: str | None,
        target_id: str | int | None,
        targets_path: str | None,
        name: str,
    ) -> None:
        if (target is None) == (target_id is None):
            raise ValueError(
                f"{type(self).__name__} needs exactly one of target (a dot-bracket) and target_id "
                f"(a row of targets_path), got target={target!r}, target_id={target_id!r}"
            )
        self.target_sequence: str | None = None
        if target_id is not None:
            if targets_path is None:
                raise ValueError(f"target_id={target_id!r} needs targets_path (a structure table)")
            target_id, self.target_sequence, target = load_target(targets_path, target_id)
            name = f"{name}:{target_id}"
        self.target = check_dot_bracket(target)
        self.target_id = target_id
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"

    def fits(self, design: Any) -> bool:
        """A valid RNA string of the target's length."""
        return is_rna(design) and len(design) == len(self.target)

    def score(self, sequence: str) -> float:
        raise NotImplementedError

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values for N RNA strings, NaN where a design is invalid or misfits."""
        return _score_each(self.name, designs, self.fits, self.score)


class StructureMatch(_TargetOracle):
    """1 - base-pair distance between the MFE structure and the target / length, in [0, 1].

    Args:
        target: the target dot-bracket structure; or
        target_id: a row (id, or 0-based row number) of ``targets_path``, whose structure is the
            target (its sequence is kept as ``target_sequence``).
        targets_path: a TSV with columns id, seq, structure (the tRNA structure table).
        name: recorded with every answer (":<id>" is appended for a ``target_id``).

    Raises:
        ValueError: not exactly one of target / target_id, or a bad dot-bracket, naming it.
        FileNotFoundError: ``targets_path`` does not exist.
    """

    higher_is_better = True

    def __init__(
        self,
        target: str | None = None,
        target_id: str | int | None = None,
        targets_path: str | None = None,
        name: str = "structure_match",
    ) -> None:
        super().__init__(target, target_id, targets_path, name)

    def score(self, sequence: str) -> float:
        structure, _ = RNA.fold_compound(sequence).mfe()
        return 1.0 - RNA.bp_distance(structure, self.target) / len(sequence)


class EnsembleDefect(_TargetOracle):
    """Normalised ensemble defect to the target, in [0, 1] (or 1 - defect).

    Args:
        target, target_id, targets_path: as in ``StructureMatch``.
        complement: False: the defect, lower is better; True: 1 - defect, the expected fraction of
            nucleotides in their target state, higher is better.
        name: recorded with every answer; default ``"ensemble_defect"`` or
            ``"ensemble_accuracy"`` (complement), ":<id>" appended for a ``target_id``.

    Raises:
        ValueError: not exactly one of target / target_id, or a bad dot-bracket, naming it.
        FileNotFoundError: ``targets_path`` does not exist.
    """

    def __init__(
        self,
        target: str | None = None,
        target_id: str | int | None = None,
        targets_path: str | None = None,
        complement: bool = False,
        name: str | None = None,
    ) -> None:
        default = "ensemble_accuracy" if complement else "ensemble_defect"
        super().__init__(target, target_id, targets_path, name or default)
        self.complement = complement
        self.higher_is_better = complement

    def score(self, sequence: str) -> float:
        compound = RNA.fold_compound(sequence)
        _, energy = compound.mfe()
        compound.exp_params_rescale(energy)  # scale the partition function: no overflow
        compound.pf()
        defect = compound.ensemble_defect(self.target)
        if not 0.0 <= defect <= 1.0:  # ViennaRNA answers -1 on an internal error
            raise RuntimeError(f"ViennaRNA returned ensemble defect {defect}")
        return 1.0 - defect if self.complement else defect


__all__ = [
    "RNA_ALPHABET",
    "EnsembleDefect",
    "MinimumFreeEnergy",
    "StructureMatch",
    "check_dot_bracket",
    "is_rna",
    "load_target",
    "read_structures",
]
