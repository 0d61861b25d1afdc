"""Validity, uniqueness and novelty of string designs, by hand."""

from __future__ import annotations

import pytest
import torch

from seiko.metrics import Novelty, Uniqueness, Validity
from seiko.metrics.designs import design_keys

NAN = float("nan")


def test_validity_of_values_and_of_designs():
    metric = Validity()
    metric.update(torch.tensor([1.0, NAN, 0.0, NAN]))  # 2 of 4
    metric.update(["ACGT", None])  # 1 of 2
    assert metric.compute().item() == pytest.approx(3 / 6)


def test_validity_uses_canonicalize_to_find_infeasible_designs():
    metric = Validity(canonicalize=lambda s: s.upper() if set(s) <= set("acgt") else None)
    metric.update(["acgt", "acgx", None, "aaaa"])
    assert metric.compute().item() == pytest.approx(2 / 4)


def test_validity_is_nan_before_any_design_and_rejects_2d_values():
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert Validity().compute().isnan()
    with pytest.raises(ValueError, match=r"1-D tensor, got shape \(2, 1\)"):
        Validity().update(torch.ones(2, 1))


def test_uniqueness_by_hand():
    metric = Uniqueness()
    metric.update(["AAAA", "ACGT", None])
    metric.update(["AAAA", "CCCC", None])
    # feasible: AAAA, ACGT, AAAA, CCCC -> 3 distinct of 4
    assert metric.compute().item() == pytest.approx(3 / 4)
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert Uniqueness().compute().isnan()


def test_uniqueness_merged_across_ranks_counts_cross_rank_duplicates():
    rank0, rank1 = Uniqueness(), Uniqueness()
    rank0.update(["AAAA", "ACGT"])
    rank1.update(["ACGT", "CCCC"])
    rank0.merge_state(rank1)  # the DDP "cat" reduction of the two ranks' states
    assert rank0.compute().item() == pytest.approx(3 / 4)


def test_uniqueness_canonicalizes_before_comparing():
    metric = Uniqueness(canonicalize=str.upper)
    metric.update(["acgt", "ACGT", "aaaa"])
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_design_metrics_reject_non_string_designs():
    with pytest.raises(TypeError, match="design 1 must be a str or None, got int: 7"):
        Uniqueness().update(["AAAA", 7])


def test_novelty_by_hand_over_distinct_designs():
    metric = Novelty(reference=["AAAA", "CCCC"])
    metric.update(["AAAA", "ACGT", "ACGT", None, "GGGG"])
    # distinct feasible: AAAA (known), ACGT, GGGG (novel) -> 2 / 3
    assert metric.compute().item() == pytest.approx(2 / 3)
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert Novelty(reference=["AAAA"]).compute().isnan()


def test_novelty_rejects_infeasible_reference_designs():
    with pytest.raises(ValueError, match="1 of 3 reference designs are infeasible, e.g. 'xx'"):
        Novelty(reference=["acgt", "xx", "aaaa"], canonicalize=lambda s: s if len(s) == 4 else None)


def test_design_keys_are_deterministic_and_distinct():
    keys = design_keys(["AAAA", "AAAA", "AAAB", ""])
    assert keys.dtype == torch.int64
    assert keys[0] == keys[1]
    assert len(set(keys.tolist())) == 3
