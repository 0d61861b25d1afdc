"""OnlinePPO stops when its updates keep paying for nothing new (a model that only repeats)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from seiko.callbacks import OnlinePPO
from seiko.lightning_modules import SamplerConfig, ScheduleConfig, SequenceDiffusion
from seiko.nets import SequenceDenoiser
from seiko.oracles import FunctionOracle
from seiko.oracles.store import FeedbackStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers import quiet_trainer  # noqa: E402


def g_count(design: str) -> float:
    return float(design.count("G"))


def one_letter_model() -> SequenceDiffusion:
    """Designs of one letter (or empty): at most 5 distinct designs exist."""
    torch.manual_seed(0)
    return SequenceDiffusion(
        SequenceDenoiser(5, 1, d_model=8, n_layers=1, n_heads=2),
        vocabulary=["A", "C", "G", "T", "_"],
        seq_len=1,
        pad_symbol="_",
        mode="ppo",
        schedule=ScheduleConfig(num_train_timesteps=50),
        sampler=SamplerConfig(num_steps=3),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )


def loader() -> DataLoader:
    x = torch.zeros(8, 1, 5)

    def collate(items):
        return {"x": torch.stack([item[0] for item in items])}

    return DataLoader(TensorDataset(x), batch_size=4, collate_fn=collate)


def test_ppo_stops_after_idle_updates_instead_of_looping_to_max_epochs(tmp_path):
    model = one_letter_model()
    ppo = OnlinePPO(
        FunctionOracle(g_count), budget=20, samples_per_update=4, ppo_epochs=1, max_idle_updates=3
    )
    trainer = quiet_trainer(
        max_epochs=500, limit_val_batches=0, callbacks=[ppo], default_root_dir=tmp_path
    )
    with pytest.warns(UserWarning, match="3 updates in a row paid for no new design"):
        trainer.fit(model, loader())
    rows = FeedbackStore(tmp_path / "feedback.sqlite").rows(oracle=ppo.oracle.name)
    assert 1 <= len(rows) <= 5  # the budget of 20 cannot be spent on 5 possible designs
    assert ppo.ledger.remaining == 20 - len(rows) > 0
    # it stopped 3 updates after the last one that paid, long before max_epochs
    last_paid = max(row.round for row in rows)
    assert trainer.global_step == last_paid + 1 + 3
    assert trainer.current_epoch < 500


def test_max_idle_updates_must_be_positive():
    with pytest.raises(ValueError, match="max_idle_updates must be >= 1, got 0"):
        OnlinePPO(FunctionOracle(g_count), budget=4, max_idle_updates=0)
