"""RDKit oracles against known values and hand computations; NaN, never an exception, if bad."""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from rdkit import Chem
from rdkit.Chem import QED as RDKitQED  # noqa: N811 - the oracle class below is QED
from rdkit.Chem import Crippen

from seiko.datamodules.molecules import read_smiles
from seiko.oracles import Oracle
from seiko.oracles import molecules as mol_oracles
from seiko.oracles.molecules import (
    QED,
    LogP,
    MultiPropertyOracle,
    PenalizedLogP,
    PropertyObjective,
    SAScore,
    TanimotoSimilarity,
    sa_score,
)

ROOT = Path(__file__).resolve().parents[2]
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CELECOXIB = "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1"
BAD = ["", "   ", None, "C1CC", "not a smiles"]


def all_oracles() -> list[Oracle]:
    return [
        QED(),
        SAScore(),
        SAScore(normalized=True),
        LogP(),
        PenalizedLogP(),
        TanimotoSimilarity(ASPIRIN),
        MultiPropertyOracle([PropertyObjective("qed", low=0.0, high=1.0)]),
    ]


@pytest.mark.parametrize("oracle", all_oracles(), ids=lambda o: o.name)
def test_protocol_shape_dtype_nan_for_bad_designs_and_pickling(oracle: Oracle):
    assert isinstance(oracle, Oracle)
    values = oracle([ASPIRIN, *BAD, "CCO"])
    assert values.dtype == torch.float64 and values.shape == (len(BAD) + 2,)
    assert torch.isnan(values[1:-1]).all() and not torch.isnan(values[[0, -1]]).any()
    assert oracle([]).shape == (0,)
    # ParallelOracle pickles the oracle to its worker processes
    torch.testing.assert_close(pickle.loads(pickle.dumps(oracle))([ASPIRIN]), values[:1])


def test_known_values_on_aspirin():
    assert QED()([ASPIRIN]).item() == pytest.approx(0.550, abs=0.005)  # Bickerton et al.: 0.55
    assert LogP()([ASPIRIN]).item() == pytest.approx(1.3101, abs=1e-4)  # Wildman-Crippen
    assert TanimotoSimilarity(ASPIRIN)(["OC(=O)c1ccccc1OC(C)=O"]).item() == 1.0  # other spelling
    assert TanimotoSimilarity(ASPIRIN)(["CCCCCC"]).item() < 0.1
    with pytest.raises(ValueError, match="similarity target 'C1CC' is not a valid SMILES"):
        TanimotoSimilarity("C1CC")


def test_sa_score_range_direction_and_normalisation():
    smiles = [s for _, s in read_smiles(ROOT / "data" / "moses_test_5k.csv.gz")][:200]
    sa = SAScore()(smiles)
    assert ((sa >= 1) & (sa <= 10)).all() and 1.5 < sa.mean() < 4  # drug-like: easy
    torch.testing.assert_close(SAScore(normalized=True)(smiles), (10 - sa) / 9)
    hard = "CC12CCC3C(CCC4CC(O)CCC34C)C1CCC2O"  # a steroid: stereocentres, fused rings
    assert SAScore()([hard]).item() > SAScore()(["CCO"]).item()
    assert not SAScore().higher_is_better and SAScore(normalized=True).higher_is_better


def test_penalized_logp_by_hand():
    # a cyclooctane ring (8 atoms) costs 8 - 6 = 2; a benzene ring costs nothing
    smiles = "c1ccccc1C1CCCCCCC1"
    mol = Chem.MolFromSmiles(smiles)
    expected = Crippen.MolLogP(mol) - sa_score(mol) - 2
    assert PenalizedLogP()([smiles]).item() == pytest.approx(expected, abs=1e-12)
    aspirin = Chem.MolFromSmiles(ASPIRIN)  # no ring above 6 atoms: no ring penalty
    expected = Crippen.MolLogP(aspirin) - sa_score(aspirin)
    assert PenalizedLogP()([ASPIRIN]).item() == pytest.approx(expected, abs=1e-12)


def test_one_failing_molecule_gives_nan_not_an_exception(monkeypatch: pytest.MonkeyPatch):
    def qed_failing_on_chlorine(mol: Chem.Mol) -> float:
        if any(atom.GetSymbol() == "Cl" for atom in mol.GetAtoms()):
            raise RuntimeError("RDKit tripped")
        return 0.5

    monkeypatch.setattr(mol_oracles, "qed", qed_failing_on_chlorine)
    values = QED()(["CCO", "CCCl", "CCN"])
    assert values[[0, 2]].tolist() == [0.5, 0.5] and math.isnan(values[1])


def test_desirability_transforms():
    linear = PropertyObjective("logp", "linear", low=1.0, high=3.0)
    assert [linear.desirability(v) for v in (0.0, 1.0, 2.0, 3.0, 9.0)] == [0, 0, 0.5, 1, 1]
    lower_is_better = PropertyObjective("sa", "linear", low=4.0, high=2.0)
    assert [lower_is_better.desirability(v) for v in (5.0, 3.0, 1.0)] == [0, 0.5, 1]
    sigmoid = PropertyObjective("qed", "sigmoid", low=0.6, high=0.9)
    assert sigmoid.desirability(0.6) == pytest.approx(0.1)
    assert sigmoid.desirability(0.75) == pytest.approx(0.5)
    assert sigmoid.desirability(0.9) == pytest.approx(0.9)
    assert sigmoid.desirability(-1e6) == 0.0 and sigmoid.desirability(1e6) == 1.0  # no overflow
    gaussian = PropertyObjective("molecular_weight", "gaussian", center=300.0, width=50.0)
    assert gaussian.desirability(300.0) == 1.0
    assert gaussian.desirability(350.0) == pytest.approx(math.exp(-0.5))
    step = PropertyObjective("tpsa", "step", high=90.0)
    assert (step.desirability(89.9), step.desirability(90.1)) == (1.0, 0.0)
    assert math.isnan(linear.desirability(math.nan))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(property="qed", transform="linear", low=0.5), r"takes exactly \['high', 'low'\]"),
        (dict(property="qed", transform="sigmoid", low=0.5, high=0.5), "must differ"),
        (dict(property="qed", transform="gaussian", center=0.5, width=0.0), "width must be > 0"),
        (dict(property="qed", transform="step"), "step takes 'low' and/or 'high'"),
        (dict(property="qed", transform="step", low=2.0, high=1.0), "low <= high"),
        (dict(property="qed", transform="cubic", low=0, high=1), "unknown transform"),
        (dict(property="potency", low=0, high=1), "unknown property"),
        (dict(property="similarity", low=0, high=1), "'target' is needed by"),
        (dict(property="qed", low=0, high=1, target="CCO"), "'target' is needed by"),
        (dict(property="similarity", target="C1CC", low=0, high=1), "not a valid SMILES"),
        (dict(property="qed", low=0, high=1, weight=0.0), "weight must be > 0"),
    ],
)
def test_objective_validation_names_the_problem(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        PropertyObjective(**kwargs)


def test_multi_property_is_the_weighted_geometric_mean_by_hand():
    oracle = MultiPropertyOracle(
        [
            PropertyObjective("qed", "linear", low=0.0, high=1.0),  # d = QED itself
            PropertyObjective("logp", "gaussian", center=2.0, width=1.0, weight=3.0),
        ]
    )
    mol = Chem.MolFromSmiles(ASPIRIN)
    d_qed = RDKitQED.qed(mol)
    d_logp = math.exp(-0.5 * (Crippen.MolLogP(mol) - 2.0) ** 2)
    expected = d_qed ** (1 / 4) * d_logp ** (3 / 4)
    assert oracle([ASPIRIN]).item() == pytest.approx(expected, rel=1e-12)
    # one desirability at 0 sinks the score; an invalid molecule is NaN
    zero = MultiPropertyOracle(
        [
            {"property": "qed", "low": 0.0, "high": 1.0},
            {"property": "tpsa", "transform": "step", "low": 500.0},
        ]
    )
    assert zero([ASPIRIN]).item() == 0.0 and math.isnan(zero(["C1CC"]).item())
    with pytest.raises(ValueError, match="at least one objective"):
        MultiPropertyOracle([])


def test_multi_property_parses_from_yaml_like_a_config():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MultiPropertyOracle, "oracle")
    config = parser.parse_string(
        """
        oracle:
          name: easy_and_similar
          objectives:
            - {property: sa, transform: linear, low: 4.0, high: 2.0}
            - {property: similarity, target: "CCO", transform: sigmoid, low: 0.2, high: 0.6}
        """
    )
    oracle = parser.instantiate(config).oracle
    assert oracle.name == "easy_and_similar"
    assert oracle.objectives[1] == PropertyObjective(
        "similarity", "sigmoid", low=0.2, high=0.6, target="CCO"
    )
    with pytest.raises(Exception, match="potency"):
        parser.parse_string("oracle: {objectives: [{property: potency, low: 0, high: 1}]}")


def test_the_documented_harder_task_parses_and_rewards_its_target():
    text = (ROOT / "docs" / "molecules.md").read_text()
    block = re.search(r"<!-- harder-task -->\n```yaml\n(.*?)```", text, re.S)
    assert block, "docs/molecules.md lost its harder-task YAML block"
    spec = yaml.safe_load(block.group(1))["oracle"]
    assert spec["class_path"] == "seiko.oracles.molecules.MultiPropertyOracle"
    oracle = MultiPropertyOracle(**spec["init_args"])
    assert oracle([CELECOXIB]).item() > 0.8  # its similarity target clears the bar
    assert oracle(["CCO"]).item() < 0.05
