"""OnlineExploration's screen: designs the oracle's free check rejects are never paid for."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from seiko.callbacks import Greedy, OnlineExploration, OnlinePPO
from seiko.oracles import FunctionOracle
from seiko.oracles.store import FeedbackStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers import quiet_trainer, tiny_dna  # noqa: E402


class StartsWithPurine:
    """GC content, measurable only for designs that start with A or G (free to check)."""

    name = "gc_purine_start"
    higher_is_better = True

    def __init__(self) -> None:
        self.asked: list[str] = []

    def fits(self, design: str) -> bool:
        return design[:1] in ("A", "G")

    def __call__(self, designs):
        self.asked += designs
        return torch.tensor(
            [(d.count("G") + d.count("C")) / len(d) if self.fits(d) else math.nan for d in designs],
            dtype=torch.float64,
        )


def gc(design: str) -> float:
    return (design.count("G") + design.count("C")) / len(design)


def run(
    dhs: Path, tmp_path: Path, screen: bool, screen_examples: int = 0
) -> tuple[OnlineExploration, StartsWithPurine]:
    model, data = tiny_dna(dhs, "finetune")
    oracle = StartsWithPurine()
    exploration = OnlineExploration(
        oracle,
        budget=24,
        queries_per_round=[12, 12],
        bonus=Greedy(),
        reward_model={"epochs": 2},
        sample_batch_size=16,
        screen=screen,
        screen_examples=screen_examples,
        max_draws=8,
    )
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[exploration],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    return exploration, oracle


def test_screened_designs_are_never_paid_and_the_quota_is_filled(dhs_table, tmp_path):
    exploration, oracle = run(dhs_table, tmp_path, screen=True)
    # the untrained model starts about half its designs with A or G: the rest are screened out
    assert oracle.asked and all(oracle.fits(d) for d in oracle.asked)
    rows = FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=oracle.name)
    assert len(rows) == 24 == exploration.ledger.spent
    assert all(math.isfinite(row.value) for row in rows)
    rates = [h["feedback/screen_pass_rate"] for h in exploration.history]
    assert len(rates) == 2 and all(0.2 < rate < 0.8 for rate in rates)


def test_screened_designs_join_the_reward_fit_as_free_infeasible_examples(dhs_table, tmp_path):
    exploration, oracle = run(dhs_table, tmp_path, screen=True, screen_examples=5)
    screened = exploration.screened
    assert [r for r, _ in screened] == [0] * 5 + [1] * 5  # 5 per round, each round's own
    assert len({key for _, key in screened}) == 10 and not any(oracle.fits(k) for _, k in screened)
    assert not set(oracle.asked) & {key for _, key in screened}  # never paid
    assert exploration.ledger.spent == 24
    designs, values = exploration._fit_data()
    rows = FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=oracle.name)
    # round 0's 12 answers, its 5 rejects, round 1's 12 answers, its 5 rejects: indices stay put
    expected = (
        [row.design for row in rows[:12]]
        + [k for _, k in screened[:5]]
        + [row.design for row in rows[12:]]
        + [k for _, k in screened[5:]]
    )
    assert designs == expected
    nan = torch.isnan(values)
    assert nan.tolist() == [False] * 12 + [True] * 5 + [False] * 12 + [True] * 5
    # the rejects travel in the checkpoint: a resumed run fits on the same data
    resumed = OnlineExploration(
        oracle, budget=24, queries_per_round=[12, 12], screen=True, screen_examples=5
    )
    resumed.load_state_dict(exploration.state_dict())
    assert resumed.screened == screened


def test_screen_examples_need_the_screen():
    with pytest.raises(ValueError, match="screen_examples needs screen=True"):
        OnlineExploration(StartsWithPurine(), budget=4, queries_per_round=[4], screen_examples=3)
    with pytest.raises(ValueError, match="screen_examples must be >= 0"):
        OnlineExploration(
            StartsWithPurine(), budget=4, queries_per_round=[4], screen=True, screen_examples=-1
        )


def test_without_the_screen_unfit_designs_are_paid_and_come_back_nan(dhs_table, tmp_path):
    exploration, oracle = run(dhs_table, tmp_path, screen=False)
    rows = FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=oracle.name)
    assert len(rows) == 24
    assert any(not oracle.fits(d) for d in oracle.asked)
    assert any(math.isnan(row.value) for row in rows)
    assert all("feedback/screen_pass_rate" not in h for h in exploration.history)


def test_screen_needs_an_oracle_with_a_free_check():
    with pytest.raises(ValueError, match="screen=True needs an oracle with a free check fits"):
        OnlineExploration(FunctionOracle(gc), budget=4, queries_per_round=[4], screen=True)


def test_wrappers_forward_the_inner_oracles_screen():
    from seiko.oracles.rna import StructureMatch
    from seiko.oracles.wrappers import NoisyOracle

    noisy = NoisyOracle(StructureMatch(target="((((....))))"), sigma=0.1)
    assert noisy.fits("GGGGAAAACCCC") and not noisy.fits("GGGGAAAACCC")
    OnlineExploration(noisy, budget=4, queries_per_round=[4], screen=True)  # accepted
    with pytest.raises(ValueError, match="NoisyOracle has none"):
        OnlineExploration(
            NoisyOracle(FunctionOracle(gc), sigma=0.1),
            budget=4,
            queries_per_round=[4],
            screen=True,
        )


class BatchSizes(L.Callback):
    """Records the size of each PPO batch the module trains on."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.ppo_batch is not None:
            self.sizes.append(len(pl_module.ppo_batch["advantages"]))


def test_ppo_screens_too_and_fills_each_update_with_fitting_samples(dhs_table, tmp_path):
    model, data = tiny_dna(dhs_table, "ppo")
    oracle = StartsWithPurine()
    ppo = OnlinePPO(oracle, budget=12, samples_per_update=6, ppo_epochs=1, screen=True)
    sizes = BatchSizes()
    trainer = quiet_trainer(
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[ppo, sizes],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    assert oracle.asked and all(oracle.fits(d) for d in oracle.asked)
    assert len(FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=oracle.name)) == 12
    assert sizes.sizes == [6, 6]  # every update learns from a full batch of measured samples
    rates = [h["feedback/screen_pass_rate"] for h in ppo.history]
    assert len(rates) == 2 and all(0.2 < rate < 0.8 for rate in rates)
    with pytest.raises(ValueError, match="screen=True needs an oracle with a free check fits"):
        OnlinePPO(FunctionOracle(gc), budget=4, screen=True)
