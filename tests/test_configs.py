"""Every YAML in configs/ parses and instantiates with the CLI (model, data, trainer, callbacks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seiko.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses_and_instantiates(config, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    # a config that starts from a checkpoint made by another config: give it one
    text = config.read_text()
    args = ["--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    if "pretrained_checkpoint:" in text and "MoleculeDataModule" in text:
        pytest.importorskip("rdkit")
        ckpt = _tiny_checkpoint(tmp_path, config)
        args += ["--model.init_args.pretrained_checkpoint", str(ckpt)]
        if "vocabulary:" in text:
            args += ["--data.init_args.vocabulary", str(ckpt)]
    if "autoencoder_checkpoint:" in text:  # stage 2 of latent diffusion: stage 1's weights
        args += [
            "--model.init_args.autoencoder_checkpoint",
            str(_autoencoder_weights(tmp_path, args)),
        ]
    cli = build_cli(args, run=False)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None


def _autoencoder_weights(tmp_path: Path, args: list[str]) -> Path:
    """Untrained ``autoencoder.*`` weights of the config's own architecture (what stage 1 gives)."""
    import torch

    cli = build_cli([*args, "--model.init_args.autoencoder_checkpoint", "null"], run=False)
    state = {f"autoencoder.{k}": v for k, v in cli.model.autoencoder.state_dict().items()}
    path = tmp_path / "autoencoder.ckpt"
    torch.save({"state_dict": state}, path)
    return path


def _tiny_checkpoint(tmp_path: Path, config: Path) -> Path:
    """A checkpoint of the config's own module, saved untrained (what a pretrain run would give)."""
    import torch
    import yaml

    from seiko.datamodules import MoleculeDataModule

    spec = yaml.safe_load(config.read_text())
    data_args = dict(spec["data"]["init_args"])
    data_args.pop("vocabulary", None)
    data_args["max_molecules"] = 200
    data = MoleculeDataModule(**data_args)
    cli = build_cli(
        [
            "--config",
            str(config),
            "--model.init_args.pretrained_checkpoint",
            "null",
            "--data.init_args.vocabulary",
            "null",
            "--data.init_args.max_molecules",
            "200",
            # the decoder stage (decoder_noise) needs a trained latent model: build it plain
            *(
                ["--model.init_args.decoder_noise", "null"]
                if "decoder_noise:" in config.read_text()
                else []
            ),
        ],
        run=False,
    )
    state = cli.model.state_dict()
    if "latent_scale" in state and float(state["latent_scale"]) <= 0:
        state["latent_scale"] = torch.tensor(1.0)  # a latent model's pretraining measures it
    path = tmp_path / "pretrained.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"vocabulary": data.vocabulary}}, path)
    return path


def test_generated_molecule_configs_are_up_to_date():
    import subprocess
    import sys

    script = ROOT / "scripts" / "make_molecule_configs.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
