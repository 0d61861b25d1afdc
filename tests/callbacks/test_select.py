"""OnlineExploration(select_from=k): sample k times the quota, query the best by the reward."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from seiko.callbacks import Greedy, OnlineExploration
from seiko.oracles import FunctionOracle
from seiko.oracles.ledger import OracleLedger
from seiko.oracles.store import FeedbackStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers import quiet_trainer, tiny_dna  # noqa: E402


def gc(design: str) -> float:
    return (design.count("G") + design.count("C")) / len(design)


def record_samples(model) -> list[list[str]]:
    """Wrap ``model.sample`` so that every draw's decoded designs are appended to the list."""
    sampled: list[list[str]] = []
    sample = model.sample

    def recording_sample(n, **kwargs):
        x = sample(n, **kwargs)
        sampled.append(model.decode(x))
        return x

    model.sample = recording_sample
    return sampled


def run(dhs: Path, tmp_path: Path, select_from: int):
    """Two rounds (32 then 16 queries) of Greedy on GC content; every sampled design recorded."""
    model, data = tiny_dna(dhs, "finetune")
    sampled = record_samples(model)
    exploration = OnlineExploration(
        FunctionOracle(gc),
        budget=48,
        queries_per_round=[32, 16],
        bonus=Greedy(),
        reward_model={"architecture": "mlp", "epochs": 200, "patience": 200},
        sample_batch_size=64,
        select_from=select_from,
    )
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[exploration],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    rows = FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=exploration.oracle.name)
    return exploration, sampled, rows


def test_selection_samples_more_pays_the_quota_and_queries_better_designs(dhs_table, tmp_path):
    plain, plain_sampled, plain_rows = run(dhs_table, tmp_path / "plain", select_from=1)
    chosen, chosen_sampled, chosen_rows = run(dhs_table, tmp_path / "select", select_from=8)
    # round 0 has no reward model: both sample exactly the quota and measure the same designs
    assert [len(s) for s in plain_sampled] == [32, 16]
    assert len(chosen_sampled[0]) == 32 and len(chosen_sampled[1]) == 8 * 16
    assert [r.design for r in chosen_rows[:32]] == [r.design for r in plain_rows[:32]]
    # the budget and the round's quota are unchanged: only 16 of the 128 are paid for
    assert len(chosen_rows) == len(plain_rows) == 48 == chosen.ledger.spent
    round1 = [r for r in chosen_rows if r.round == 1]
    assert len(round1) == 16 and {r.design for r in round1} <= set(chosen_sampled[1])
    # the reward model learnt GC from 32 answers: the picked designs beat the pool's average
    pool = torch.tensor([gc(d) for d in chosen_sampled[1]])
    picked = torch.tensor([r.value for r in round1])
    assert picked.mean() > pool.mean() + pool.std() / 2
    assert picked.mean() > torch.tensor([r.value for r in plain_rows if r.round == 1]).mean()


def count_g(x: torch.Tensor) -> torch.Tensor:
    """The number of G positions of one-hot DNA (B, 200, 4): a reward with known ranking."""
    return x[..., 2].sum(-1)


def test_select_ranks_by_the_current_reward_and_skips_measured_designs(dhs_table, tmp_path):
    model, _ = tiny_dna(dhs_table, "finetune")
    exploration = OnlineExploration(FunctionOracle(gc), budget=10, queries_per_round=[2])
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    exploration.ledger = OracleLedger(exploration.oracle, store, budget=10)
    measured = "G" * 200
    exploration.ledger.measure([measured], round=0)
    model.reward = count_g
    designs = [measured, "A" * 200, "G" * 10 + "A" * 190, "G" * 50 + "A" * 150]
    designs += ["G" * 10 + "A" * 190, "G" * 30 + "T" * 170]  # a repeat; another candidate
    picked = exploration._select(model, designs, 3)
    assert picked == ["G" * 50 + "A" * 150, "G" * 30 + "T" * 170, "G" * 10 + "A" * 190]
    # fewer new designs than asked for: all of them, nothing measured twice
    assert exploration._select(model, [measured, "A" * 200], 3) == ["A" * 200]


def test_a_resumed_run_rebuilds_the_ensemble_from_the_checkpoint(dhs_table, tmp_path):
    exploration, _, _ = run(dhs_table, tmp_path, select_from=2)
    state = exploration.state_dict()
    assert state["ensemble_input_shape"] == exploration.ensemble.input_shape
    resumed = OnlineExploration(
        FunctionOracle(gc),
        budget=48,
        queries_per_round=[32, 16],
        bonus=Greedy(),
        reward_model={"architecture": "mlp"},
        select_from=2,
    )
    resumed.load_state_dict(state)
    assert resumed.ensemble is not None  # ready to rank a resumed round's candidates
    for name, p in exploration.ensemble.state_dict().items():
        torch.testing.assert_close(resumed.ensemble.state_dict()[name], p)


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_select_from_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=f"select_from must be an integer >= 1, got {bad}"):
        OnlineExploration(FunctionOracle(gc), budget=4, queries_per_round=[4], select_from=bad)


class GCIfPyrimidineStart:
    """GC content, measurable only for designs whose first letter is C or T (a free check)."""

    name = "gc_pyrimidine_start"
    higher_is_better = True

    def fits(self, design: str) -> bool:
        return design[:1] in ("C", "T")

    def __call__(self, designs):
        return torch.tensor([gc(d) if self.fits(d) else float("nan") for d in designs])


def test_with_the_screen_selection_pools_fitting_designs_before_it_picks(dhs_table, tmp_path):
    """The pool is select_from x the quota of designs that pass the screen, not of raw samples:
    a first draw of 4 x 16 of which only part fits must be topped up before the pick."""
    model, data = tiny_dna(dhs_table, "finetune")
    oracle = GCIfPyrimidineStart()
    sampled = record_samples(model)
    exploration = OnlineExploration(
        oracle,
        budget=48,
        queries_per_round=[32, 16],
        bonus=Greedy(),
        reward_model={"architecture": "mlp", "epochs": 20},
        sample_batch_size=64,
        screen=True,
        select_from=4,
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
    rows = FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=oracle.name)
    round1 = [r.design for r in rows if r.round == 1]
    assert len(round1) == 16 and all(oracle.fits(d) for d in round1)
    # round 0 fills 32 fitting designs; round 1 draws until 4 x 16 fitting candidates are pooled
    first = next(
        i
        for i in range(1, len(sampled) + 1)
        if sum(oracle.fits(d) for s in sampled[:i] for d in s) >= 32
    )
    fitting1 = [d for s in sampled[first:] for d in s if oracle.fits(d)]
    assert len(sampled[first]) == 4 * 16  # the first draw of round 1 does not know the pass rate
    assert sum(oracle.fits(d) for d in sampled[first]) < 4 * 16  # so it falls short of the pool
    assert len(fitting1) >= 4 * 16
    assert set(round1) <= set(fitting1)
