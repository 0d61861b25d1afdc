"""JASPAR motif oracles against Biopython's own scoring, closed forms and planted motifs."""

from __future__ import annotations

import csv
import gzip
import math
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from Bio.Seq import Seq
from jsonargparse import ArgumentParser

from seiko.oracles import Oracle
from seiko.oracles.dna import (
    CELL_TYPE_MOTIFS,
    EnhancerScore,
    MotifPresence,
    MotifScanner,
    load_motifs,
    score_threshold,
)

ROOT = Path(__file__).resolve().parents[2]
BAD = ["", None, 5, "ACGTN" * 10, "acgt" * 10, "ACGU" * 10, "ACGT ACGT" * 5, "ACGTACG"]


def documented_oracle(marker: str) -> Oracle:
    """The oracle of the YAML block after ``<!-- marker -->`` in docs/sequences.md, built the way
    LightningCLI builds it (jsonargparse, ``class_path`` + ``init_args``)."""
    text = (ROOT / "docs" / "sequences.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```yaml\n(.*?)```", text, re.S).group(1)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--oracle", type=Oracle)
    return parser.instantiate(parser.parse_string(block)).oracle


def random_dna(length: int, rng: random.Random) -> str:
    return "".join(rng.choice("ACGT") for _ in range(length))


def consensus(log_odds: torch.Tensor) -> str:
    """The best-scoring word of a (4, K) log-odds matrix."""
    return "".join("ACGT"[i] for i in log_odds.argmax(dim=0).tolist())


def shuffled(sequence: str, seed: int) -> str:
    letters = list(sequence)
    random.Random(seed).shuffle(letters)
    return "".join(letters)


def reverse_complement(sequence: str) -> str:
    return str(Seq(sequence).reverse_complement())


@pytest.fixture(scope="module")
def hnf4a() -> MotifPresence:
    return MotifPresence(["HNF4A"])


@pytest.fixture(scope="module")
def hepg2() -> EnhancerScore:
    return EnhancerScore("HepG2")


def test_protocol_shape_dtype_nan_for_bad_designs_and_pickling(hnf4a, hepg2):
    good = random_dna(200, random.Random(0))
    for oracle in (hnf4a, hepg2, MotifPresence(["MA0047.4"], statistic="margin")):
        assert isinstance(oracle, Oracle)
        values = oracle([good, *BAD, good[:50]])
        assert values.dtype == torch.float64 and values.shape == (len(BAD) + 2,)
        # "ACGTACG" (7 bp) is valid DNA but shorter than every motif scanned here: NaN too
        assert values[1:-1].isnan().all() and not values[[0, -1]].isnan().any()
        assert oracle([]).shape == (0,)
        assert torch.equal(pickle.loads(pickle.dumps(oracle))([good]), values[:1])


def test_names_resolve_to_every_latest_core_matrix():
    motifs = load_motifs(["HNF4A", "hnf4a", "MA0114.4", "MA0047"], release="JASPAR2024")
    assert [m.matrix_id for m in motifs["HNF4A"]] == ["MA0114.5", "MA1494.2"]
    assert [m.matrix_id for m in motifs["hnf4a"]] == ["MA0114.5", "MA1494.2"]  # any case
    assert [m.matrix_id for m in motifs["MA0114.4"]] == ["MA0114.4"]  # an older version, by ID
    assert [m.matrix_id for m in motifs["MA0047"]] == ["MA0047.4"]  # no version: the latest
    assert all(torch.isfinite(m.log_odds).all() for ms in motifs.values() for m in ms)


def test_scanner_equals_biopython_on_both_strands_and_mixed_lengths():
    """The conv1d scanner against Biopython's PSSM.calculate, for matrices of 9 and 14 positions
    and sequences of three lengths in one batch."""
    matrices = load_motifs(["HNF4A"])["HNF4A"]
    from pyjaspar import jaspardb

    db = jaspardb(release="JASPAR2024")
    rng = random.Random(1)
    designs = [random_dna(n, rng) for n in (14, 30, 200, 30, 200)]
    best = MotifScanner(matrices).best_scores(designs)
    assert torch.equal(MotifScanner(matrices, chunk_size=2).best_scores(designs), best)
    for j, matrix in enumerate(matrices):
        pssm = db.fetch_motif_by_id(matrix.matrix_id).counts.normalize(0.8).log_odds()
        for i, design in enumerate(designs):
            forward = np.atleast_1d(pssm.calculate(design))
            backward = np.atleast_1d(pssm.reverse_complement().calculate(design))
            expected = max(forward.max(), backward.max())
            assert best[i, j].item() == pytest.approx(expected, abs=1e-4)


def test_threshold_selects_the_windows_that_biopython_and_the_definition_select():
    matrix = load_motifs(["MA0114.5"], fpr=1e-4)["MA0114.5"][0]
    from pyjaspar import jaspardb

    pssm = jaspardb(release="JASPAR2024").fetch_motif_by_id("MA0114.5").counts
    biopython = pssm.normalize(0.8).log_odds().distribution().threshold_fpr(1e-4)
    # all 4^9 words: P(score >= t) <= 1e-4, the next score below t fails, Biopython agrees
    words = torch.cartesian_prod(*[torch.arange(4)] * matrix.length)
    scores = matrix.log_odds[words, torch.arange(matrix.length)].sum(dim=1)
    hits = scores >= matrix.threshold
    assert 0 < hits.double().mean() <= 1e-4
    assert (scores >= scores[~hits].max()).double().mean() > 1e-4
    assert torch.equal(hits, scores >= biopython)
    # a matrix too short to reach the fpr: the threshold is its best score
    short = torch.tensor([[1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])
    assert score_threshold(short, 1e-4) == pytest.approx(2.0 - 2 * 1e-3 / 2)
    # GATA1's 7 positions: 4^7 words, each with probability 6.1e-5, only the consensus is a hit
    gata1 = load_motifs(["MA0035.5"])["MA0035.5"][0]
    best = gata1.log_odds.max(dim=0).values.sum().item()
    assert best - 0.01 < gata1.threshold <= best


def test_planted_motif_beats_its_shuffle_on_either_strand(hnf4a):
    rng = random.Random(2)
    matrix = hnf4a.motifs["HNF4A"][0]
    word = consensus(matrix.log_odds)
    background = random_dna(200, rng)
    planted = background[:90] + word + background[90 + len(word) :]
    margins = MotifPresence(["MA0114.5"], statistic="margin")([planted])
    # the consensus is the best window: S = sum of column maxima (Biopython's pssm.max)
    best = matrix.log_odds.max(dim=0).values.sum().item()
    assert margins.item() == pytest.approx(best - matrix.threshold, abs=1e-4)
    others = [shuffled(planted, seed) for seed in range(20)]
    values = hnf4a([planted, reverse_complement(planted), *others])
    assert values[0] > 0.99 and values[1] == pytest.approx(values[0].item(), abs=1e-6)
    assert values[2:].max() < values[0] and values[2:].mean() < 0.5


def test_presence_is_the_sigmoid_of_the_margin(hnf4a):
    designs = [random_dna(200, random.Random(seed)) for seed in range(50)]
    margin = MotifPresence(["HNF4A"], statistic="margin")(designs)
    sharp = MotifPresence(["HNF4A"], temperature=0.5)(designs)
    torch.testing.assert_close(hnf4a(designs), torch.sigmoid(margin))
    torch.testing.assert_close(sharp, torch.sigmoid(margin / 0.5))
    # a mean over motifs
    both = MotifPresence(["HNF4A", "FOXA2"])(designs)
    torch.testing.assert_close(both, (hnf4a(designs) + MotifPresence(["FOXA2"])(designs)) / 2)


def test_hepg2_enhancer_formula_and_direction(hepg2):
    assert hepg2.on_target == list(CELL_TYPE_MOTIFS["HepG2"])
    assert set(hepg2.off_target) == {
        m for c in ("K562", "GM12878", "hESC") for m in CELL_TYPE_MOTIFS[c]
    }
    rng = random.Random(3)
    background = random_dna(200, rng)

    def plant(names: list[str]) -> str:
        words = [consensus(hepg2.motifs[n][0].log_odds) for n in names]
        middle = "".join(w + "AT" for w in words)
        return background[:50] + middle + background[50 + len(middle) :]

    liver = plant(["HNF4A", "FOXA2", "HNF1A", "CEBPB"])
    blood = plant(["GATA1::TAL1", "SPI1", "IRF4"])
    assert len(liver) == len(blood) == 200
    values = hepg2([liver, blood, background])
    assert values[0] > 0.7 and values[1] < -0.2 and values[1] < values[2] < values[0]
    assert ((values > -1) & (values < 1)).all()
    p = {m: MotifPresence([m])([liver, blood, background]) for m in hepg2.motifs}
    on = torch.stack([p[m] for m in hepg2.on_target]).mean(dim=0)
    off = torch.stack([p[m] for m in hepg2.off_target]).mean(dim=0)
    torch.testing.assert_close(values, on - off)
    custom = EnhancerScore("HepG2", on_target=["HNF4A"], off_target=[])
    torch.testing.assert_close(custom([liver]), p["HNF4A"][:1])


def test_hepg2_regions_score_higher_than_the_other_cell_types(hepg2):
    """On the 16,000 shipped DHS regions (4,000 per cell type): HepG2 +0.182 on average, the
    others -0.031 to -0.071 (per-type standard deviations about 0.15)."""
    with gzip.open(ROOT / "data" / "dna_dhs_human_200bp_16k.tsv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    values = hepg2([row["sequence"] for row in rows])
    assert not values.isnan().any()
    cell_types = [row["TAG"].split("_")[0] for row in rows]
    means = {
        c: values[[t == c for t in cell_types]].mean().item()
        for c in ("HepG2", "K562", "GM12878", "hESCT0")
    }
    assert means["HepG2"] > 0.15
    assert all(means["HepG2"] - means[c] > 0.15 for c in ("K562", "GM12878", "hESCT0")), means


def test_bad_constructor_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"unknown JASPAR motif 'HNF4Z'.*close names: \[.*'HNF4A'"):
        MotifPresence(["HNF4Z"])
    with pytest.raises(ValueError, match="unknown JASPAR motif 'MA9999.1'"):
        MotifPresence(["MA9999.1"])
    with pytest.raises(ValueError, match="unknown JASPAR release 'JASPAR1999'"):
        MotifPresence(["HNF4A"], release="JASPAR1999")
    with pytest.raises(ValueError, match="non-empty list of motif IDs or names, got 'HNF4A'"):
        MotifPresence("HNF4A")
    with pytest.raises(ValueError, match=r"motifs \['SPI1'\] are listed more than once"):
        MotifPresence(["SPI1", "HNF4A", "SPI1"])
    with pytest.raises(ValueError, match="unknown statistic 'mean'"):
        MotifPresence(["HNF4A"], statistic="mean")
    with pytest.raises(ValueError, match="temperature must be > 0 .*got 0"):
        MotifPresence(["HNF4A"], temperature=0)
    with pytest.raises(ValueError, match=r"unknown cell type 'Liver'; expected one of \['HepG2'"):
        EnhancerScore("Liver")
    with pytest.raises(ValueError, match=r"motifs \['SPI1'\] are both on-target and off-target"):
        EnhancerScore("HepG2", on_target=["HNF4A", "SPI1"])
    assert math.isfinite(load_motifs(["SPI1"])["SPI1"][0].threshold)


def test_the_documented_config_builds_the_hepg2_oracle(hepg2):
    oracle = documented_oracle("dna-oracle")
    assert isinstance(oracle, EnhancerScore) and oracle.name == "enhancer_HepG2"
    designs = [random_dna(200, random.Random(seed)) for seed in range(5)]
    assert torch.equal(oracle(designs), hepg2(designs))
