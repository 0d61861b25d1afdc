"""Reward-guided sampling (``mode: guidance`` + ``OnlineExploration``) and online PPO (``mode: ppo``
+ ``OnlinePPO``) end to end on the DNA, RNA, protein and MNIST tasks: from the shipped priors, with
the real oracles, shrunk to a budget of 24.

* From the generated YAML (configs/<domain>/<task>/{guidance,ppo}.yaml) through ``seiko fit``
  (``build_cli``), the run shrunk on the command line.
* From Python: the module and the callback constructed directly.
* Resume: a run killed once a round (an update) is paid, before it is checkpointed, resumes from
  its checkpoint (``ckpt_path``) without paying any design twice and spends the rest of the budget.

Every run must leave in its FeedbackStore exactly the budget's rows, each the real oracle's answer
to its design. Several paths of these runs (the crash-resume contract on a tiny model in a
subprocess; guidance and PPO on the latent molecule model) are also tested in tests/callbacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from seiko.callbacks import OnlineExploration, OnlinePPO
from seiko.cli import build_cli

sys.path.insert(0, str(Path(__file__).parent))
from online_runs import (  # noqa: E402
    ROOT,
    TASKS,
    SimulatedCrashError,
    assert_prior_network,
    assert_real_oracle_rows,
    fit,
    prior_checkpoint,
    python_callback,
    python_module,
    rounds_of,
    shrunk_cli_args,
    spy_on_oracle,
)

BUDGET = 24
QUERIES = [16, 16]  # guidance: round 1 is capped by the budget at 8
SAMPLES = 10  # PPO: updates of 10, 10 and (capped) 4 samples
HEPG2 = "HepG2_ENCLB029COU"


def _check_model(task: str, method: str, model, rows) -> None:
    """Guidance never trains the prior; PPO does whenever an update's answers differ (its
    advantages are the update's normalised answers). DNA guidance designs for HepG2's class."""
    assert model.mode == method
    if method == "guidance":
        assert_prior_network(model.denoiser, TASKS[task].prior)
        assert model.guidance_scale == 1.0
        assert model.reward is not None  # the online loop's learned reward steers sampling
    else:
        prior = prior_checkpoint(TASKS[task].prior)["state_dict"]
        moved = any(
            not torch.equal(value, prior[f"denoiser.{key}"])
            for key, value in model.denoiser.state_dict().items()
        )
        spread = any(
            len({r.value for r in rows if r.round == k and r.value == r.value}) > 1
            for k in {r.round for r in rows}
        )
        # (the protein prior's samples mostly score 0 bits on Pkinase: a run this small may
        # measure nothing else, and then no update has an advantage to follow; its weights may
        # still move by the KL term, so only finiteness is asked of them)
        assert moved or not spread
        assert all(bool(v.isfinite().all()) for v in model.denoiser.state_dict().values())
    if task == "dna":
        assert model.target_label == HEPG2
        if method == "ppo":  # PPO's trajectories run on (and are re-scored under) HepG2's class
            cond = model.sample_trajectories(2, generator=torch.Generator().manual_seed(0))["cond"]
            assert torch.equal(cond, model.label_ids([HEPG2] * 2))


def _check_schedule(method: str, rows) -> None:
    if method == "guidance":
        assert rounds_of(rows) == {0: 16, 1: 8}
    else:
        assert rounds_of(rows) == {0: 10, 1: 10, 2: 4}


# ---------------------------------------------------------------------- from the YAML
@pytest.mark.parametrize(
    ("task", "method"),
    [
        ("dna", "guidance"),
        ("dna", "ppo"),
        ("rna", "guidance"),
        ("rna", "ppo"),
        ("protein", "guidance"),
        ("protein", "ppo"),
        ("mnist_digit3", "guidance"),
        ("mnist_incompressible3", "ppo"),
    ],
)
def test_generated_config_runs_through_the_cli(task, method, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the YAML's paths (prior, data, oracle files) are relative
    spy = spy_on_oracle(monkeypatch)
    args = shrunk_cli_args(method, task, tmp_path, budget=BUDGET, queries=QUERIES, samples=SAMPLES)
    cli = build_cli(args)
    callback = cli.trainer.callbacks[0]
    assert isinstance(callback, OnlinePPO if method == "ppo" else OnlineExploration)
    assert callback.oracle.name == TASKS[task].oracle().name  # the YAML's oracle is the task's
    rows = assert_real_oracle_rows(task, tmp_path, BUDGET, spy)
    _check_schedule(method, rows)
    _check_model(task, method, cli.model, rows)
    if method == "ppo":
        # 2 optimizer steps an update, 2 updates an epoch (the YAML's limit_train_batches): the
        # budget is spent in epoch 1, and the run stops at the next update instead of going on
        assert cli.trainer.current_epoch <= 2 < cli.trainer.max_epochs
        assert len(callback.history) == 3
    else:
        assert [h["round"] for h in callback.history] == [0.0, 1.0]
    assert (tmp_path / "reward_curve.png").is_file()  # FeedbackReport, from the YAML
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


# ---------------------------------------------------------------------- from Python
@pytest.mark.parametrize(
    ("task", "method"),
    [
        ("dna", "guidance"),
        ("dna", "ppo"),
        ("rna", "guidance"),
        ("rna", "ppo"),
        ("protein", "guidance"),
        ("protein", "ppo"),
        ("mnist_incompressible3", "guidance"),
        ("mnist_digit3", "ppo"),
    ],
)
def test_module_and_callback_built_in_python(task, method, monkeypatch, tmp_path):
    spy = spy_on_oracle(monkeypatch)
    model = python_module(task, method)
    assert_prior_network(model.denoiser, TASKS[task].prior)
    callback = python_callback(task, method, budget=BUDGET, queries=QUERIES, samples=SAMPLES)
    # guidance: one round an epoch; PPO: one update an epoch (ppo_epochs steps), until it stops
    epochs, steps = (len(QUERIES), 1) if method == "guidance" else (10, callback.ppo_epochs)
    trainer = fit(model, [callback], tmp_path, epochs=epochs, steps=steps)
    rows = assert_real_oracle_rows(task, tmp_path, BUDGET, spy)
    _check_schedule(method, rows)
    _check_model(task, method, model, rows)
    if method == "ppo":
        assert trainer.current_epoch <= 4 and len(callback.history) == 3
    else:
        if task == "dna":  # guided chains run on HepG2's class (target_label), not the null class
            hepg2 = model.label_ids([HEPG2] * 2)
            same = model.sample(2, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(
                same, model.sample(2, cond=hepg2, generator=torch.Generator().manual_seed(1))
            )
            null = model.sample(
                2, cond=torch.full_like(hepg2, -1), generator=torch.Generator().manual_seed(1)
            )
            assert not torch.allclose(same, null)
        # the guided sampler follows the learned reward: same noise, other designs than the prior
        generator = torch.Generator().manual_seed(0)
        guided = model.sample(4, generator=generator)
        model.mode = "finetune"  # the same network, unguided
        plain = model.sample(4, generator=torch.Generator().manual_seed(0))
        assert not torch.allclose(guided, plain)


# ---------------------------------------------------------------------- resume
@pytest.mark.parametrize("method", ["guidance", "ppo"])
def test_dna_resume_after_a_crash_pays_nothing_twice_and_spends_the_budget(
    method, monkeypatch, tmp_path
):
    """Killed once round (update) 1 is paid, before its epoch ends and checkpoints; resumed from
    the epoch-0 checkpoint through ``--ckpt_path``: round 1 is not paid again, round 2 is paid."""
    monkeypatch.chdir(ROOT)
    # PPO: one update an epoch (2 optimizer steps, its ppo_epochs)
    shrink = {"queries": [8, 8, 8]} if method == "guidance" else {"samples": 8, "steps": 2}
    args = shrunk_cli_args(method, "dna", tmp_path, budget=BUDGET, **shrink)
    spy = spy_on_oracle(monkeypatch, crash_after_round=1)
    with pytest.raises(SimulatedCrashError):
        build_cli(args)
    checkpoints = tmp_path / "checkpoints"
    (saved,) = checkpoints.glob("epoch=*.ckpt")
    assert saved.name.startswith("epoch=0-")  # round (update) 1 was not checkpointed
    paid_before = list(spy.asked)
    assert len(paid_before) == 16  # rounds 0 and 1, committed to the store

    spy = spy_on_oracle(monkeypatch)  # the resumed run: no crash, and a fresh record
    cli = build_cli([*args, "--ckpt_path", str(checkpoints / "last.ckpt")])
    assert len(spy.asked) == BUDGET - 16  # round 2 only
    spy.asked[:0] = paid_before  # everything the oracle was ever asked, across both runs
    rows = assert_real_oracle_rows("dna", tmp_path, BUDGET, spy)
    assert rounds_of(rows) == {0: 8, 1: 8, 2: 8}
    assert rows[:16] and [r.design for r in rows[:16]] == paid_before
    if method == "guidance":
        assert [h["round"] for h in cli.trainer.callbacks[0].history] == [0.0, 1.0, 2.0]
        assert_prior_network(cli.model.denoiser, TASKS["dna"].prior)
    else:
        assert cli.trainer.current_epoch < cli.trainer.max_epochs - 1  # stopped: budget spent
