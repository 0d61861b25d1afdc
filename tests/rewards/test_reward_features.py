"""Pretrained reward features (seiko.rewards.features) and the CNN's max pooling."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from seiko.callbacks import Greedy, OnlineExploration, RewardModelConfig, UCBBonus
from seiko.callbacks.exploration import FeatureReward
from seiko.datamodules import SequenceDataModule
from seiko.lightning_modules import SamplerConfig, ScheduleConfig
from seiko.lightning_modules.biosequences import DNADiffusion
from seiko.nets import SequenceDenoiser
from seiko.oracles import FunctionOracle
from seiko.oracles.store import FeedbackStore
from seiko.rewards import RewardEnsemble, SequenceClassifier, SequenceFeatures, load_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers import quiet_trainer  # noqa: E402

MOTIF = "GATAAGCT"


def planted(n: int, length: int, seed: int) -> tuple[list[str], list[int]]:
    """Random DNA; every second sequence (label 1) carries MOTIF at a random position."""
    rng = random.Random(seed)
    sequences, labels = [], []
    for i in range(n):
        s = [rng.choice("ACGT") for _ in range(length)]
        if i % 2:
            at = rng.randrange(length - len(MOTIF))
            s[at : at + len(MOTIF)] = MOTIF
        sequences.append("".join(s))
        labels.append(i % 2)
    return sequences, labels


def motif_oracle(design: str) -> float:
    return float(MOTIF in design)


@pytest.fixture(scope="module")
def motif_table(tmp_path_factory) -> Path:
    sequences, labels = planted(160, 40, seed=0)
    path = tmp_path_factory.mktemp("motif") / "motif.tsv"
    rows = ["id\tsequence\tlabel"] + [
        f"s{i}\t{s}\t{y}" for i, (s, y) in enumerate(zip(sequences, labels, strict=True))
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(motif_table: Path, tmp_path_factory) -> tuple[SequenceClassifier, Path]:
    """A SequenceClassifier trained by a Lightning Trainer on the labelled datamodule, saved."""
    L.seed_everything(0)
    data = SequenceDataModule(
        str(motif_table),
        alphabet="dna",
        seq_len=40,
        label_column="label",
        id_column="id",
        batch_size=32,
        val_fraction=0.2,
    )
    model = SequenceClassifier(
        vocab_size=4,
        num_classes=2,
        channels=16,
        kernel_size=9,
        kernel_size2=3,
        pool=2,
        reverse_complement=True,
        lr=3e-3,
    )
    trainer = quiet_trainer(
        max_epochs=40,
    )
    trainer.fit(model, datamodule=data)
    path = tmp_path_factory.mktemp("features") / "features.ckpt"
    trainer.save_checkpoint(path)
    return model.eval(), path


def one_hot(sequences: list[str]) -> torch.Tensor:
    index = torch.tensor([["ACGT".index(c) for c in s] for s in sequences])
    return torch.nn.functional.one_hot(index, 4).float()


def test_classifier_learns_a_planted_motif_from_the_labels(trained):
    model, _ = trained
    sequences, labels = planted(200, 40, seed=1)  # new sequences
    with torch.no_grad():
        predicted = model(one_hot(sequences)).argmax(-1)
    accuracy = (predicted == torch.tensor(labels)).float().mean()
    assert accuracy >= 0.9


def test_load_features_gives_the_trained_features_frozen_and_differentiable(trained):
    model, path = trained
    features = load_features(path)
    x = one_hot(planted(20, 40, seed=2)[0])
    with torch.no_grad():
        assert torch.allclose(features(x), model.features(x), atol=1e-6)
    assert not features.training
    assert all(not p.requires_grad for p in features.parameters())
    x.requires_grad_(True)
    features(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_load_features_errors_name_the_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        load_features(tmp_path / "nothing.ckpt")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"denoiser.w": torch.zeros(1)}, "hyper_parameters": {}}, other)
    with pytest.raises(ValueError, match="other.ckpt holds no SequenceClassifier or Finger"):
        load_features(other)


def test_sequence_features_check_their_input_and_settings():
    features = SequenceFeatures(vocab_size=4, channels=8, kernel_size=5, kernel_size2=3, pool=2)
    assert features(torch.zeros(3, 30, 4)).shape == (3, 8)
    with pytest.raises(ValueError, match=r"expected \(B, L, 4\)"):
        features(torch.zeros(3, 30, 5))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SequenceFeatures(kernel_size=4)


def test_classifier_needs_labels():
    model = SequenceClassifier(vocab_size=4, num_classes=2, channels=4)
    with pytest.raises(ValueError, match="label_column"):
        model.training_step({"x": torch.ones(2, 10, 4)}, 0)


def test_reward_model_config_asks_for_an_mlp_on_features():
    with pytest.raises(ValueError, match="use architecture: mlp"):
        RewardModelConfig(features="models/dna/features.ckpt")
    assert RewardModelConfig(features="x.ckpt", architecture="mlp").features == "x.ckpt"


def test_max_pooling_makes_the_cnn_shift_invariant():
    """Global max pooling scores a motif the same wherever it sits; 8-bin averaging does not."""
    x = torch.zeros(2, 60, 4)
    for row, at in ((0, 10), (1, 40)):
        x[row, torch.arange(at, at + 8), torch.tensor(["ACGT".index(c) for c in MOTIF])] = 1
    scanner = RewardEnsemble((60, 4), 1, kernel_size=9, pool="max", pool_size=1, num_layers=1)
    binned = RewardEnsemble((60, 4), 1, kernel_size=9, pool="avg", num_layers=1)
    with torch.no_grad():
        a, b = scanner.mean(x)
        c, d = binned.mean(x)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(c, d, atol=1e-4)
    with pytest.raises(ValueError, match="pool='sum' is not one of"):
        RewardEnsemble((60, 4), 1, pool="sum")


@pytest.mark.parametrize("bonus", [UCBBonus(beta=1.0), Greedy()])
def test_online_loop_fits_the_reward_on_pretrained_features(trained, motif_table, tmp_path, bonus):
    """SEIKO end to end with reward_model.features: the ensemble reads (B, F) features, the
    module fine-tunes against their composition, and the store holds every paid answer."""
    _, path = trained
    data = SequenceDataModule(
        str(motif_table),
        alphabet="dna",
        seq_len=40,
        label_column=None,
        id_column="id",
        batch_size=4,
    )
    torch.manual_seed(0)
    denoiser = SequenceDenoiser(4, 40, d_model=16, n_layers=1, n_heads=2)
    model = DNADiffusion(
        denoiser,
        ["A", "C", "G", "T"],
        40,
        mode="finetune",
        kl_weight=0.01,
        schedule=ScheduleConfig(num_train_timesteps=50),
        sampler=SamplerConfig(num_steps=3),
    )
    exploration = OnlineExploration(
        FunctionOracle(motif_oracle),
        budget=16,
        queries_per_round=[8, 8],
        bonus=bonus,
        reward_model={"architecture": "mlp", "features": str(path), "epochs": 3},
        sample_batch_size=8,
    )
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[exploration],
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in model.denoiser.parameters()]
    trainer.fit(model, datamodule=data)
    assert FeedbackStore(tmp_path / "feedback.sqlite").spent() == 16
    assert exploration.ensemble.input_shape == (16,)  # the feature width, not (40, 4)
    assert isinstance(model.reward, FeatureReward)
    x = one_hot(planted(4, 40, seed=3)[0]).requires_grad_(True)
    model.reward(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.denoiser.parameters(), strict=True)
    )
