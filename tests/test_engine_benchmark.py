"""benchmarks/engine.py builds either sequence denoiser and runs both kinds of step on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from seiko.diffusion import GaussianSampler, NoiseSchedule
from seiko.nets import ConvSequenceDenoiser, SequenceDenoiser

sys.path.insert(0, str(Path(__file__).parent))
from script_loader import load_script  # noqa: E402


def _engine():
    return load_script("benchmarks/engine.py")


@pytest.mark.parametrize(
    ("name", "cls"), [("transformer", SequenceDenoiser), ("conv", ConvSequenceDenoiser)]
)
def test_setup_builds_the_named_denoiser_and_a_fine_tuning_step_reaches_every_weight(name, cls):
    engine = _engine()
    setup = engine.Setup(batch=2, seq_len=8, vocab=4, d_model=16, n_layers=1, denoiser=name)
    net, reference, scheduler, x_T = engine.build(setup)
    assert type(net) is cls and type(reference) is cls and x_T.shape == (2, 8, 4)
    assert setup.describe().startswith(cls.__name__ + " B=2 L=8 V=4")
    sampler = GaussianSampler(NoiseSchedule.from_scheduler(scheduler), num_steps=3, checkpoint=True)
    engine.finetune_step(sampler, net, reference, x_T)
    assert all(p.grad is not None for p in net.parameters())
    assert not any(p.requires_grad for p in reference.parameters())
    sample = engine.sample_ours(sampler, net, x_T)
    assert sample.shape == x_T.shape and not sample.requires_grad and torch.isfinite(sample).all()


def test_an_unknown_denoiser_is_refused():
    engine = _engine()
    with pytest.raises(ValueError, match="'transformer' or 'conv', got 'rnn'"):
        engine.build(engine.Setup(denoiser="rnn"))
