"""The online loop for real, in subprocesses: crash safety (SIGKILL + resume) and DDP on CPU.

Both run ``seiko fit`` from a YAML whose oracle is a plain function in the user's own module
(tests/callbacks/online_fixture.py), which logs every design it is asked to measure.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from online_fixture import write_fixture  # noqa: E402

SEIKO = [sys.executable, "-m", "seiko.cli"]


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    env["SEIKO_TEST_ORACLE_LOG"] = str(root / "oracle.log")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _store_rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT round, design FROM feedback ORDER BY id").fetchall()


def _kill_once_round_is_paid(config: Path, root: Path, env: dict, kill_round: int) -> None:
    """Run ``seiko fit`` and SIGKILL it as soon as the store holds answers of ``kill_round``."""
    store = root / "run" / "feedback.sqlite"
    process = subprocess.Popen(
        [*SEIKO, "fit", "--config", str(config)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline and process.poll() is None:
            if store.exists():
                try:
                    if any(r == kill_round for r, _ in _store_rows(store)):
                        break
                except sqlite3.OperationalError:
                    pass  # the writer holds a lock for a moment
            time.sleep(0.05)
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _resume(config: Path, root: Path, env: dict) -> None:
    resumed = subprocess.run(
        [*SEIKO, "fit", "--config", str(config), "--ckpt_path", "last"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]


def test_sigkill_after_the_oracle_answered_loses_nothing_and_resume_finishes(tmp_path):
    budget, queries = 30, [12, 12, 12]
    config = write_fixture(tmp_path, budget=budget, queries=queries, epochs=3, steps=8)
    store = tmp_path / "run" / "feedback.sqlite"
    env = _env(tmp_path)
    # Kill as soon as round 1's answers are committed: the oracle has answered, the round's
    # reward fit and training (and so its checkpoint) have not finished.
    _kill_once_round_is_paid(config, tmp_path, env, kill_round=1)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch=*.ckpt"))
    assert checkpoints == ["epoch=0-step=8.ckpt"], checkpoints  # round 1 was not checkpointed
    paid_before = _store_rows(store)
    assert sum(r == 1 for r, _ in paid_before) == queries[1]

    _resume(config, tmp_path, env)
    rows = _store_rows(store)
    designs = [d for _, d in rows]
    assert len(designs) == len(set(designs)) == budget  # every paid query once; budget spent
    assert rows[: len(paid_before)] == paid_before  # nothing paid before the kill was lost
    # round 1 was not paid twice: its quota was already in the store when the run resumed
    assert sum(r == 1 for r, _ in rows) == queries[1]
    oracle_calls = (tmp_path / "oracle.log").read_text().split()
    assert len(oracle_calls) == budget and sorted(oracle_calls) == sorted(designs)


def test_online_ppo_sigkill_after_paying_an_update_loses_nothing_and_resume_finishes(tmp_path):
    # 4 optimizer steps per epoch, 2 per PPO update: updates 0 and 1 in epoch 0 (checkpointed),
    # updates 2 and 3 in epoch 1. The kill comes once update 2's samples are paid for.
    budget, samples = 40, 8
    config = write_fixture(tmp_path, budget=budget, epochs=8, steps=4, ppo_samples=samples)
    store = tmp_path / "run" / "feedback.sqlite"
    env = _env(tmp_path)
    env["SEIKO_TEST_ORACLE_SECONDS"] = "0.05"  # a measurement takes time, as a real one does
    _kill_once_round_is_paid(config, tmp_path, env, kill_round=2)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch=*.ckpt"))
    assert checkpoints == ["epoch=0-step=4.ckpt"], checkpoints  # update 2 was not checkpointed
    paid_before = _store_rows(store)
    assert sum(r == 2 for r, _ in paid_before) > 0

    _resume(config, tmp_path, env)
    rows = _store_rows(store)
    assert rows[: len(paid_before)] == paid_before  # nothing paid before the kill was lost
    # The resumed run restarts at update 2, finds it paid (its trajectories died with the
    # process) and skips it rather than paying for it twice; then it spends the rest.
    assert [r for r, _ in rows].count(2) == [r for r, _ in paid_before].count(2)
    assert all([r for r, _ in rows].count(u) <= samples for u in {r for r, _ in rows})
    oracle_calls = (tmp_path / "oracle.log").read_text().split()
    designs = [d for _, d in rows]
    assert sorted(oracle_calls) == sorted(designs)  # each stored answer paid exactly once
    assert len(oracle_calls) == budget  # the budget was spent, and not exceeded


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_ddp_two_cpu_ranks_share_one_budget_and_one_reward_model(tmp_path):
    budget, queries = 24, [10, 10, 10]
    config = write_fixture(tmp_path, budget=budget, queries=queries, epochs=3, steps=2)
    result = subprocess.run(
        [
            *SEIKO,
            "fit",
            "--config",
            str(config),
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _store_rows(tmp_path / "run" / "feedback.sqlite")
    designs = [d for _, d in rows]
    assert len(designs) == len(set(designs)) == budget
    oracle_calls = (tmp_path / "oracle.log").read_text().split()
    assert len(oracle_calls) == budget  # rank 0 alone queried, the budget is global
    weights = [
        torch.load(tmp_path / "run" / f"reward_rank{rank}.pt", weights_only=True) for rank in (0, 1)
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
