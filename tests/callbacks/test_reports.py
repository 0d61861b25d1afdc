"""FeedbackReport, and the online loop on the latent molecule model, in process on CPU."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from seiko.callbacks import FeedbackReport, OnlineExploration, OnlinePPO, UCBBonus
from seiko.datamodules import MoleculeDataModule
from seiko.lightning_modules import LatentMoleculeDiffusion, SamplerConfig, ScheduleConfig
from seiko.nets import SequenceAutoencoder, VectorDenoiser
from seiko.oracles.molecules import QED
from seiko.oracles.store import FeedbackStore

MOSES_TEST = Path(__file__).resolve().parents[2] / "data" / "moses_test_5k.csv.gz"


def _latent_model() -> LatentMoleculeDiffusion:
    data = MoleculeDataModule(str(MOSES_TEST), seq_len=56, max_molecules=100)
    torch.manual_seed(0)
    return LatentMoleculeDiffusion(
        VectorDenoiser(8, width=16, n_layers=1),
        SequenceAutoencoder(
            data.vocab_size, 56, latent_dim=8, embed_dim=8, encoder_hidden=8, decoder_hidden=16
        ),
        vocabulary=data.vocabulary,
        seq_len=56,
        latent_scale=1.0,
        mode="finetune",
        schedule=ScheduleConfig(num_train_timesteps=100),
        sampler=SamplerConfig(num_steps=4),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-4),
    )


def _fit(model, callbacks: list, root: Path, epochs: int, steps: int) -> L.Trainer:
    """Fit on CPU, quietly; the batches only say how many chains each fine-tuning step runs."""
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=steps,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=DataLoader(torch.zeros(4, 1), batch_size=4))
    return trainer


@pytest.mark.parametrize("designs", ["auto", "text"])
def test_each_round_writes_the_curve_and_the_best_designs(tmp_path: Path, designs: str):
    model = _latent_model()
    exploration = OnlineExploration(
        QED(),
        budget=24,
        queries_per_round=[12, 12],
        bonus=UCBBonus(beta=1.0),
        reward_model={"architecture": "mlp", "epochs": 3},
        sample_batch_size=12,
    )
    report = FeedbackReport(designs=designs)
    _fit(model, [exploration, report], tmp_path, epochs=2, steps=1)

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    # duplicates are not paid again, and the model is sampled again for what they left unspent
    assert store.spent() == 24 and store.rounds() == [0, 1]
    assert len(set(store.designs_and_values()[0])) == 24
    curve = Image.open(tmp_path / "reward_curve.png")
    assert curve.size == (640, 480)
    if designs == "auto":  # a molecule model: an RDKit grid
        grid = Image.open(report.paths["designs"])
        assert report.paths["designs"].name == "top_designs.png" and grid.size[0] == 4 * 250
    else:  # a list, best first
        lines = (tmp_path / "top_designs.txt").read_text().splitlines()
        values = [float(line.split("\t")[0]) for line in lines]
        designs_listed = [line.split("\t")[1] for line in lines]
        _, stored = store.designs_and_values()
        assert values == sorted(values, reverse=True)
        assert values[0] == pytest.approx(float(stored.nan_to_num(-1).max()), rel=1e-5)
        assert set(designs_listed) <= set(store.designs_and_values()[0])


def test_report_without_a_store_writes_nothing_and_rejects_bad_arguments(tmp_path: Path):
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False)
    assert FeedbackReport().write(trainer, _latent_model()) == {}
    with pytest.raises(ValueError, match="designs"):
        FeedbackReport(designs="images")
    with pytest.raises(ValueError, match="top_k"):
        FeedbackReport(top_k=0)


class Repetitive(LatentMoleculeDiffusion):
    """A collapsed model: every sample decodes to one of two molecules."""

    def decode(self, x: torch.Tensor) -> list[str]:
        return ["CCO" if i % 2 else "c1ccccc1" for i in range(x.shape[0])]


def test_a_collapsed_model_leaves_the_quota_unspent_with_a_warning(tmp_path: Path):
    base = _latent_model()
    model = Repetitive(
        base.denoiser,
        base.autoencoder,
        base.vocabulary,
        56,
        latent_scale=1.0,
        mode="finetune",
        schedule=ScheduleConfig(num_train_timesteps=100),
        sampler=SamplerConfig(num_steps=2),
    )
    exploration = OnlineExploration(
        QED(),
        budget=10,
        queries_per_round=[5, 5],
        bonus=UCBBonus(beta=1.0),
        reward_model={"architecture": "mlp", "epochs": 2},
        max_draws=3,
    )
    with pytest.warns(UserWarning, match=r"round 0: 3 of 5 queries left unspent after 3 draws"):
        _fit(model, [exploration], tmp_path, epochs=2, steps=1)
    assert FeedbackStore(tmp_path / "feedback.sqlite").spent() == 2
    assert exploration.history[0]["feedback/draws"] == 3
    with pytest.raises(ValueError, match="max_draws"):
        OnlineExploration(QED(), budget=1, queries_per_round=[1], max_draws=0)


def test_guidance_mode_explores_without_training_the_model(tmp_path: Path):
    model = _latent_model()
    model.mode = "guidance"
    before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    exploration = OnlineExploration(
        QED(),
        budget=20,
        queries_per_round=[10, 10],
        bonus=UCBBonus(beta=1.0),
        reward_model={"architecture": "mlp", "epochs": 3},
    )
    _fit(model, [exploration], tmp_path, epochs=2, steps=1)
    assert FeedbackStore(tmp_path / "feedback.sqlite").spent() == 20
    for key, value in model.denoiser.state_dict().items():
        assert torch.equal(value, before[key]), key  # guidance never trains
    # The guided sampler climbs the learned reward that the callback set.
    generator = torch.Generator().manual_seed(0)
    guided = model.reward(model.sample(64, generator=generator))
    model.mode = "finetune"  # same model, no guidance
    plain = model.reward(model.sample(64, generator=torch.Generator().manual_seed(0)))
    assert guided.mean() > plain.mean()


def test_online_ppo_spends_the_budget_on_the_samples_it_learns_from(tmp_path: Path):
    model = _latent_model()
    model.mode = "ppo"
    before = [p.detach().clone() for p in model.denoiser.parameters()]
    ppo = OnlinePPO(QED(), budget=24, samples_per_update=8, ppo_epochs=2, clip_range=0.2)
    report = FeedbackReport(designs="text")
    trainer = _fit(model, [ppo, report], tmp_path, epochs=20, steps=2)
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    assert store.spent() == 24  # then it stopped: every update's samples were paid queries
    assert trainer.current_epoch < 19
    assert len(ppo.history) >= 3 and store.rounds()[:3] == [0, 1, 2]
    changed = [
        not torch.equal(a, b) for a, b in zip(before, model.denoiser.parameters(), strict=True)
    ]
    assert any(changed)
    assert (tmp_path / "reward_curve.png").exists()
    with pytest.raises(ValueError, match="mode='ppo'"):
        OnlinePPO(QED(), budget=4).setup(trainer, _latent_model(), "fit")
