"""Online PPO (DDPO) as a Lightning callback: the paper's policy-gradient baseline.

Every ``ppo_epochs`` training steps the callback

1. samples ``samples_per_update`` trajectories from the current model (each DDP rank its share),
2. measures every sample's design on rank 0 through the ``OracleLedger`` (so PPO spends the
   budget as it learns: every sample used for a gradient is a paid query; a duplicate of a
   measured design is answered from the store and not paid again),
3. normalises the rewards into advantages and records the sampling model's per-step
   log-probabilities,

and the module (``mode="ppo"``) then takes ``ppo_epochs`` optimizer steps of the clipped PPO loss
on that batch (``seiko.diffusion.ppo``). Training stops when the budget is spent.

With ``screen=True`` the samples go through the oracle's free check ``fits(design)`` first (as
in ``OnlineExploration``): a sample that does not fit is dropped unpaid, and the update samples
again until it holds ``samples_per_update`` fitting ones (at most ``max_draws`` draws), so every
update learns from as many measured designs as without a screen.

Resuming: an update whose queries the store already holds (the run was killed after paying for
it) is not paid again; its trajectories are gone with the killed process, so that update is
skipped and the run goes on with the next one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from seiko.callbacks.exploration import _gather, design_keys
from seiko.diffusion.ppo import normalized_advantages
from seiko.oracles.base import Oracle
from seiko.oracles.ledger import OracleLedger
from seiko.oracles.store import FeedbackStore
from seiko.oracles.wrappers import load_oracle


class OnlinePPO(Callback):
    """Measure PPO's samples with the oracle and hand them to a ``mode="ppo"`` module.

    Args:
        oracle: the ground truth (an ``Oracle`` or a class path / dotted function in YAML).
        budget: total oracle queries.
        samples_per_update: trajectories sampled (and measured) per PPO update.
        ppo_epochs: optimizer steps on each sampled batch (the ratio departs from 1 after the
            first, which is where the clip acts).
        clip_range: PPO's epsilon (DDPO: 1e-4).
        advantage_clip: advantages are clipped to [-advantage_clip, advantage_clip] (DDPO: 5).
        store_path: the FeedbackStore; default ``<default_root_dir>/feedback.sqlite``.
        seed: seeds the sampling.
        screen: drop samples the oracle's free ``fits(design)`` rejects before paying, and
            sample again to fill the update (see the module docstring).
        max_draws: samplings per update to fill it with fitting samples (``screen`` only).
        max_idle_updates: stop training, with a warning, after this many updates in a row paid
            for no new design: a model that only repeats designs already measured (a collapse;
            seen on the protein kinase task, stuck at 254 of 256 queries) would otherwise loop
            until ``max_epochs`` without ever spending the rest of the budget.
    """

    def __init__(
        self,
        oracle: Oracle,
        budget: int,
        samples_per_update: int = 64,
        ppo_epochs: int = 2,
        clip_range: float = 1e-4,
        advantage_clip: float = 5.0,
        store_path: str | None = None,
        seed: int = 0,
        screen: bool = False,
        max_draws: int = 8,
        max_idle_updates: int = 10,
    ) -> None:
        if budget < 1 or samples_per_update < 1 or ppo_epochs < 1:
            raise ValueError(
                f"need budget, samples_per_update, ppo_epochs >= 1; got {budget}, "
                f"{samples_per_update}, {ppo_epochs}"
            )
        self.oracle = load_oracle(oracle)
        self.budget = budget
        self.samples_per_update = samples_per_update
        self.ppo_epochs = ppo_epochs
        self.advantage_clip = advantage_clip
        if clip_range <= 0:
            raise ValueError(f"clip_range must be > 0, got {clip_range}")
        self.clip_range = clip_range
        self.store_path = store_path
        self.seed = seed
        if screen and not callable(getattr(self.oracle, "fits", None)):
            raise ValueError(
                f"screen=True needs an oracle with a free check fits(design) -> bool; "
                f"{type(self.oracle).__name__} has none (the RNA target oracles have one)"
            )
        if max_draws < 1:
            raise ValueError(f"max_draws must be >= 1, got {max_draws}")
        self.screen, self.max_draws = screen, max_draws
        if max_idle_updates < 1:
            raise ValueError(f"max_idle_updates must be >= 1, got {max_idle_updates}")
        self.max_idle_updates = max_idle_updates
        self.idle_updates = 0  # consecutive updates that paid for nothing new
        self.ledger: OracleLedger | None = None
        self.history: list[dict[str, float]] = []

    @property
    def store(self) -> FeedbackStore | None:
        return None if self.ledger is None else self.ledger.store

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if getattr(pl_module, "mode", None) != "ppo":
            raise ValueError("OnlinePPO trains with the PPO loss: set the module's mode='ppo'")
        if self.store_path is None:
            self.store_path = str(Path(trainer.default_root_dir) / "feedback.sqlite")
        if trainer.is_global_zero and self.ledger is None:
            self.ledger = OracleLedger(self.oracle, FeedbackStore(self.store_path), self.budget)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.ledger is not None and stage == "fit":
            rank_zero_info(
                f"feedback: {self.ledger.spent}/{self.budget} oracle queries spent (PPO); "
                f"store at {self.store_path}"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.reference is None and pl_module.kl_weight > 0:
            pl_module.snapshot_reference()  # the KL is to the model PPO started from

    @staticmethod
    def _broadcast(trainer: L.Trainer, obj: Any) -> Any:
        return obj if trainer.world_size == 1 else trainer.strategy.broadcast(obj, src=0)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.ppo_epochs:
            return  # another optimizer step on the batch already sampled
        update = trainer.global_step // self.ppo_epochs
        quota = None
        if trainer.is_global_zero:
            assert self.ledger is not None
            paid = len(self.ledger.store.rows(round=update, oracle=self.oracle.name))
            quota = max(0, min(self.samples_per_update - paid, self.ledger.remaining))
            if paid and quota:  # resumed inside an update: skip it rather than pay it twice
                quota = 0
        quota = self._broadcast(trainer, quota)
        if quota == 0:
            pl_module.ppo_batch = None
            if trainer.is_global_zero and self.ledger.remaining == 0:
                trainer.should_stop = True
            return
        rank = trainer.global_rank
        generator = torch.Generator(device=pl_module.device)
        generator.manual_seed((self.seed * 1_000_003 + update) * 1_009 + rank)
        batch_out, designs, pass_rate = self._draw(trainer, pl_module, quota, generator)
        counts = _gather(trainer, [len(designs)])  # each rank's share of the update, rank order
        all_designs = _gather(trainer, designs)
        values = stop = None
        if trainer.is_global_zero:
            spent = self.ledger.spent
            values = self.ledger.measure(
                all_designs, round=update, keys=design_keys(pl_module, all_designs)
            )
            self.idle_updates = 0 if self.ledger.spent > spent else self.idle_updates + 1
            stop = self.idle_updates >= self.max_idle_updates
            if stop:
                rank_zero_warn(
                    f"PPO update {update}: {self.idle_updates} updates in a row paid for no new "
                    f"design (the model repeats designs already measured: collapsing?); "
                    f"stopping with {self.ledger.remaining} of {self.budget} queries unspent"
                )
        values, stop = self._broadcast(trainer, (values, stop))
        if stop:
            trainer.should_stop = True
        start, share = sum(counts[:rank]), counts[rank]
        advantages = normalized_advantages(values, clip=self.advantage_clip)[start : start + share]
        if batch_out is not None:
            pl_module.ppo_batch = {
                "trajectory": batch_out["trajectory"],
                "old_log_probs": batch_out["log_probs"],
                "advantages": advantages.to(pl_module.device),
                "clip_range": self.clip_range,
                # the chains' own conditioning (e.g. Stable Diffusion's drawn prompts), so the
                # log-probs are recomputed for the prompts each chain was sampled with
                "cond": batch_out.get("cond"),
            }
        else:
            pl_module.ppo_batch = None
        finite = values[torch.isfinite(values)]
        stats = {
            "feedback/queries": float(self.ledger.spent) if self.ledger else math.nan,
            "feedback/update_mean": float(finite.mean()) if finite.numel() else math.nan,
            "feedback/best": float(finite.max()) if finite.numel() else math.nan,
        }
        if self.screen:
            stats["feedback/screen_pass_rate"] = pass_rate
        self.history.append(stats)
        for key, value in stats.items():
            if math.isfinite(value):
                pl_module.log(key, value, on_step=True, rank_zero_only=True)

    def _draw(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        quota: int,
        generator: torch.Generator,
    ) -> tuple[dict[str, Any] | None, list[Any], float]:
        """This rank's trajectories for an update of ``quota`` samples over all ranks, their
        designs, and the screen's pass rate (NaN without a screen).

        Without a screen: one draw, each rank its share. With one: draws until ``quota``
        fitting samples (or ``max_draws``), each sized by the pass rate so far; a draw's
        fitting samples beyond the quota are cut in rank order, the same way on every rank.
        """
        rank, world = trainer.global_rank, trainer.world_size
        parts: list[dict[str, Any]] = []
        designs: list[Any] = []
        have = proposed = passed = draws = 0
        while have < quota and draws < (self.max_draws if self.screen else 1):
            draws += 1
            want = quota - have
            if self.screen and proposed:
                want = min(math.ceil(want / max(passed / proposed, 1 / 8)), 8 * want)
            share = want // world + (1 if rank < want % world else 0)
            out = pl_module.sample_trajectories(share, generator=generator) if share else None
            drawn = pl_module.decode(out["x0"]) if out is not None else []
            keep = [self.oracle.fits(d) for d in drawn] if self.screen else [True] * len(drawn)
            sizes = _gather(trainer, [[len(drawn), sum(keep)]])  # every rank's counts
            proposed += sum(size[0] for size in sizes)
            passed += sum(size[1] for size in sizes)
            before = sum(size[1] for size in sizes[:rank])  # fitting samples of lower ranks
            room = max(0, quota - have - before)
            index = [i for i, k in enumerate(keep) if k][:room]
            have = min(quota, have + sum(size[1] for size in sizes))
            if out is not None and index:
                parts.append(_select(out, index))
                designs += [drawn[i] for i in index]
        if not parts:
            return None, [], passed / proposed if self.screen and proposed else math.nan
        batch = parts[0] if len(parts) == 1 else _concatenate(parts)
        return batch, designs, passed / proposed if self.screen else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"store_path": self.store_path, "history": self.history, "budget": self.budget}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.store_path is None:
            self.store_path = state_dict["store_path"]
        self.history = list(state_dict["history"])


def _select(out: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """The trajectories ``index`` of a ``sample_trajectories`` batch."""
    rows = torch.as_tensor(index, device=out["x0"].device)
    cond = out.get("cond")
    return {
        "x0": out["x0"][rows],
        "trajectory": [x[rows] for x in out["trajectory"]],
        "log_probs": out["log_probs"][:, rows],
        "cond": None if cond is None else cond[rows],
    }


def _concatenate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several ``sample_trajectories`` batches as one."""
    conds = [part.get("cond") for part in parts]
    return {
        "x0": torch.cat([part["x0"] for part in parts]),
        "trajectory": [
            torch.cat(steps) for steps in zip(*(p["trajectory"] for p in parts), strict=True)
        ],
        "log_probs": torch.cat([part["log_probs"] for part in parts], dim=1),
        "cond": None if any(c is None for c in conds) else torch.cat(conds),
    }


__all__ = ["OnlinePPO"]
