"""Pretrained fingerprint features for latent molecule models (seiko.rewards.latent_features)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import selfies as sf
import torch

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402

from seiko.callbacks import OnlineExploration, UCBBonus  # noqa: E402
from seiko.callbacks.exploration import FeatureReward  # noqa: E402
from seiko.cli import build_cli  # noqa: E402
from seiko.datamodules import MoleculeDataModule  # noqa: E402
from seiko.oracles.molecules import QED  # noqa: E402
from seiko.oracles.store import FeedbackStore  # noqa: E402
from seiko.rewards import FingerprintRegressor, LatentFingerprintFeatures, load_features  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers import quiet_trainer  # noqa: E402

MOSES_TEST = Path(__file__).resolve().parents[2] / "data" / "moses_test_5k.csv.gz"
LATENT_DIM = 8


@pytest.fixture(scope="module")
def latent_ckpt(tmp_path_factory) -> Path:
    """A tiny LatentMoleculeDiffusion (random autoencoder, 2 denoiser steps) saved by the CLI."""
    tmp = tmp_path_factory.mktemp("latent_model")
    cli = build_cli(
        [
            "fit",
            "--model=seiko.lightning_modules.LatentMoleculeDiffusion",
            "--model.autoencoder=seiko.nets.SequenceAutoencoder",
            f"--model.autoencoder.latent_dim={LATENT_DIM}",
            "--model.autoencoder.embed_dim=8",
            "--model.autoencoder.encoder_hidden=16",
            "--model.autoencoder.decoder_hidden=16",
            "--model.denoiser=seiko.nets.VectorDenoiser",
            f"--model.denoiser.dim={LATENT_DIM}",
            "--model.denoiser.width=16",
            "--model.denoiser.n_layers=1",
            "--model.sampler.num_steps=3",
            "--data=seiko.datamodules.MoleculeDataModule",
            f"--data.path={MOSES_TEST}",
            "--data.max_molecules=96",
            "--data.seq_len=56",
            "--data.batch_size=32",
            "--trainer.accelerator=cpu",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp}",
        ]
    )
    path = tmp / "latent.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


def _data(latent_ckpt: Path, batch_size: int = 32) -> MoleculeDataModule:
    return MoleculeDataModule(
        str(MOSES_TEST),
        vocabulary=str(latent_ckpt),
        seq_len=56,
        max_molecules=96,
        batch_size=batch_size,
    )


@pytest.fixture(scope="module")
def regressor(latent_ckpt: Path, tmp_path_factory) -> tuple[FingerprintRegressor, Path, float]:
    """A FingerprintRegressor trained by a Trainer on the tiny model's latents, saved; and its
    training loss before training."""
    L.seed_everything(0)
    data = _data(latent_ckpt)
    data.setup("fit")
    model = FingerprintRegressor(
        str(latent_ckpt), vocabulary=data.vocabulary, seq_len=56, width=128, bits=256, lr=1e-2
    )
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        z, target = model._inputs(batch)
        before = float(torch.nn.functional.mse_loss(model(z), target))
    trainer = quiet_trainer(max_epochs=300, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = tmp_path_factory.mktemp("fp_features") / "features.ckpt"
    trainer.save_checkpoint(path)
    return model.eval(), path, before


def test_fingerprints_are_rdkits_log1p_morgan_counts_and_zero_for_invalid(latent_ckpt):
    model = FingerprintRegressor(str(latent_ckpt), bits=512, radius=2)
    aspirin = "CC(=O)Oc1ccccc1C(=O)O"
    got = model.fingerprints([aspirin, ""])
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=512)
    counts = generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(aspirin))
    assert got.shape == (2, 512)
    np.testing.assert_allclose(got[0].numpy(), np.log1p(counts), rtol=1e-6)
    assert float(got[0].sum()) > 0 and float(got[1].abs().sum()) == 0


def test_regressor_learns_the_fingerprints_of_the_latents(regressor, latent_ckpt):
    model, _, before = regressor
    data = _data(latent_ckpt)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        z, target = model._inputs(batch)
        after = float(torch.nn.functional.mse_loss(model(z), target))
        # the targets are the molecules' own fingerprints, read from the batch's tokens
        vocabulary = data.vocabulary
        selfies = ["".join(vocabulary[i] for i in row) for row in batch["tokens"].tolist()]
        smiles = [Chem.MolToSmiles(Chem.MolFromSmiles(sf.decoder(s))) for s in selfies]
        torch.testing.assert_close(target, model.fingerprints(smiles))
    # better than at the start, and than the best constant (each bit's mean over the batch; the
    # untrained 8-dimensional latents of this fixture lie close together)
    constant = float(((target - target.mean(0)) ** 2).mean())
    assert after < 0.5 * before and after < 0.8 * constant, (after, before, constant)
    assert z.shape == (32, LATENT_DIM)


def test_load_features_reads_the_regressor_back_frozen_and_differentiable(regressor):
    model, path, _ = regressor
    features = load_features(path)
    assert isinstance(features, LatentFingerprintFeatures)
    assert features.num_features == 128 and features.latent_dim == LATENT_DIM
    z = torch.randn(6, LATENT_DIM)
    with torch.no_grad():
        torch.testing.assert_close(features(z), model.features(z))
    assert not features.training
    assert all(not p.requires_grad for p in features.parameters())
    # the norm tracked the hidden features while the regressor trained: on the training
    # molecules' latents the features come out standardised
    with torch.no_grad():
        train = features(torch.stack([zi for zi, _ in model._cache.values()]))
    assert float(train.mean(0).abs().mean()) < 0.3
    assert 0.6 < float(train.std(0).mean()) < 1.4
    z.requires_grad_(True)
    features(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_errors_name_the_mismatch(latent_ckpt, tmp_path):
    with pytest.raises(ValueError, match="vocabulary"):
        FingerprintRegressor(str(latent_ckpt), vocabulary=["[C]", "[N]"], seq_len=56)
    with pytest.raises(ValueError, match="seq_len 40"):
        FingerprintRegressor(str(latent_ckpt), seq_len=40)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        FingerprintRegressor(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="another latent space"):
        LatentFingerprintFeatures(latent_dim=8, width=4)(torch.zeros(2, 64))
    with pytest.raises(ValueError, match="radius >= 0 and bits >= 1"):
        FingerprintRegressor(str(latent_ckpt), bits=0)
    with pytest.raises(ValueError, match="latent_noise must be >= 0, got -1"):
        FingerprintRegressor(str(latent_ckpt), latent_noise=-1)


def test_latent_noise_perturbs_the_training_latents_only(latent_ckpt):
    data = _data(latent_ckpt)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    model = FingerprintRegressor(str(latent_ckpt), width=16, bits=64, latent_noise=1.0)
    seen = []
    original = model.forward
    model.forward = lambda z: seen.append(z.detach().clone()) or original(z)
    z, _ = model._inputs(batch)
    model._step(batch, "train")
    model._step(batch, "val")
    assert (seen[0] - z).std() > 0.5  # training: the latents plus unit noise
    torch.testing.assert_close(seen[1], z)  # validation: the clean latents


def test_online_loop_fits_the_molecular_reward_on_fingerprint_features(
    regressor, latent_ckpt, tmp_path
):
    """SEIKO-UCB on a latent molecule model with reward_model.features: the ensemble reads the
    (B, width) features of each measured molecule's latent; the module fine-tunes against the
    composition, differentiable in the latent."""
    _, path, _ = regressor
    model = L.LightningModule.load_from_checkpoint(
        latent_ckpt, map_location="cpu", mode="finetune", kl_weight=0.1
    )
    exploration = OnlineExploration(
        QED(),
        budget=24,
        queries_per_round=[12, 12],
        bonus=UCBBonus(beta=0.1),
        reward_model={"architecture": "mlp", "features": str(path), "epochs": 3},
        sample_batch_size=12,
    )
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[exploration],
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in model.denoiser.parameters()]
    trainer.fit(model, datamodule=_data(latent_ckpt, batch_size=4))
    assert FeedbackStore(tmp_path / "feedback.sqlite").spent() > 0
    assert exploration.ensemble.input_shape == (128,)  # the feature width, not the latent's
    assert isinstance(model.reward, FeatureReward)
    z = torch.randn(3, LATENT_DIM, requires_grad=True)
    model.reward(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.denoiser.parameters(), strict=True)
    )
