"""OnlineExploration's kl_budget: a per-round trust region that skips a round's remaining steps."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from seiko.callbacks import Greedy, OnlineExploration
from seiko.oracles import FunctionOracle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers import quiet_trainer, tiny_dna  # noqa: E402


def gc(design: str) -> float:
    return (design.count("G") + design.count("C")) / len(design)


def run(dhs: Path, tmp_path: Path, kl_budget: float | None) -> tuple[L.Trainer, OnlineExploration]:
    model, data = tiny_dna(
        dhs,
        "finetune",
        kl_weight=0.01,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
    )
    exploration = OnlineExploration(
        FunctionOracle(gc),
        budget=16,
        queries_per_round=[8, 8],
        bonus=Greedy(),
        reward_model={"epochs": 2},
        sample_batch_size=8,
        kl_budget=kl_budget,
    )
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=0,
        callbacks=[exploration],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    return trainer, exploration


def test_a_round_stops_once_the_chain_kl_exceeds_the_budget(dhs_table, tmp_path):
    # each round's first step runs at KL 0 (the reference is the model as the round starts);
    # after one update the KL is positive and, over a tiny budget, ends the round at step 2
    trainer, exploration = run(dhs_table, tmp_path / "tight", kl_budget=1e-12)
    assert trainer.global_step == 2 * 2
    assert [h.get("finetune/steps") for h in exploration.history] == [2.0, 2.0]
    trainer, exploration = run(dhs_table, tmp_path / "loose", kl_budget=1e9)
    assert trainer.global_step == 2 * 4
    assert all("finetune/steps" not in h for h in exploration.history)


def test_kl_budget_must_be_positive():
    with pytest.raises(ValueError, match="kl_budget must be > 0 or None, got 0"):
        OnlineExploration(FunctionOracle(gc), budget=4, queries_per_round=[4], kl_budget=0)
