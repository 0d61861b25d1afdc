"""The MNIST configs (configs/images/mnist_digit3, configs/images/mnist_incompressible3): generated
ones up to date, every one builds with the CLI, and each builds exactly the network of the shipped
pixel prior (models/images/mnist_prior.ckpt) it starts from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from seiko.callbacks import OnlineExploration, OnlinePPO
from seiko.cli import build_cli

sys.path.insert(0, str(Path(__file__).parent))
from online_runs import (  # noqa: E402
    METHODS,
    assert_generator_up_to_date,
    assert_prior_network,
    expected_mode,
)

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("mnist_digit3", "mnist_incompressible3")
PRIOR = ROOT / "models" / "images" / "mnist_prior.ckpt"
CONFIGS = sorted(p for t in TASKS for p in (ROOT / "configs" / "images" / t).glob("*.yaml"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT / "configs" / "images"))


def test_generated_image_configs_are_up_to_date():
    assert_generator_up_to_date("make_image_configs.py")


def test_every_task_has_seven_methods():
    for task in TASKS:
        assert {p.stem for p in (ROOT / "configs" / "images" / task).glob("*.yaml")} == METHODS


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_image_config_builds_the_prior_network(config, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    cli = build_cli(
        ["--config", str(config), "--trainer.default_root_dir", str(tmp_path)], run=False
    )
    method = config.stem
    assert cli.model.mode == expected_mode(method)
    # starts from the shipped weights, in the same network (keys, shapes and values)
    assert_prior_network(cli.model.denoiser, PRIOR)
    shipped = torch.load(PRIOR, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert cli.model.labels == shipped["labels"] == cli.datamodule.labels
    assert cli.model.target_label is None  # the null class: unconditional samples
    assert cli.model.data_shape == (1, 28, 28)
    feedback = cli.trainer.callbacks[0]
    assert isinstance(feedback, OnlinePPO if method == "ppo" else OnlineExploration)
    assert feedback.budget == 1000
    task = config.parent.name
    expected = "incompressible_3" if task == "mnist_incompressible3" else "digit_3_confidence"
    assert feedback.oracle.name == expected
    if method == "guidance":
        assert cli.model.guidance_scale == 1.0
