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
    if "pretrained_checkpoint:" in text:
        pytest.importorskip("rdkit")
        ckpt = _tiny_checkpoint(tmp_path, config)
        args += ["--model.init_args.pretrained_checkpoint", str(ckpt)]
        if "vocabulary:" in text:
            args += ["--data.init_args.vocabulary", str(ckpt)]
    cli = build_cli(args, run=False)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None


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
        ],
        run=False,
    )
    path = tmp_path / "pretrained.ckpt"
    torch.save(
        {"state_dict": cli.model.state_dict(), "hyper_parameters": {"vocabulary": data.vocabulary}},
        path,
    )
    return path
