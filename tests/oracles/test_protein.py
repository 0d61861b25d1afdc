"""Protein oracles: a real kinase against its shuffle, ProtParam by hand, constraints, errors."""

from __future__ import annotations

import gzip
import math
import pickle
import random
import re
from pathlib import Path

import pytest
import torch
from Bio import SeqIO
from jsonargparse import ArgumentParser

from seiko.oracles import Oracle
from seiko.oracles.molecules import PropertyObjective
from seiko.oracles.protein import (
    HMMScore,
    ProteinMultiPropertyOracle,
    ProteinObjective,
    gravy,
    instability_index,
    isoelectric_point,
    load_hmm,
)

ROOT = Path(__file__).resolve().parents[2]
PKINASE = str(ROOT / "data" / "hmm" / "Pkinase.hmm")
GLOBIN = str(ROOT / "data" / "hmm" / "globins4.hmm")
PROTEINS = ROOT / "data" / "protein_uniprot_4k.fa.gz"


def read_proteins() -> dict[str, str]:
    """The shipped UniProt subset by accession."""
    with gzip.open(PROTEINS, "rt") as handle:
        return {r.id.split("|")[1]: str(r.seq) for r in SeqIO.parse(handle, "fasta")}


# UniProt C4M6K6, "cell division protein kinase 2, putative" of Entamoeba histolytica (291 aa),
# the best Pkinase hit of the shipped subset.
KINASE = read_proteins()["C4M6K6"]
BAD = ["", None, 3, "ACDX", "acde", "ACD*", "ACDEFGHIKLMNPQRSTVWYU", "ACD E"]


def documented_oracle(marker: str) -> Oracle:
    """The oracle of the YAML block after ``<!-- marker -->`` in docs/sequences.md, built the way
    LightningCLI builds it (jsonargparse, ``class_path`` + ``init_args``)."""
    text = (ROOT / "docs" / "sequences.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```yaml\n(.*?)```", text, re.S).group(1)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--oracle", type=Oracle)
    return parser.instantiate(parser.parse_string(block)).oracle


def shuffled(sequence: str, seed: int) -> str:
    letters = list(sequence)
    random.Random(seed).shuffle(letters)
    return "".join(letters)


@pytest.fixture(scope="module")
def pkinase() -> HMMScore:
    return HMMScore(PKINASE)


def test_protocol_shape_dtype_nan_for_bad_designs_and_pickling(pkinase):
    multi = ProteinMultiPropertyOracle(
        [
            ProteinObjective("hmm_score", transform="sigmoid", low=20, high=100, hmm=PKINASE),
            ProteinObjective("instability_index", transform="step", high=40),
        ]
    )
    for oracle in (pkinase, multi):
        assert isinstance(oracle, Oracle)
        values = oracle([KINASE, *BAD, "MKV"])
        assert values.dtype == torch.float64 and values.shape == (len(BAD) + 2,)
        assert values[1:-1].isnan().all() and not values[[0, -1]].isnan().any()
        assert oracle([]).shape == (0,)
        assert torch.equal(pickle.loads(pickle.dumps(oracle))([KINASE]), values[:1])
    assert pkinase.name == "hmm_score:Pkinase"


def test_a_real_kinase_outscores_its_shuffles_and_other_families(pkinase):
    shuffles = [shuffled(KINASE, seed) for seed in range(20)]
    values = pkinase([KINASE, *shuffles])
    assert values[0].item() == pytest.approx(248.69, abs=0.05)  # hmmsearch bit score
    assert values[1:].max() < 15  # same composition, no kinase fold: noise
    assert (values[1:] >= 0).all()  # the floor
    # the kinase is no globin
    assert HMMScore(GLOBIN)([KINASE]).item() < 15


def test_few_shipped_uniprot_sequences_are_kinases(pkinase):
    """The first 1,000 shipped UniProt sequences: 3 above 20 bits, the best V8NXA5 (casein
    kinase I gamma-1, 101.2 bits); 90 % at the floor (all 4,000: 7 above 20 bits)."""
    proteins = read_proteins()
    values = pkinase(list(proteins.values())[:1000])
    assert not values.isnan().any() and values.max().item() == pytest.approx(101.2, abs=0.05)
    assert pkinase([proteins["V8NXA5"]]).item() == values.max().item()
    assert 0 < (values > 20).sum() < 10 and (values == 0).double().mean() > 0.8


def test_score_of_a_sequence_does_not_depend_on_its_batch(pkinase):
    rng = random.Random(0)
    batch = [shuffled(KINASE, seed) for seed in range(30)] + [KINASE]
    rng.shuffle(batch)
    together = pkinase(batch)
    alone = torch.cat([pkinase([s]) for s in batch])
    assert torch.equal(together, alone)


def test_floor_for_sequences_without_a_domain(pkinase):
    designs = ["A" * 200, *(shuffled(KINASE, seed) for seed in range(30))]
    raw = pkinase.bit_scores(designs)
    assert math.isnan(raw[0])  # HMMER finds no region in poly-A: reports nothing
    assert any(s < 0 for s in raw if not math.isnan(s))  # and reports some negative scores
    low = HMMScore(PKINASE, floor=-1000.0)(designs)
    assert low[0].item() == -1000.0
    for s, v in zip(raw[1:], low[1:].tolist(), strict=True):
        assert v == (-1000.0 if math.isnan(s) else s)
    default = pkinase(designs)
    assert default[0].item() == 0.0 and torch.equal(default, low.clamp(min=0.0))


def test_protparam_properties_by_hand():
    # GRAVY: the mean Kyte-Doolittle hydropathy, A 1.8, I 4.5, L 3.8, R -4.5
    assert gravy("AILR") == pytest.approx((1.8 + 4.5 + 3.8 - 4.5) / 4)
    # instability: (10 / L) * sum over the L - 1 dipeptides; a homopolymer of length L has
    # (10 / L) (L - 1) DIWV(K, K), so lengths 10 and 20 are in the ratio (9 / 10) : (19 / 20)
    assert instability_index("K" * 20) / instability_index("K" * 10) == pytest.approx(
        (19 / 20) / (9 / 10)
    )
    assert isoelectric_point("K" * 10) > 10 > 7 > 4.5 > isoelectric_point("D" * 10)
    # the kinase: stable (34.2, below 40), slightly hydrophilic (-0.28), pI 7.6
    assert (
        instability_index(KINASE) < 40 and gravy(KINASE) < 0 and 7 < isoelectric_point(KINASE) < 8
    )


def test_multi_property_is_the_weighted_geometric_mean_and_constraints_bite():
    objectives = [
        ProteinObjective("hmm_score", "sigmoid", low=20, high=100, hmm=PKINASE, weight=2.0),
        ProteinObjective("gravy", "linear", low=0.5, high=-0.5),
        ProteinObjective("isoelectric_point", "gaussian", center=6.0, width=1.5),
    ]
    oracle = ProteinMultiPropertyOracle(objectives)
    score, hmm = oracle([KINASE]).item(), HMMScore(PKINASE)([KINASE]).item()
    d = [
        objectives[0].desirability(hmm),
        objectives[1].desirability(gravy(KINASE)),
        objectives[2].desirability(isoelectric_point(KINASE)),
    ]
    assert score == pytest.approx(d[0] ** 0.5 * d[1] ** 0.25 * d[2] ** 0.25)
    assert 0.5 < score < 1.0
    # the same transform code as the molecule objectives
    same = PropertyObjective("qed", "gaussian", center=6.0, width=1.5)
    assert objectives[2].desirability(5.2) == same.desirability(5.2)
    # a hard constraint: instability index <= 30 fails for the kinase (34.2): score 0
    strict = ProteinMultiPropertyOracle(
        [*objectives, ProteinObjective("instability_index", "step", high=30.0)]
    )
    assert strict([KINASE]).item() == 0.0
    loose = ProteinMultiPropertyOracle(
        [*objectives, ProteinObjective("instability_index", "step", high=40.0)]
    )
    # met (d = 1): a fourth factor 1, the others' exponents renormalised to 2/5, 1/5, 1/5
    assert loose([KINASE]).item() == pytest.approx(d[0] ** 0.4 * d[1] ** 0.2 * d[2] ** 0.2)
    # its shuffle keeps GRAVY and pI but loses the kinase score: d_hmm ~ 0.035, sqrt ~ 0.19
    assert oracle([shuffled(KINASE, 0)]).item() < 0.25 * score


def test_bad_constructor_arguments_name_the_value(tmp_path):
    missing = str(tmp_path / "missing.hmm")
    with pytest.raises(FileNotFoundError, match="HMM file '.*missing.hmm' does not exist"):
        HMMScore(missing)
    with pytest.raises(FileNotFoundError, match="missing.hmm' does not exist"):
        ProteinMultiPropertyOracle([ProteinObjective("hmm_score", low=0, high=1, hmm=missing)])
    not_hmm = tmp_path / "not.hmm"
    not_hmm.write_text("this is no HMM\n")
    with pytest.raises(ValueError, match="not.hmm is not a readable HMMER3 profile HMM file"):
        load_hmm(not_hmm)
    two = tmp_path / "two.hmm"
    two.write_text(Path(PKINASE).read_text() + Path(GLOBIN).read_text())
    with pytest.raises(
        ValueError, match=r"holds 2 HMMs \['Pkinase', 'globins4'\]; expected exactly"
    ):
        load_hmm(two)
    with pytest.raises(ValueError, match="floor must be a finite number of bits, got -inf"):
        HMMScore(PKINASE, floor=-math.inf)
    with pytest.raises(ValueError, match="'hmm' is needed by, and only by, property 'hmm_score'"):
        ProteinObjective("hmm_score", low=0, high=1)
    with pytest.raises(ValueError, match="'hmm' is needed by, and only by, property 'hmm_score'"):
        ProteinObjective("gravy", low=0, high=1, hmm=PKINASE)
    with pytest.raises(ValueError, match=r"objective 'charge' \(linear\): unknown property"):
        ProteinObjective("charge", low=0, high=1)
    with pytest.raises(ValueError, match=r"'gravy' \(gaussian\): width must be > 0, got 0"):
        ProteinObjective("gravy", "gaussian", center=0.0, width=0.0)
    with pytest.raises(ValueError, match="needs at least one objective"):
        ProteinMultiPropertyOracle([])


def test_the_documented_config_builds_the_constrained_kinase_objective(monkeypatch):
    monkeypatch.chdir(ROOT)  # the YAML names data/hmm/Pkinase.hmm relative to the repository
    oracle = documented_oracle("protein-oracle")
    assert isinstance(oracle, ProteinMultiPropertyOracle)
    assert [o.property for o in oracle.objectives] == ["hmm_score", "instability_index", "gravy"]
    kinase, shuffle = oracle([KINASE, shuffled(KINASE, 0)]).tolist()
    # both hydrophilic (GRAVY -0.28: d = 0.78); only the kinase has the domain: the shuffle's
    # d_hmm = sigmoid at 0 bits = 0.035, its cube root 0.33 (if the shuffle is predicted stable)
    assert kinase > 0.85 and shuffle < 0.35
