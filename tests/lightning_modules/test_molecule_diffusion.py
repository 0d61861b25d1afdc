"""MoleculeDiffusion: SMILES <-> one-hot SELFIES, checkpoints, CLI links, a CPU training step."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from seiko.cli import build_cli
from seiko.datamodules.molecules import MoleculeDataModule, canonical_smiles, load_vocabulary
from seiko.lightning_modules import SamplerConfig, ScheduleConfig
from seiko.lightning_modules.molecules import MoleculeDiffusion
from seiko.nets import SequenceDenoiser

MOSES_TEST = Path(__file__).resolve().parents[2] / "data" / "moses_test_5k.csv.gz"
SEQ_LEN = 64


@pytest.fixture(scope="module")
def moses() -> MoleculeDataModule:
    """300 real MOSES test molecules (every one of them kept: none is invalid)."""
    dm = MoleculeDataModule(
        str(MOSES_TEST), seq_len=SEQ_LEN, max_molecules=300, val_fraction=0.1, batch_size=8
    )
    dm.setup()
    return dm


def make_module(vocabulary: list[str], **overrides) -> MoleculeDiffusion:
    torch.manual_seed(0)
    kwargs = dict(
        denoiser=SequenceDenoiser(len(vocabulary), SEQ_LEN, d_model=16, n_layers=1, n_heads=2),
        vocabulary=vocabulary,
        seq_len=SEQ_LEN,
        schedule=ScheduleConfig(num_train_timesteps=50),
        sampler=SamplerConfig(num_steps=3),
    )
    kwargs.update(overrides)
    return MoleculeDiffusion(**kwargs)


def test_round_trip_is_exact_on_real_moses_molecules(moses: MoleculeDataModule):
    module = make_module(moses.vocabulary)
    smiles = moses.smiles["train"] + moses.smiles["val"]
    assert len(smiles) == 300
    x = module.encode(smiles)
    assert x.shape == (300, SEQ_LEN, len(moses.vocabulary))
    assert module.decode(x) == smiles  # the data are canonical already
    # any spelling goes in; the canonical SMILES comes out
    assert module.decode(module.encode(["OCC", "C1=CC=CC=C1O"])) == ["CCO", "Oc1ccccc1"]


def test_invalid_input_and_empty_output(moses: MoleculeDataModule):
    module = make_module(moses.vocabulary)
    with pytest.raises(ValueError, match="design 1: 'C1CC' is not a valid SMILES"):
        module.encode(["CCO", "C1CC"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        module.encode(["C[Se]C"])  # selenium: not a MOSES symbol
    all_pad = torch.full((2, SEQ_LEN, len(moses.vocabulary)), -1.0)
    all_pad[..., moses.vocabulary.index("[nop]")] = 1.0
    assert module.decode(all_pad) == ["", ""]  # no atoms: "" (oracles give NaN)


def test_vocabulary_must_be_selfies_tokens():
    with pytest.raises(ValueError, match=r"not single SELFIES tokens"):
        make_module(["A", "C", "G", "T", "[nop]"])


def test_one_step_with_a_logger_and_checkpoint_keep_the_vocabulary(
    moses: MoleculeDataModule, tmp_path: Path
):
    module = make_module(moses.vocabulary)
    # a real logger, unlike fast_dev_run: Lightning then checks that the module's and the
    # datamodule's hyper-parameters agree wherever they share a key (vocabulary, seq_len, ...)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=1,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=moses)
    designs = trainer.predict(module, dataloaders=moses.predict_dataloader())
    flat = [d for batch in designs for d in batch]
    assert len(flat) == moses.hparams.predict_samples and all(isinstance(d, str) for d in flat)
    assert all(d == "" or canonical_smiles(d) == d for d in flat)

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    vocabulary = load_vocabulary(str(path))  # what a fine-tuning datamodule reads
    assert vocabulary == moses.vocabulary
    denoiser = SequenceDenoiser(len(vocabulary), SEQ_LEN, d_model=16, n_layers=1, n_heads=2)
    restored = MoleculeDiffusion.load_from_checkpoint(path, denoiser=denoiser)
    assert restored.vocabulary == moses.vocabulary
    assert (restored.seq_len, restored.pad_symbol) == (SEQ_LEN, "[nop]")
    for a, b in zip(restored.denoiser.parameters(), module.denoiser.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    smiles = moses.smiles["val"][:5]
    assert restored.decode(restored.encode(smiles)) == smiles


def test_cli_links_the_molecule_data_into_the_model(tmp_path: Path):
    data = tmp_path / "mols.smi"
    data.write_text("CCO\nc1ccccc1O\nCC(=O)Oc1ccccc1C(=O)O\nCCN\n")
    cli = build_cli(
        [
            "--data=seiko.datamodules.molecules.MoleculeDataModule",
            f"--data.path={data}",
            "--data.seq_len=24",
            "--model=seiko.lightning_modules.molecules.MoleculeDiffusion",
            "--model.denoiser=seiko.nets.SequenceDenoiser",
            "--model.denoiser.d_model=16",
            "--model.denoiser.n_heads=2",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    assert cli.model.vocabulary == cli.datamodule.vocabulary
    assert cli.model.seq_len == 24 and cli.model.denoiser.vocab_size == len(cli.model.vocabulary)
    assert cli.model.decode(cli.model.encode(["OCC"])) == ["CCO"]
