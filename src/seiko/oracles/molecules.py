"""RDKit oracles for molecules: drug-likeness, synthetic accessibility, logP, similarity, MPO.

Every oracle takes a list of SMILES (the output of ``MoleculeDiffusion.decode``) and returns a
(N,) float64 tensor. A design that is not a valid non-empty SMILES (None, "", garbage) gives NaN,
and so does a molecule on which RDKit fails: one bad design never fails the batch that pays for the
others. The properties are plain functions of an RDKit molecule (``qed``, ``sa_score``, ...),
collected in ``PROPERTIES`` for ``MultiPropertyOracle``.

Definitions (all on RDKit's molecule with implicit hydrogens):

* QED (Bickerton et al., Nat. Chem. 2012): ``rdkit.Chem.QED.qed``, the weighted geometric mean of
  eight desirability functions (MW, ALOGP, HBA, HBD, PSA, rotatable bonds, aromatic rings, alerts);
  in [0, 1], higher is more drug-like. Aspirin: 0.550.
* SA score (Ertl & Schuffenhauer, J. Cheminf. 2009): RDKit Contrib ``SA_Score/sascorer.py``, shipped
  in the rdkit wheel (fragment contributions from PubChem plus size, stereo, spiro, bridge and
  macrocycle penalties); 1 (easy) to 10 (hard), lower is better. ``SAScore(normalized=True)`` is
  (10 - SA) / 9, in [0, 1], higher is better.
* logP: Wildman-Crippen octanol/water logP (J. Chem. Inf. Comput. Sci. 1999), ``Crippen.MolLogP``.
* Penalised logP: logP(m) - SA(m) - cycle(m), cycle(m) = max(0, size of the largest ring - 6),
  the objective of Kusner et al. (Grammar VAE, ICML 2017) and Jin et al. (JT-VAE, ICML 2018), in
  the unnormalised form of You et al. (GCPN, NeurIPS 2018) and Zhou et al. (MolDQN, Sci. Rep. 2019).
  JT-VAE's Bayesian optimisation standardised each term with ZINC-250k statistics first; that is not
  done here. Rings are RDKit's smallest set of smallest rings (JT-VAE used networkx's cycle basis;
  the two can differ for a few fused systems). GuacaMol (Brown et al. 2019) does not use it.
* Tanimoto similarity to a target: Morgan fingerprints of radius 2, 2048 bits (ECFP4-like, Rogers &
  Hahn 2010), the similarity measure of the GuacaMol similarity and rediscovery tasks; in [0, 1].
* Molecular weight (``Descriptors.MolWt``) and topological polar surface area (Ertl et al. 2000,
  ``rdMolDescriptors.CalcTPSA``), for multi-property objectives.

``MultiPropertyOracle`` maps each property through a desirability function in [0, 1] (Derringer &
Suich 1980; the score modifiers of GuacaMol's MPO tasks) and combines them by a weighted geometric
mean, so any property at 0 sinks the score. It is configured with a list of ``PropertyObjective``
(plain dataclasses that LightningCLI/jsonargparse read from YAML)::

    oracle:
      class_path: seiko.oracles.molecules.MultiPropertyOracle
      init_args:
        objectives:
          - {property: qed, transform: sigmoid, low: 0.6, high: 0.9}
          - {property: sa, transform: linear, low: 4.0, high: 2.0}   # low > high: lower is better
          - {property: similarity, target: "CCO", transform: linear, low: 0.2, high: 0.6, weight: 2}
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import QED as _QED  # noqa: N811 - the class QED below takes the plain name
from rdkit.Chem import Crippen, Descriptors, RDConfig, rdFingerprintGenerator, rdMolDescriptors
from torch import Tensor

from seiko.datamodules.molecules import parse_smiles
from seiko.oracles.desirability import (
    DesirabilitySpec,
    Transform,
    check_desirability,
    desirability,
    weighted_geometric_mean,
)

log = logging.getLogger(__name__)

PropertyName = Literal[
    "qed", "sa", "sa_normalized", "logp", "penalized_logp", "similarity", "molecular_weight", "tpsa"
]


# ---------------------------------------------------------------------- properties
@cache
def _sascorer() -> ModuleType:
    """RDKit's Contrib SA_Score module, loaded from the rdkit installation (it is not a package)."""
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    if not path.is_file():
        raise FileNotFoundError(f"RDKit's SA score module is missing: {path} (reinstall rdkit)")
    spec = importlib.util.spec_from_file_location("seiko_rdkit_sascorer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qed(mol: Chem.Mol) -> float:
    """Quantitative estimate of drug-likeness, in [0, 1] (higher is more drug-like)."""
    return float(_QED.qed(mol))


def sa_score(mol: Chem.Mol) -> float:
    """Ertl-Schuffenhauer synthetic accessibility, 1 (easy) to 10 (hard)."""
    return float(_sascorer().calculateScore(mol))


def sa_normalized(mol: Chem.Mol) -> float:
    """(10 - SA) / 9: synthetic accessibility in [0, 1], higher is easier."""
    return (10.0 - sa_score(mol)) / 9.0


def logp(mol: Chem.Mol) -> float:
    """Wildman-Crippen logP."""
    return float(Crippen.MolLogP(mol))


def largest_ring_size(mol: Chem.Mol) -> int:
    """Atoms in the largest ring of RDKit's smallest set of smallest rings (0 if acyclic)."""
    return max((len(ring) for ring in mol.GetRingInfo().AtomRings()), default=0)


def penalized_logp(mol: Chem.Mol) -> float:
    """logP - SA - max(0, largest ring size - 6) (unnormalised; see the module docstring)."""
    return logp(mol) - sa_score(mol) - max(0, largest_ring_size(mol) - 6)


def molecular_weight(mol: Chem.Mol) -> float:
    """Average molecular weight in g/mol."""
    return float(Descriptors.MolWt(mol))


def tpsa(mol: Chem.Mol) -> float:
    """Topological polar surface area in square angstroms."""
    return float(rdMolDescriptors.CalcTPSA(mol))


_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)

# "similarity" is not here: it needs a target (see PropertyObjective and TanimotoSimilarity).
PROPERTIES: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": qed,
    "sa": sa_score,
    "sa_normalized": sa_normalized,
    "logp": logp,
    "penalized_logp": penalized_logp,
    "molecular_weight": molecular_weight,
    "tpsa": tpsa,
}


def _target(smiles: str) -> Chem.Mol:
    mol = parse_smiles(smiles)
    if mol is None:
        raise ValueError(f"similarity target {smiles!r} is not a valid SMILES")
    return mol


# ---------------------------------------------------------------------- oracles
class MoleculeOracle:
    """Scores each SMILES with ``score(mol)``; NaN for an invalid one or an RDKit failure.

    Subclasses set ``name`` and ``higher_is_better`` and implement ``score``.
    """

    name: str
    higher_is_better: bool

    def score(self, mol: Chem.Mol) -> float:
        raise NotImplementedError

    def __call__(self, designs: Sequence[str | None]) -> Tensor:
        """(N,) float64 values for N SMILES, NaN where a design is not a valid molecule."""
        values = []
        for design in designs:
            mol = parse_smiles(design)
            value = math.nan
            if mol is not None:
                # Broad on purpose: one molecule that trips RDKit must not fail the paid batch.
                try:
                    value = self.score(mol)
                except Exception as err:
                    log.warning("%s: scoring %r failed (%s); NaN", self.name, design, err)
            values.append(value)
        return torch.tensor(values, dtype=torch.float64)


class QED(MoleculeOracle):
    """Drug-likeness (Bickerton et al. 2012), in [0, 1], higher is better."""

    name = "qed"
    higher_is_better = True

    def score(self, mol: Chem.Mol) -> float:
        return qed(mol)


class SAScore(MoleculeOracle):
    """Synthetic accessibility (Ertl & Schuffenhauer 2009).

    Args:
        normalized: False: the raw score, 1 (easy) to 10 (hard), lower is better; True:
            (10 - SA) / 9 in [0, 1], higher is better.
    """

    def __init__(self, normalized: bool = False) -> None:
        self.normalized = normalized
        self.name = "sa_score_normalized" if normalized else "sa_score"
        self.higher_is_better = normalized

    def score(self, mol: Chem.Mol) -> float:
        return sa_normalized(mol) if self.normalized else sa_score(mol)


class LogP(MoleculeOracle):
    """Wildman-Crippen logP (higher is better, the usual maximisation benchmark)."""

    name = "logp"
    higher_is_better = True

    def score(self, mol: Chem.Mol) -> float:
        return logp(mol)


class PenalizedLogP(MoleculeOracle):
    """logP - SA - max(0, largest ring - 6) (Kusner et al. 2017; You et al. 2018); higher is better.

    Unnormalised; see the module docstring.
    """

    name = "penalized_logp"
    higher_is_better = True

    def score(self, mol: Chem.Mol) -> float:
        return penalized_logp(mol)


class TanimotoSimilarity(MoleculeOracle):
    """Tanimoto similarity to a target molecule on ECFP4-like Morgan fingerprints.

    Args:
        target: the target's SMILES (an invalid one raises here, not at scoring time).
        name: recorded with every answer.
    """

    higher_is_better = True

    def __init__(self, target: str, name: str = "tanimoto_similarity") -> None:
        self.target = target
        self.name = name
        self._target_fp = _MORGAN.GetFingerprint(_target(target))

    def score(self, mol: Chem.Mol) -> float:
        return float(DataStructs.TanimotoSimilarity(_MORGAN.GetFingerprint(mol), self._target_fp))


# ---------------------------------------------------------------------- multi-property
@dataclass(frozen=True)
class PropertyObjective:
    """One property and how desirable each of its values is, in [0, 1].

    Transforms of a property value v:

    * ``linear``: 0 at ``low``, 1 at ``high``, straight in between, clipped (``low > high``: lower
      is better).
    * ``sigmoid``: the smooth version, 1 / (1 + exp(-k (v - (low + high) / 2))) with
      k = 2 ln 9 / (high - low): 0.1 at ``low``, 0.9 at ``high``.
    * ``gaussian``: exp(-(v - center)^2 / (2 width^2)): 1 at ``center`` (a target value).
    * ``step``: 1 inside [``low``, ``high``] (either bound may be left out), else 0.

    Args:
        property: one of ``PROPERTIES`` or "similarity" (needs ``target``).
        transform: see above.
        low, high: bounds of linear/sigmoid (both needed) or step (at least one).
        center, width: centre and width (> 0) of gaussian.
        weight: exponent weight in the geometric mean (> 0).
        target: target SMILES of "similarity".
    """

    property: PropertyName
    transform: Transform = "linear"
    low: float | None = None
    high: float | None = None
    center: float | None = None
    width: float | None = None
    weight: float = 1.0
    target: str | None = None

    def __post_init__(self) -> None:
        where = f"objective {self.property!r} ({self.transform})"
        if self.property != "similarity" and self.property not in PROPERTIES:
            known = [*PROPERTIES, "similarity"]
            raise ValueError(f"{where}: unknown property; expected one of {known}")
        if (self.property == "similarity") != (self.target is not None):
            raise ValueError(f"{where}: 'target' is needed by, and only by, property 'similarity'")
        if self.target is not None:
            _target(self.target)
        check_desirability(self, where)

    def desirability(self, value: float) -> float:
        """The transform of one property value, in [0, 1] (NaN stays NaN)."""
        return desirability(self, value)


class MultiPropertyOracle(MoleculeOracle):
    """Weighted geometric mean of property desirabilities, in [0, 1], higher is better.

    score = prod_i d_i ** (w_i / sum_j w_j), with d_i = objective_i.desirability(property_i);
    NaN for an invalid molecule, 0 as soon as one d_i is 0.

    Args:
        objectives: the properties, their transforms and weights (at least one).
        name: recorded with every answer.
    """

    higher_is_better = True

    def __init__(self, objectives: list[PropertyObjective], name: str = "multi_property") -> None:
        if not objectives:
            raise ValueError("MultiPropertyOracle needs at least one objective")
        # jsonargparse hands dataclasses over already built; plain dicts are accepted from Python.
        self.objectives = [
            o if isinstance(o, PropertyObjective) else PropertyObjective(**o) for o in objectives
        ]
        self.name = name
        self._properties = [self._property(o) for o in self.objectives]
        total = sum(o.weight for o in self.objectives)
        self._exponents = [o.weight / total for o in self.objectives]

    @staticmethod
    def _property(objective: PropertyObjective) -> Callable[[Chem.Mol], float]:
        if objective.property != "similarity":
            return PROPERTIES[objective.property]
        return TanimotoSimilarity(objective.target).score

    def desirabilities(self, mol: Chem.Mol) -> list[float]:
        """Each objective's desirability for one molecule."""
        pairs = zip(self.objectives, self._properties, strict=True)
        return [objective.desirability(prop(mol)) for objective, prop in pairs]

    def score(self, mol: Chem.Mol) -> float:
        return weighted_geometric_mean(self.desirabilities(mol), self._exponents)


__all__ = [
    "PROPERTIES",
    "QED",
    "LogP",
    "MoleculeOracle",
    "MultiPropertyOracle",
    "PenalizedLogP",
    "DesirabilitySpec",
    "PropertyObjective",
    "SAScore",
    "TanimotoSimilarity",
    "check_desirability",
    "desirability",
    "largest_ring_size",
    "logp",
    "molecular_weight",
    "penalized_logp",
    "qed",
    "sa_normalized",
    "sa_score",
    "tpsa",
    "weighted_geometric_mean",
]
