"""Hamming diversity of sequences, by hand."""

from __future__ import annotations

import pytest

from seiko.metrics import HammingDiversity


def test_hamming_diversity_of_three_sequences_by_hand():
    # d(ACGT, ACGA) = 1/4, d(ACGT, TTTT) = 3/4, d(ACGA, TTTT) = 4/4; mean = 2/3.
    metric = HammingDiversity(alphabet="ACGT", length=4)
    metric.update(["ACGT", None, "ACGA"])
    metric.update(["TTTT"])
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_hamming_diversity_merged_across_ranks_counts_cross_rank_pairs():
    rank0 = HammingDiversity(alphabet="ACGT", length=4)
    rank1 = HammingDiversity(alphabet="ACGT", length=4)
    rank0.update(["ACGT"])
    rank1.update(["ACGA", "TTTT"])
    rank0.merge_state(rank1)  # the DDP "sum" reduction of the letter counts
    assert rank0.compute().item() == pytest.approx(2 / 3)


def test_hamming_diversity_of_identical_sequences_is_zero_and_nan_below_two():
    metric = HammingDiversity(alphabet="AC", length=3)
    metric.update(["ACA"])
    assert metric.compute().isnan()
    metric.update(["ACA"])
    assert metric.compute().item() == 0.0


def test_hamming_diversity_rejects_bad_sequences_and_alphabets():
    metric = HammingDiversity(alphabet="ACGT", length=4)
    with pytest.raises(ValueError, match="sequence 1 has length 3, expected 4"):
        metric.update(["ACGT", "ACG"])
    with pytest.raises(ValueError, match="sequence 0 has letter 'U', not in alphabet 'ACGT'"):
        metric.update(["ACGU"])
    with pytest.raises(ValueError, match="without repeats, got 'ACGA'"):
        HammingDiversity(alphabet="ACGA", length=4)
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        HammingDiversity(alphabet="ACGT", length=0)
