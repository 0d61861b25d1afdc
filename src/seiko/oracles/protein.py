"""Protein oracles: profile-HMM bit score (pyhmmer) and ProtParam properties as constraints.

Every oracle takes a list of protein strings (the output of a protein model's ``decode``) and
returns a (N,) float64 tensor. A design that is not a non-empty string of the 20 standard amino
acids in upper case (X, B, Z, U, '*', '-', lower case, None, a non-string) is NaN, and so is a
sequence on which a tool fails (logged): one bad design never fails the batch.

* HMM bit score: the sequence score of ``hmmsearch`` (Eddy, PLoS Comput. Biol. 2011), computed by
  pyhmmer (Larralde & Zeller, Bioinformatics 2023) against one profile HMM (e.g. Pfam's protein
  kinase domain PF00069, ``data/hmm/Pkinase.hmm``): log2 of the Forward likelihood of the sequence
  under the model over its likelihood under the null model, corrected for biased composition
  (null2), in bits. The acceleration filters are off (F1 = F2 = F3 = 1, no bias filter) and the
  reporting threshold is -inf, so no sequence is dropped for being unlikely, and the score of a
  sequence does not depend on the rest of the batch. HMMER still reports nothing for a sequence in
  which its domain definition finds no region (about a fifth of random or unrelated UniProt
  sequences): those get ``floor``, and so does any score below it, so
  value = max(floor, bit score), default floor 0 bits (no evidence for the family). Measured with
  Pkinase: uniformly random 200-aa sequences at most 6 bits, shuffled UniProt sequences at most
  10, the kinases among 8,167 UniProt sequences up to 262.
* ProtParam (Biopython ``Bio.SeqUtils.ProtParam.ProteinAnalysis``, the ExPASy ProtParam
  definitions, Gasteiger et al. 2005):

  - instability index (Guruprasad et al., Protein Eng. 1990): (10 / L) sum_i DIWV(x_i, x_{i+1})
    over the L - 1 dipeptides; below 40 predicts a stable protein;
  - GRAVY (Kyte & Doolittle, J. Mol. Biol. 1982): the mean Kyte-Doolittle hydropathy of the
    residues; negative is hydrophilic;
  - isoelectric point (Bjellqvist et al., Electrophoresis 1993): the pH of zero net charge with
    Bjellqvist's pK values.

``ProteinMultiPropertyOracle`` combines any of these as desirabilities in [0, 1] with a weighted
geometric mean, exactly as ``seiko.oracles.molecules.MultiPropertyOracle`` does (the same
transforms and the same code), so a ``step`` transform is a hard constraint (instability index
<= 40) and a ``sigmoid`` one a soft goal (HMM score from 20 to 100 bits)::

    oracle:
      class_path: seiko.oracles.protein.ProteinMultiPropertyOracle
      init_args:
        objectives:
          - {property: hmm_score, hmm: data/hmm/Pkinase.hmm, transform: sigmoid, low: 20, high: 100}
          - {property: instability_index, transform: step, high: 40.0}
          - {property: gravy, transform: linear, low: 0.5, high: -0.5}   # hydrophilic is better
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyhmmer
import torch
from Bio.SeqUtils.ProtParam import ProteinAnalysis
from torch import Tensor

from seiko.datamodules.sequences import ALPHABETS
from seiko.oracles.desirability import (
    Transform,
    check_desirability,
    desirability,
    weighted_geometric_mean,
)

log = logging.getLogger(__name__)

AMINO_ACIDS = ALPHABETS["protein"]  # the 20 standard amino acids
_ALLOWED = re.compile(f"[{AMINO_ACIDS}]+")

ProteinPropertyName = Literal["hmm_score", "instability_index", "gravy", "isoelectric_point"]


def is_protein(design: Any) -> bool:
    """True for a non-empty string of the 20 standard amino acids in upper case."""
    return isinstance(design, str) and _ALLOWED.fullmatch(design) is not None


# ---------------------------------------------------------------------- ProtParam
def instability_index(sequence: str) -> float:
    """Guruprasad instability index (below 40: predicted stable)."""
    return float(ProteinAnalysis(sequence).instability_index())


def gravy(sequence: str) -> float:
    """Grand average of Kyte-Doolittle hydropathy."""
    return float(ProteinAnalysis(sequence).gravy())


def isoelectric_point(sequence: str) -> float:
    """Isoelectric point with Bjellqvist's pK values."""
    return float(ProteinAnalysis(sequence).isoelectric_point())


PROTPARAM_PROPERTIES: dict[str, Callable[[str], float]] = {
    "instability_index": instability_index,
    "gravy": gravy,
    "isoelectric_point": isoelectric_point,
}


# ---------------------------------------------------------------------- profile HMM
def load_hmm(path: str | Path) -> pyhmmer.plan7.HMM:
    """The single protein profile HMM in a HMMER3 file.

    Raises:
        FileNotFoundError: the file does not exist (naming it).
        ValueError: it is not a HMMER3 file, holds no model or several, or is not for proteins.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HMM file {str(path)!r} does not exist")
    try:
        with pyhmmer.plan7.HMMFile(path) as handle:
            models = list(handle)
    except (ValueError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable HMMER3 profile HMM file: {error}") from error
    if len(models) != 1:
        names = [m.name for m in models]
        raise ValueError(f"{path} holds {len(models)} HMMs {names}; expected exactly one")
    hmm = models[0]
    if not hmm.alphabet.is_amino():
        raise ValueError(f"{path}: HMM {hmm.name!r} is not a protein model ({hmm.alphabet})")
    return hmm


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class HMMScore:
    """Profile-HMM bit score of each protein: max(floor, hmmsearch score), higher is better.

    Args:
        hmm: path of a HMMER3 file with one protein model (e.g. ``data/hmm/Pkinase.hmm``).
        floor: the value of a sequence without any region matching the model, and the smallest
            value returned (finite; 0 bits: no evidence).
        name: recorded with every answer; default ``"hmm_score:<model name>"``.

    Raises:
        FileNotFoundError: the HMM file does not exist.
        ValueError: the file is not a single protein HMM, or ``floor`` is not finite.
    """

    higher_is_better = True

    def __init__(self, hmm: str, floor: float = 0.0, name: str | None = None) -> None:
        if not math.isfinite(floor):
            raise ValueError(f"floor must be a finite number of bits, got {floor}")
        self.path = str(hmm)
        self.hmm = load_hmm(hmm)
        self.floor = float(floor)
        self.name = name or f"hmm_score:{_text(self.hmm.name)}"

    def __repr__(self) -> str:
        return f"HMMScore({self.path!r}, floor={self.floor})"

    def bit_scores(self, sequences: Sequence[str]) -> list[float]:
        """Raw hmmsearch sequence scores of valid protein strings; NaN where HMMER reports none."""
        alphabet = self.hmm.alphabet
        digital = [
            pyhmmer.easel.TextSequence(name=str(i).encode(), sequence=s).digitize(alphabet)
            for i, s in enumerate(sequences)
        ]
        pipeline = pyhmmer.plan7.Pipeline(
            alphabet, F1=1.0, F2=1.0, F3=1.0, bias_filter=False, T=-math.inf, Z=1
        )
        scores = [math.nan] * len(sequences)
        for hit in pipeline.search_hmm(
            self.hmm, pyhmmer.easel.DigitalSequenceBlock(alphabet, digital)
        ):
            scores[int(_text(hit.name))] = float(hit.score)
        return scores

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values for N protein strings, NaN where a design is not a protein."""
        values = [math.nan] * len(designs)
        rows = [i for i, design in enumerate(designs) if is_protein(design)]
        if rows:
            try:
                scores = self.bit_scores([designs[i] for i in rows])
            except Exception as err:  # a failed HMMER call must not fail the paid batch
                log.warning(
                    "%s: hmmsearch of %d sequences failed (%s); NaN", self.name, len(rows), err
                )
                return torch.tensor(values, dtype=torch.float64)
            for i, score in zip(rows, scores, strict=True):
                values[i] = self.floor if math.isnan(score) else max(self.floor, score)
        return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------- multi-property
@dataclass(frozen=True)
class ProteinObjective:
    """One protein property and how desirable each of its values is, in [0, 1].

    The transforms (``linear``, ``sigmoid``, ``gaussian``, ``step``) and their parameters are those
    of ``seiko.oracles.molecules.PropertyObjective`` (one implementation serves both).

    Args:
        property: "hmm_score" (needs ``hmm``), "instability_index", "gravy" or
            "isoelectric_point".
        transform: see ``PropertyObjective``.
        low, high: bounds of linear/sigmoid (both needed) or step (at least one).
        center, width: centre and width (> 0) of gaussian.
        weight: exponent weight in the geometric mean (> 0).
        hmm: HMMER3 file of "hmm_score".
        floor: ``HMMScore``'s floor, for "hmm_score".
    """

    property: ProteinPropertyName
    transform: Transform = "linear"
    low: float | None = None
    high: float | None = None
    center: float | None = None
    width: float | None = None
    weight: float = 1.0
    hmm: str | None = None
    floor: float = 0.0

    def __post_init__(self) -> None:
        where = f"objective {self.property!r} ({self.transform})"
        known = ["hmm_score", *PROTPARAM_PROPERTIES]
        if self.property not in known:
            raise ValueError(f"{where}: unknown property; expected one of {known}")
        if (self.property == "hmm_score") != (self.hmm is not None):
            raise ValueError(f"{where}: 'hmm' is needed by, and only by, property 'hmm_score'")
        check_desirability(self, where)

    def desirability(self, value: float) -> float:
        """The transform of one property value, in [0, 1] (NaN stays NaN)."""
        return desirability(self, value)


class ProteinMultiPropertyOracle:
    """Weighted geometric mean of protein property desirabilities, in [0, 1], higher is better.

    score = prod_i d_i ** (w_i / sum_j w_j), with d_i = objective_i.desirability(property_i);
    NaN for an invalid sequence (or a property that failed), 0 as soon as one d_i is 0.

    Args:
        objectives: the properties, their transforms and weights (at least one).
        name: recorded with every answer.

    Raises:
        ValueError: no objective, or a bad one (naming it); FileNotFoundError: a missing HMM.
    """

    higher_is_better = True

    def __init__(
        self, objectives: list[ProteinObjective], name: str = "protein_multi_property"
    ) -> None:
        if not objectives:
            raise ValueError("ProteinMultiPropertyOracle needs at least one objective")
        # jsonargparse hands dataclasses over already built; plain dicts are accepted from Python.
        self.objectives = [
            o if isinstance(o, ProteinObjective) else ProteinObjective(**o) for o in objectives
        ]
        self.name = name
        self._hmms = {
            o.hmm: HMMScore(o.hmm, floor=o.floor) for o in self.objectives if o.hmm is not None
        }
        total = sum(o.weight for o in self.objectives)
        self._exponents = [o.weight / total for o in self.objectives]

    def __repr__(self) -> str:
        return f"ProteinMultiPropertyOracle({[o.property for o in self.objectives]})"

    def properties(self, designs: Sequence[Any]) -> Tensor:
        """(N, K) float64 raw values of the K objectives' properties; NaN rows for invalid ones."""
        columns = []
        for objective in self.objectives:
            if objective.property == "hmm_score":
                columns.append(self._hmms[objective.hmm](designs))
                continue
            fn = PROTPARAM_PROPERTIES[objective.property]
            column = []
            for design in designs:
                value = math.nan
                if is_protein(design):
                    # Broad on purpose: one sequence that trips ProtParam must not fail the batch.
                    try:
                        value = fn(design)
                    except Exception as err:
                        log.warning(
                            "%s: %s of %r failed (%s); NaN",
                            self.name,
                            objective.property,
                            design,
                            err,
                        )
                column.append(value)
            columns.append(torch.tensor(column, dtype=torch.float64))
        return torch.stack(columns, dim=1)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 scores for N protein strings, NaN where a design is not a protein."""
        values = self.properties(designs)
        scores = [
            weighted_geometric_mean(
                [o.desirability(v) for o, v in zip(self.objectives, row.tolist(), strict=True)],
                self._exponents,
            )
            for row in values
        ]
        return torch.tensor(scores, dtype=torch.float64)


__all__ = [
    "AMINO_ACIDS",
    "PROTPARAM_PROPERTIES",
    "HMMScore",
    "ProteinMultiPropertyOracle",
    "ProteinObjective",
    "gravy",
    "instability_index",
    "is_protein",
    "isoelectric_point",
    "load_hmm",
]
