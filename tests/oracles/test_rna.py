"""ViennaRNA oracles: designs that fold into the target, hand-computed defects, clear errors."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import RNA
import torch
from jsonargparse import ArgumentParser

from seiko.oracles import Oracle
from seiko.oracles.rna import (
    EnsembleDefect,
    MinimumFreeEnergy,
    StructureMatch,
    check_dot_bracket,
    load_target,
)

ROOT = Path(__file__).resolve().parents[2]
TRNA_TABLE = ROOT / "data" / "rna_trna1415_with_structure.tsv.gz"
# Two rows of the shipped tRNA structure table (Infernal's tRNA1415G, see data/PROVENANCE.md).
# DA0580's ViennaRNA MFE structure is exactly its cloverleaf; DA0260's is not.
TRNA = {
    "DA0580": (
        "GGGCCCGUAGCUCAGACUGGGAGAGCGCCGCCCUUGCAAGGCGGAGGCCCCGGGUUCAAAUCCCGGUGGGUCCA",
        "(((((((..((((.........)))).(((((.......))))).....(((((.......)))))))))))).",
    ),
    "DA0260": (
        "GGGCGAAUAGUGUCAGCGGGAGCACACCAGACUUGCAAUCUGGUAGGGAGGGUUCGAGUCCCUCUUUGUCCACCA",
        "(((((((..((((........)))).(((((.......)))))....(((((.......))))))))))))....",
    ),
}
HAIRPIN = "GGGGAAAACCCC"
BAD = ["", None, 7, "GGGGTTTTCCCC", "ggggaaaacccc", "GGGGNAAACCCC"]


def documented_oracle(marker: str) -> Oracle:
    """The oracle of the YAML block after ``<!-- marker -->`` in docs/sequences.md, built the way
    LightningCLI builds it (jsonargparse, ``class_path`` + ``init_args``)."""
    text = (ROOT / "docs" / "sequences.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```yaml\n(.*?)```", text, re.S).group(1)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--oracle", type=Oracle)
    return parser.instantiate(parser.parse_string(block)).oracle


def test_protocol_shape_dtype_nan_for_bad_designs_and_pickling():
    target = "((((....))))"
    oracles = [MinimumFreeEnergy(), StructureMatch(target), EnsembleDefect(target)]
    for oracle in oracles:
        assert isinstance(oracle, Oracle)
        values = oracle([HAIRPIN, *BAD, "GGGGAAAACCCCA"])
        assert values.dtype == torch.float64 and values.shape == (len(BAD) + 2,)
        assert not values[0].isnan() and values[1:-1].isnan().all()
        assert oracle([]).shape == (0,)
        assert torch.equal(pickle.loads(pickle.dumps(oracle))([HAIRPIN]), values[:1])
    # a target oracle also rejects a design of another length than the target's (13 nt)
    assert StructureMatch(target)(["GGGGAAAACCCCA"]).isnan().all()
    assert not MinimumFreeEnergy()(["GGGGAAAACCCCA"]).isnan().any()


def test_mfe_values_and_direction():
    seq, structure = TRNA["DA0580"]
    mfe = MinimumFreeEnergy()([HAIRPIN, seq, "AAAAAAAAAAAA"])
    assert mfe[0].item() == pytest.approx(-5.4, abs=1e-4)  # Turner 2004: four GC stacks
    assert mfe[2].item() == 0.0  # poly-A cannot pair: the open chain
    # the MFE is the free energy of the cloverleaf it folds into, evaluated on its own
    assert mfe[1].item() == pytest.approx(
        RNA.fold_compound(seq).eval_structure(structure), abs=1e-4
    )
    negated = MinimumFreeEnergy(negate=True)
    assert torch.equal(negated([HAIRPIN, seq]), -mfe[:2])
    assert (negated.name, negated.higher_is_better) == ("neg_mfe", True)
    assert not MinimumFreeEnergy().higher_is_better


def test_structure_match_is_one_for_a_design_that_folds_into_the_target():
    seq, structure = TRNA["DA0580"]
    assert StructureMatch(structure)([seq]).item() == 1.0
    # any sequence matches its own MFE structure
    other = TRNA["DA0260"][0]
    own, _ = RNA.fold(other)
    assert StructureMatch(own)([other]).item() == 1.0
    # DA0260 does not fold into its cloverleaf: 1 - d_bp / n, by hand from ViennaRNA's distance
    target = TRNA["DA0260"][1]
    expected = 1.0 - RNA.bp_distance(own, target) / len(other)
    assert StructureMatch(target)([other]).item() == pytest.approx(expected) and expected < 1.0
    # poly-A stays open: the target's 4 pairs are missing, d_bp = 4
    assert StructureMatch("((((....))))")(["AAAAAAAAAAAA"]).item() == pytest.approx(1 - 4 / 12)
    # a mutant that breaks the acceptor stem scores lower
    mutant = "CCC" + seq[3:]
    assert StructureMatch(structure)([mutant]).item() < 1.0


def ensemble_defect_by_hand(sequence: str, target: str) -> float:
    """1 - (1/n) sum_i P(i in its target state), from ViennaRNA's pair probabilities."""
    compound = RNA.fold_compound(sequence)
    _, energy = compound.mfe()
    compound.exp_params_rescale(energy)
    compound.pf()
    pairs = compound.bpp()  # 1-based upper triangle
    n = len(sequence)
    prob = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for i in range(1, n + 1):
        for j in range(i + 1, n + 1):
            prob[i, j] = prob[j, i] = pairs[i][j]
    table = RNA.ptable(target)
    correct = 0.0
    for i in range(1, n + 1):
        correct += prob[i, table[i]].item() if table[i] else 1.0 - prob[i].sum().item()
    return 1.0 - correct / n


def test_ensemble_defect_equals_the_definition_and_ranks_targets():
    seq, structure = TRNA["DA0580"]
    wrong = "." * len(seq)
    defect = EnsembleDefect(structure)([seq]).item()
    assert defect == pytest.approx(ensemble_defect_by_hand(seq, structure), abs=1e-6)
    assert EnsembleDefect(wrong)([seq]).item() == pytest.approx(
        ensemble_defect_by_hand(seq, wrong), abs=1e-6
    )
    # MFE == target, yet about a fifth of the nucleotides are elsewhere in the ensemble (0.207)
    assert 0.0 <= defect < 0.25 and EnsembleDefect(wrong)([seq]).item() > 0.5
    accuracy = EnsembleDefect(structure, complement=True)
    assert accuracy([seq]).item() == pytest.approx(1.0 - defect)
    assert (accuracy.name, accuracy.higher_is_better) == ("ensemble_accuracy", True)
    assert not EnsembleDefect(structure).higher_is_better


def test_targets_from_the_trna_table():
    # DA0260 is row 0 of the table
    by_id = StructureMatch(target_id="DA0580", targets_path=str(TRNA_TABLE))
    by_row = EnsembleDefect(target_id=0, targets_path=str(TRNA_TABLE))
    assert by_id.target == TRNA["DA0580"][1] and by_id.target_sequence == TRNA["DA0580"][0]
    assert by_id.name == "structure_match:DA0580" and by_row.name == "ensemble_defect:DA0260"
    assert by_row.target == TRNA["DA0260"][1]
    assert by_id([by_id.target_sequence]).item() == 1.0
    assert load_target(TRNA_TABLE, "DA0260")[1] == TRNA["DA0260"][0]


def test_bad_constructor_arguments_name_the_value(tmp_path):
    for bad, message in [
        ("((.)", r"'\(\(\.\)': unmatched '\(' at position 0"),
        ("(.))", r"'\(\.\)\)': unmatched '\)' at position 3"),
        ("((..]]", r"'\(\(\.\.\]\]': character '\]' at position 4"),
        ("", "is not a non-empty dot-bracket string"),
    ]:
        with pytest.raises(ValueError, match=message):
            StructureMatch(bad)
        with pytest.raises(ValueError, match=message):
            check_dot_bracket(bad)
    with pytest.raises(ValueError, match="exactly one of target .* and target_id"):
        StructureMatch()
    with pytest.raises(ValueError, match="exactly one of target .* and target_id"):
        EnsembleDefect("((..))", target_id="DA0580", targets_path=str(TRNA_TABLE))
    with pytest.raises(ValueError, match="target_id='DA0580' needs targets_path"):
        StructureMatch(target_id="DA0580")
    with pytest.raises(
        ValueError, match=r"no row with id 'DA9999' in .*rna_trna1415_with_structure.tsv.gz"
    ):
        StructureMatch(target_id="DA9999", targets_path=str(TRNA_TABLE))
    with pytest.raises(ValueError, match="target row 1405 is out of range: .* has 1405 rows"):
        StructureMatch(target_id=1405, targets_path=str(TRNA_TABLE))
    missing = tmp_path / "nope.tsv"
    with pytest.raises(FileNotFoundError, match="nope.tsv' does not exist"):
        StructureMatch(target_id="DA0580", targets_path=str(missing))
    wrong_columns = tmp_path / "wrong.tsv"
    wrong_columns.write_text("name\tsequence\nx\tACGU\n")
    with pytest.raises(ValueError, match=r"columns \['id', 'seq', 'structure'\] missing"):
        StructureMatch(target_id="x", targets_path=str(wrong_columns))


def test_the_documented_config_builds_a_trna_target(monkeypatch):
    monkeypatch.chdir(ROOT)  # the YAML names data/... relative to the repository
    oracle = documented_oracle("rna-oracle")
    assert isinstance(oracle, StructureMatch) and oracle.name == "structure_match:DA1543"
    # a sequence designed for DA1543's cloverleaf (ViennaRNA inverse_fold from a random start)
    designed = "UUACUUGUGCCUCUGCGAAGUGGGGAGGAAUAUAAGCGAUUCCAAAGUGGUGGCGUAUCCGCCCAGGUAGCAAU"
    assert oracle([designed]).item() == 1.0
    assert oracle([TRNA["DA0580"][0]]).item() < 0.8  # a tRNA folded into its own cloverleaf
