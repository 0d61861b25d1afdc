"""Oracle-budget metrics against hand computations of the PMO definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seiko.metrics import BestValue, TopKAUC, TopKMean, running_top_k_mean, top_k_auc

NAN = float("nan")
# 10 calls; NaN = infeasible. Running top-2 means, by hand:
#   call  1: 1     -> {1}       1.0
#   call  2: NaN   -> {1}       1.0
#   call  3: 3     -> {3, 1}    2.0
#   call  4: 2     -> {3, 2}    2.5
#   call  5: NaN   -> {3, 2}    2.5
#   call  6: 5     -> {5, 3}    4.0
#   call  7: 0     -> {5, 3}    4.0
#   call  8: 4     -> {5, 4}    4.5
#   call  9: 6     -> {6, 5}    5.5
#   call 10: NaN   -> {6, 5}    5.5
VALUES = torch.tensor([1.0, NAN, 3.0, 2.0, NAN, 5.0, 0.0, 4.0, 6.0, NAN])
RUNNING_TOP2 = [1.0, 1.0, 2.0, 2.5, 2.5, 4.0, 4.0, 4.5, 5.5, 5.5]
# PMO AUC with k=2, budget=12, log_every=4: points (0, 0), (4, 2.5), (8, 4.5), (10, 5.5);
# trapezoids 4 * 2.5 / 2 + 4 * (2.5 + 4.5) / 2 + 2 * (4.5 + 5.5) / 2 = 5 + 14 + 10 = 29;
# held at 5.5 for the 2 calls left: + 11 = 40; divided by the budget: 40 / 12.
AUC_K2_B12_L4 = 40 / 12


def pmo_reference(values: list[float], k: int, budget: int, log_every: int) -> float:
    """PMO's top-k AUC written out from its definition (feasible values only), as a cross-check."""
    n = min(len(values), budget)
    xs = [0]
    ys = [0.0]
    for c in [*range(log_every, n, log_every), n]:
        xs.append(c)
        ys.append(float(np.mean(sorted(values[:c], reverse=True)[:k])))
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return (area + (budget - n) * ys[-1]) / budget


def test_running_top_k_mean_by_hand():
    out = running_top_k_mean(VALUES, k=2)
    assert out.dtype == torch.float64
    assert out.tolist() == pytest.approx(RUNNING_TOP2)


def test_running_top_k_mean_is_nan_before_the_first_feasible_value():
    out = running_top_k_mean(torch.tensor([NAN, NAN, 2.0, 1.0]), k=1)
    assert out[:2].isnan().all()
    assert out[2:].tolist() == [2.0, 2.0]


def test_top_k_auc_by_hand():
    auc = top_k_auc(VALUES, k=2, budget=12, log_every=4)
    assert auc.item() == pytest.approx(AUC_K2_B12_L4)


def test_top_k_auc_matches_the_pmo_definition_on_random_histories():
    generator = torch.Generator().manual_seed(0)
    for n, k, budget, log_every in [(250, 10, 300, 100), (300, 10, 300, 100), (57, 3, 60, 7)]:
        values = torch.rand(n, generator=generator, dtype=torch.float64)
        expected = pmo_reference(values.tolist(), k, budget, log_every)
        assert top_k_auc(values, k, budget, log_every).item() == pytest.approx(expected)


def test_top_k_auc_fills_the_rest_of_the_budget_with_the_final_value():
    # Points (0, 0), (2, 4): area 4; held at 4 for 8 calls: + 32; / 10.
    auc = top_k_auc(torch.tensor([2.0, 4.0]), k=1, budget=10, log_every=100)
    assert auc.item() == pytest.approx(3.6)


def test_top_k_auc_ignores_calls_past_the_budget():
    truncated = top_k_auc(VALUES[:8], k=2, budget=8, log_every=4)
    assert top_k_auc(VALUES, k=2, budget=8, log_every=4).item() == pytest.approx(truncated.item())


def test_top_k_auc_is_zero_without_feasible_values():
    assert top_k_auc(torch.tensor([NAN, NAN]), k=10, budget=5).item() == 0.0
    assert top_k_auc(torch.empty(0), k=10, budget=5).item() == 0.0


def test_top_k_auc_counts_infeasible_calls_against_the_budget():
    # The same feasible values, found one call later: a smaller area.
    early = top_k_auc(torch.tensor([1.0]), k=1, budget=4, log_every=1)
    late = top_k_auc(torch.tensor([NAN, 1.0]), k=1, budget=4, log_every=1)
    assert early.item() == pytest.approx((0.5 + 3.0) / 4)
    assert late.item() == pytest.approx((0.5 + 2.0) / 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be >= 1, got 0"),
        ({"budget": 0}, "budget must be >= 1, got 0"),
        ({"log_every": -1}, "log_every must be >= 1, got -1"),
    ],
)
def test_top_k_auc_rejects_bad_arguments(kwargs, match):
    arguments = {"k": 2, "budget": 10, "log_every": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        top_k_auc(VALUES, **arguments)
    with pytest.raises(ValueError, match=match):
        TopKAUC(**arguments)


def test_topk_auc_metric_in_batches_equals_the_function():
    metric = TopKAUC(k=2, budget=12, log_every=4)
    for batch in VALUES.split(3):
        metric.update(batch)
    assert metric.compute().item() == pytest.approx(AUC_K2_B12_L4)
    metric.reset()
    metric.update(torch.tensor([2.0, 4.0]))
    assert metric.compute().item() == pytest.approx(top_k_auc(torch.tensor([2.0, 4.0]), 2, 12, 4))


def test_topk_auc_metric_forward_accumulates():
    metric = TopKAUC(k=2, budget=12, log_every=4)
    for batch in VALUES.split(4):
        metric(batch)  # forward: batch value, and the global state keeps the call order
    assert metric.compute().item() == pytest.approx(AUC_K2_B12_L4)


def test_topk_auc_metric_orders_calls_by_call_index():
    metric = TopKAUC(k=2, budget=12, log_every=4)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    metric.update(VALUES[order], call_index=order)
    assert metric.compute().item() == pytest.approx(AUC_K2_B12_L4)


def test_topk_auc_metric_counts_a_call_seen_twice_once():
    # What every rank holding the same broadcast history looks like after the DDP gather.
    metric = TopKAUC(k=2, budget=12, log_every=4)
    metric.update(VALUES, call_index=torch.arange(10))
    metric.update(VALUES, call_index=torch.arange(10))
    assert metric.compute().item() == pytest.approx(AUC_K2_B12_L4)


def test_topk_auc_metric_rejects_conflicting_or_missing_calls():
    metric = TopKAUC(k=2, budget=12)
    metric.update(torch.tensor([1.0, 2.0]), call_index=torch.tensor([0, 1]))
    metric.update(torch.tensor([3.0]), call_index=torch.tensor([1]))
    with pytest.raises(ValueError, match="call 1 was recorded with two values, 2.0 and 3.0"):
        metric.compute()
    metric = TopKAUC(k=2, budget=12)
    metric.update(torch.tensor([1.0, 2.0]), call_index=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="call 0 is missing"):
        metric.compute()


@pytest.mark.parametrize(
    ("values", "call_index", "match"),
    [
        (torch.ones(2, 2), None, r"values must be a 1-D tensor, got \(2, 2\)"),
        (torch.tensor([1.0, -math.inf]), None, "values must be finite or NaN .* got -inf"),
        (torch.ones(2), torch.arange(3), r"call_index must have the shape of values \(2,\)"),
        (torch.ones(2), torch.tensor([-1, 0]), "call_index must be >= 0, got -1"),
    ],
)
def test_topk_auc_metric_rejects_bad_updates(values, call_index, match):
    with pytest.raises(ValueError, match=match):
        TopKAUC(budget=10).update(values, call_index)


def test_topk_mean_by_hand():
    metric = TopKMean(k=3)
    metric.update(torch.tensor([1.0, NAN, 3.0]))
    assert metric.compute().item() == pytest.approx(2.0)  # fewer than 3 feasible: mean of {3, 1}
    metric.update(torch.tensor([2.0, 5.0, NAN]))
    assert metric.compute().item() == pytest.approx(10 / 3)  # {5, 3, 2}


def test_topk_mean_is_nan_without_feasible_values_and_dedups_replicas():
    metric = TopKMean(k=2)
    metric.update(torch.tensor([NAN, NAN]))
    assert metric.compute().isnan()
    metric = TopKMean(k=2)
    metric.update(torch.tensor([4.0, 1.0]), call_index=torch.tensor([0, 1]))
    metric.update(torch.tensor([4.0, 1.0]), call_index=torch.tensor([0, 1]))
    assert metric.compute().item() == pytest.approx(2.5)  # not {4, 4}


def test_best_value_by_hand_and_merged():
    metric = BestValue()
    metric.update(torch.tensor([NAN]))
    assert metric.compute().isnan()
    metric.update(torch.tensor([1.0, NAN, -2.0]))
    assert metric.compute().item() == 1.0
    metric, other = BestValue(), BestValue()
    metric.update(torch.tensor([1.0, NAN, -2.0]))
    other.update(torch.tensor([0.5, 3.0]))
    metric.merge_state(other)  # the DDP reduction (max) of two ranks' states
    assert metric.compute().item() == 3.0
