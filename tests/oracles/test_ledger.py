"""OracleLedger: a hard global budget, no design paid twice, answers committed before returning."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seiko.oracles import FeedbackStore, FunctionOracle, NoisyOracle, OracleLedger


class CountingOracle:
    """Value = number of 'G' in the design (NaN if it holds 'X'); remembers every design asked."""

    name = "g-count"
    higher_is_better = True

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, designs: list[str]) -> torch.Tensor:
        self.asked.extend(designs)
        return torch.tensor(
            [math.nan if "X" in d else float(d.count("G")) for d in designs], dtype=torch.float64
        )


def truth(design: str) -> float:
    return math.nan if "X" in design else float(design.count("G"))


@pytest.mark.parametrize("seed", range(12))
def test_budget_is_never_exceeded_whatever_the_batches(tmp_path: Path, seed: int) -> None:
    """Property: spent == min(budget, distinct designs asked so far), over random batch streams.

    Batches of random size (0 to 30) draw from a small pool so that duplicates within a batch and
    across rounds are common; the store is sometimes reopened (a restart) between rounds.
    """
    rng = random.Random(seed)
    budget = rng.randint(0, 40)
    pool = ["".join(rng.choice("AGTX") for _ in range(rng.randint(1, 4))) for _ in range(60)]
    path = tmp_path / "feedback.sqlite"
    oracle = CountingOracle()
    ledger = OracleLedger(oracle, FeedbackStore(path), budget)
    seen: set[str] = set()
    for round_ in range(rng.randint(1, 8)):
        if rng.random() < 0.3:
            ledger.store.close()
            ledger = OracleLedger(oracle, FeedbackStore(path), budget)
        batch = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
        values = ledger.measure(batch, round_)
        seen.update(batch)
        assert ledger.spent == min(budget, len(seen)) == len(oracle.asked)
        assert len(set(oracle.asked)) == len(oracle.asked)  # never paid twice
        assert ledger.remaining == budget - ledger.spent
        report = ledger.last_report
        assert report.requested == len(batch) and report.unique == len(set(batch))
        assert report.reused + report.queried + report.unmeasured == report.unique
        for design, value, unmeasured in zip(
            batch, values.tolist(), report.unmeasured_mask.tolist(), strict=True
        ):
            if unmeasured:
                assert math.isnan(value) and design not in ledger.store
            else:
                assert value == truth(design) or (math.isnan(value) and math.isnan(truth(design)))
    ledger.store.close()


def test_duplicates_cost_nothing(tmp_path: Path, assert_same: Callable[..., None]) -> None:
    path = tmp_path / "feedback.sqlite"
    oracle = CountingOracle()
    ledger = OracleLedger(oracle, FeedbackStore(path), budget=10)
    assert_same(ledger.measure(["GG", "AG", "GG", "GG"], round=0), [2, 1, 2, 2])
    assert oracle.asked == ["GG", "AG"] and ledger.spent == 2
    assert ledger.last_report.queried == 2 and ledger.last_report.reused == 0

    # a later round: known designs come from the store, only the new one is paid
    assert_same(ledger.measure(["AG", "GGG", "GG"], round=1), [1, 3, 2])
    assert oracle.asked == ["GG", "AG", "GGG"] and ledger.spent == 3
    assert ledger.last_report.reused == 2

    # a restart: a new process opens the same store, with a fresh oracle
    ledger.store.close()
    fresh = CountingOracle()
    resumed = OracleLedger(fresh, FeedbackStore(path), budget=10)
    assert (resumed.spent, resumed.remaining) == (3, 7)
    assert_same(resumed.measure(["GGG", "GG", "AG"], round=2), [3, 2, 1])
    assert fresh.asked == [] and resumed.spent == 3


def test_budget_runs_out_midway(tmp_path: Path, assert_same: Callable[..., None]) -> None:
    oracle = CountingOracle()
    ledger = OracleLedger(oracle, FeedbackStore(tmp_path / "f.sqlite"), budget=3)
    values = ledger.measure(["G", "GG", "G", "GGG", "A", "AA", "GG"], round=0)
    # new designs are paid in order of first appearance until the budget is spent
    assert oracle.asked == ["G", "GG", "GGG"]
    assert_same(values, [1, 2, 1, 3, math.nan, math.nan, 2])
    report = ledger.last_report
    assert (report.queried, report.unmeasured) == (3, 2)
    assert report.unmeasured_mask.tolist() == [False, False, False, False, True, True, False]
    # with nothing left, stored designs are still answered, new ones are not
    assert_same(ledger.measure(["GGG", "AAA"], round=1), [3, math.nan])
    assert ledger.spent == 3 and ledger.remaining == 0 and ledger.last_report.unmeasured == 1


def assay(design: str) -> float:
    """Per-design assay that fails on designs starting with '!'."""
    if design.startswith("!"):
        raise RuntimeError(f"instrument error on {design}")
    return truth(design)


class BatchAssay:
    """The same assay run on whole plates: one failing design fails the plate."""

    name = "assay"
    higher_is_better = True

    def __call__(self, designs: list[str]) -> list[float]:
        return [assay(design) for design in designs]


@pytest.mark.parametrize(
    "oracle", [FunctionOracle(assay), BatchAssay()], ids=["per-design", "batch"]
)
def test_infeasible_and_failing_designs_are_stored_and_paid(
    tmp_path: Path, oracle: object, assert_same: Callable[..., None]
) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    ledger = OracleLedger(oracle, store, budget=5)
    assert_same(ledger.measure(["GX", "!G", "GG"], round=0), [math.nan, math.nan, 2])
    assert ledger.spent == 3 and ledger.last_report.infeasible == 2
    rows = {row.design: row for row in store.rows()}
    assert not rows["GX"].feasible and rows["GX"].error is None
    assert not rows["!G"].feasible and rows["!G"].error == "RuntimeError: instrument error on !G"
    assert rows["GG"].feasible and rows["GG"].value == 2.0
    # a stored infeasible design is not paid again
    assert_same(ledger.measure(["GX", "!G"], round=1), [math.nan, math.nan])
    assert ledger.spent == 3 and ledger.last_report.reused == 2


def test_noisy_oracle_answers_are_stored_with_their_noise_free_values(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    ledger = OracleLedger(NoisyOracle(CountingOracle(), sigma=0.5, seed=0), store, budget=10)
    values = ledger.measure(["G", "GG", "X"], round=0)
    rows = store.rows()
    assert [row.oracle for row in rows] == ["g-count+noise(sigma=0.5)"] * 3
    assert [row.noise_free for row in rows] == [1.0, 2.0, None]
    assert [row.value for row in rows[:2]] == values[:2].tolist() != [1.0, 2.0]


def test_offline_rows_are_reused_and_not_spent(
    tmp_path: Path, assert_same: Callable[..., None]
) -> None:
    table = tmp_path / "previous_campaign.csv"
    table.write_text("design,value,oracle\nGGGG,4.0,g-count\nAAAA,0.0,g-count\n", encoding="utf-8")
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.import_rows(table)
    oracle = CountingOracle()
    ledger = OracleLedger(oracle, store, budget=1)
    assert_same(ledger.measure(["GGGG", "AAAA", "G"], round=0), [4, 0, 1])
    assert oracle.asked == ["G"] and ledger.spent == 1 and len(store) == 3


def test_keys_identify_designs_the_store_cannot_hold(
    tmp_path: Path, assert_same: Callable[..., None]
) -> None:
    def total(design: torch.Tensor) -> float:
        return float(design.sum())

    ledger = OracleLedger(FunctionOracle(total), FeedbackStore(tmp_path / "f.sqlite"), budget=5)
    images = [torch.ones(2, 2), torch.zeros(2, 2), torch.ones(2, 2)]
    values = ledger.measure(images, round=0, keys=["ones", "zeros", "ones"])
    assert_same(values, [4, 0, 4])
    assert ledger.spent == 2
    with pytest.raises(ValueError, match=r"design key 0 is a Tensor; .*\(pass keys="):
        ledger.measure(images, round=1)
    with pytest.raises(ValueError, match="got 1 keys for 3 designs"):
        ledger.measure(images, round=1, keys=["ones"])


def test_sigkill_right_after_measure_loses_no_paid_query(
    tmp_path: Path,
    run_then_sigkill: Callable[[Callable[[], object]], None],
    assert_same: Callable[..., None],
) -> None:
    path = tmp_path / "feedback.sqlite"

    def measure_in_child() -> None:
        ledger = OracleLedger(FunctionOracle(len, name="len"), FeedbackStore(path), budget=5)
        ledger.measure(["A", "BB", "A", "CCC"], round=0)

    run_then_sigkill(measure_in_child)
    ledger = OracleLedger(FunctionOracle(len, name="len"), FeedbackStore(path), budget=5)
    assert ledger.spent == 3 and ledger.remaining == 2
    assert_same(ledger.measure(["CCC", "BB"], round=1), [3, 2])
    assert ledger.last_report.queried == 0


def test_negative_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="budget >= 0, got -1"):
        OracleLedger(CountingOracle(), FeedbackStore(tmp_path / "f.sqlite"), budget=-1)
