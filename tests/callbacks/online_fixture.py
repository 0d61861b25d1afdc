"""Files for the subprocess tests of the online loop: a user's own oracle module and a config.

The oracle is a plain function in the user's own module, plugged in through the YAML, exactly as
the README shows; it appends every design it is asked about to a log file, so a test can count
what was really paid for (across crashes, resumes and DDP ranks).
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

USER_MODULE = '''
import os
import time

import lightning as L
import torch


def g_fraction(design):
    """The user's expensive measurement: the fraction of G (every call is logged)."""
    time.sleep(float(os.environ.get("SEIKO_TEST_ORACLE_SECONDS", "0")))
    with open(os.environ["SEIKO_TEST_ORACLE_LOG"], "a") as handle:
        handle.write(design + "\\n")
    return design.count("G") / len(design)


class SaveRewardModel(L.Callback):
    """Saves each rank's reward-model weights at the end (to compare ranks)."""

    def on_train_end(self, trainer, pl_module):
        from seiko.callbacks import OnlineExploration

        found = [c for c in trainer.callbacks if isinstance(c, OnlineExploration)]
        if not found:
            return  # online PPO: no reward model
        (cb,) = found
        path = os.path.join(trainer.default_root_dir, f"reward_rank{trainer.global_rank}.pt")
        torch.save(cb.ensemble.state_dict(), path)
'''

CONFIG = """
seed_everything: 0
model:
  class_path: seiko.lightning_modules.SequenceDiffusion
  init_args:
    mode: {mode}
    kl_weight: 0.01
    denoiser:
      class_path: seiko.nets.SequenceDenoiser
      init_args: {{d_model: 16, n_layers: 1, n_heads: 2}}
    schedule: {{num_train_timesteps: 50}}
    sampler: {{num_steps: 4}}
    optimizer:
      class_path: torch.optim.Adam
      init_args: {{lr: 0.003}}
data:
  class_path: seiko.datamodules.SequenceDataModule
  init_args: {{path: {data}, alphabet: dna, seq_len: 12, batch_size: 8, val_fraction: 0.0}}
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: {epochs}
  limit_train_batches: {steps}
  limit_val_batches: 0
  logger: false
  enable_progress_bar: false
  default_root_dir: {root}
  callbacks:
{online}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/checkpoints, save_last: true, every_n_epochs: 1, save_top_k: -1}}
    - class_path: user_oracle.SaveRewardModel
"""


EXPLORATION = """
    - class_path: seiko.callbacks.OnlineExploration
      init_args:
        oracle:
          class_path: seiko.oracles.FunctionOracle
          init_args: {{fn: user_oracle.g_fraction}}
        budget: {budget}
        queries_per_round: {queries}
        bonus: {{class_path: seiko.callbacks.UCBBonus, init_args: {{beta: 0.5}}}}
        reward_model: {{epochs: 10, patience: 3}}"""

PPO = """
    - class_path: seiko.callbacks.OnlinePPO
      init_args:
        oracle:
          class_path: seiko.oracles.FunctionOracle
          init_args: {{fn: user_oracle.g_fraction}}
        budget: {budget}
        samples_per_update: {samples}
        ppo_epochs: 2
        clip_range: 0.2"""


def write_fixture(
    root: Path,
    *,
    budget: int,
    queries: list[int] | None = None,
    epochs: int,
    steps: int,
    ppo_samples: int | None = None,
) -> Path:
    """Write the user module, a DNA data file and the YAML into ``root``; return the YAML path.

    With ``ppo_samples`` the run is online PPO (``OnlinePPO``, that many samples per update)
    instead of the SEIKO loop (``OnlineExploration`` with ``queries`` per round).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "user_oracle.py").write_text(textwrap.dedent(USER_MODULE))
    rng = random.Random(0)
    data = root / "dna.txt"
    data.write_text("\n".join("".join(rng.choice("ACGT") for _ in range(12)) for _ in range(64)))
    config = root / "config.yaml"
    if ppo_samples is None:
        online, mode = EXPLORATION.format(budget=budget, queries=queries), "finetune"
    else:
        online, mode = PPO.format(budget=budget, samples=ppo_samples), "ppo"
    config.write_text(
        CONFIG.format(
            mode=mode,
            online=online.strip("\n"),
            data=data,
            epochs=epochs,
            steps=steps,
            root=root / "run",
        )
    )
    return config
