"""The SEIKO online loop as a Lightning callback: one round per training epoch.

At the start of every epoch (round r) the callback

1. samples the round's queries from the current model (each DDP rank its share, gathered),
2. measures them on rank 0 alone through an ``OracleLedger`` (new designs only, within the global
   budget; every answer committed to the SQLite ``FeedbackStore`` before it is used) and
   broadcasts the values,
3. logs how the current reward model ranked these fresh designs (before refitting),
4. refits the reward ensemble on everything measured so far (warm-started; rank 0 fits and
   broadcasts the weights, so every rank holds the same reward model),
5. sets the module's optimistic ``reward`` (the bonus decides how) and its KL ``reference``
   (a frozen copy of the current denoiser: the previous round's model; or, with
   ``reference="pretrained"``, the model fine-tuning started from),

and the epoch's training steps then fine-tune against that reward.

Resuming is exact: the store is the source of truth for what was paid. A round interrupted after
the oracle answered but before the next checkpoint is re-entered on resume and pays only for the
part of its quota that the store does not already hold.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from seiko.callbacks.bonuses import Bonus, UCBBonus
from seiko.oracles.base import Oracle
from seiko.oracles.ledger import OracleLedger
from seiko.oracles.store import FeedbackStore
from seiko.oracles.wrappers import load_oracle
from seiko.rewards.ensemble import Architecture, Pooling, RewardEnsemble
from seiko.rewards.features import load_features
from seiko.rewards.fit import InfeasibleRule, fit_ensemble

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardModelConfig:
    """The reward ensemble's architecture and fitting (see ``seiko.rewards``).

    The number of members comes from the bonus (UCB: 1, bootstrap/Thompson: M). ``kernel_size``,
    ``pool_size``, ``pool`` and ``reverse_complement`` are the CNN's (``RewardEnsemble``).
    ``features``: a ``SequenceClassifier`` checkpoint (``seiko.rewards.features``) whose frozen,
    pretrained features the ensemble (then ``architecture: mlp``) reads instead of the raw
    design; the reward the module fine-tunes against is the composition, differentiable in the
    design.
    """

    architecture: Architecture = "cnn"
    hidden: int = 64
    channels: int = 16
    num_layers: int = 2
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    patience: int = 10
    bootstrap: bool = True
    infeasible: InfeasibleRule = "floor"
    margin: float = 1.0
    kernel_size: int | None = None
    pool_size: int | None = None
    pool: Pooling = "avg"
    reverse_complement: bool = False
    features: str | None = None

    def __post_init__(self) -> None:
        if self.features is not None and self.architecture != "mlp":
            raise ValueError(
                f"reward_model.features={self.features!r} gives the ensemble (B, F) feature "
                f"vectors, which architecture={self.architecture!r} cannot read: use "
                "architecture: mlp"
            )


class FeatureReward(nn.Module):
    """A reward on pretrained features: ``reward(features(x))``, differentiable in x."""

    def __init__(self, features: nn.Module, reward: nn.Module) -> None:
        super().__init__()
        self.features, self.reward = features, reward

    def forward(self, x: Tensor) -> Tensor:
        return self.reward(self.features(x))


def design_keys(pl_module: L.LightningModule, designs: list[Any]) -> list[str]:
    """The FeedbackStore key of each design: the module's ``design_key`` where it has one (images:
    their PNG as a data URI, which ``encode`` reads back), else ``str`` (SMILES and sequences are
    their own keys)."""
    key = getattr(pl_module, "design_key", str)
    return [key(design) for design in designs]


def _gather(trainer: L.Trainer, items: list[Any]) -> list[Any]:
    """Concatenate a python list across ranks (in rank order)."""
    if trainer.world_size == 1 or not dist.is_available() or not dist.is_initialized():
        return items
    gathered: list[list[Any]] = [[] for _ in range(trainer.world_size)]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


class OnlineExploration(Callback):
    """Runs SEIKO's rounds: sample, query the oracle, fit the reward with a bonus, fine-tune.

    Use with a ``DiffusionModule`` in ``mode="finetune"``; one training epoch is one round, so
    ``Trainer(max_epochs=R, limit_train_batches=steps_per_round)`` sets the schedule.

    Args:
        oracle: the ground truth (any ``Oracle``; in YAML a ``class_path`` or, through
            ``seiko.oracles.FunctionOracle``, a plain function's import path).
        budget: the most oracle queries over the whole run (global across ranks and restarts).
        queries_per_round: designs sampled and measured in round r = queries_per_round[r]
            (0 after the list ends), e.g. [1024, 2048, 4096, 8192] as in the paper, or [budget]
            for the non-adaptive baseline.
        bonus: the exploration bonus (``UCBBonus``, ``BootstrapBonus``, ``ThompsonBonus``,
            ``Greedy``).
        reward_model: the reward ensemble's architecture and fitting.
        reference: "previous" (the KL is to the previous round's model, the paper's choice) or
            "pretrained" (to the model fine-tuning started from).
        store_path: the FeedbackStore's SQLite file; default ``<default_root_dir>/feedback.sqlite``.
        warm_start: another store (.sqlite) or a CSV (design,value) whose rows count as already
            measured (offline data: not charged to the budget).
        sample_batch_size: chains sampled at once when drawing the round's queries.
        seed: seeds the sampling of queries and the reward fits (per round, per rank).
        fit_progress: show a progress bar while fitting the reward model.
        max_draws: samplings per round to fill its quota with designs not measured before.
        kl_budget: a per-round trust region: once a fine-tuning step's chain KL to the round's
            reference (``train/kl``, in the sampler's ``kl_reduction`` units) exceeds it, the
            round's remaining steps are skipped (the module's ``stop_round``), like PPO's
            ``target_kl``. None: every step runs. Against a round that climbs the reward model's
            errors on designs it has never seen (the molecules' final-phase overshoot).
        screen: check each sampled design with the oracle's free ``fits(design)`` before paying
            for it (RNA target oracles: valid RNA of the target's length). A design that does
            not fit is never sent to the oracle, charged or stored: it is known infeasible
            without a measurement, as a wet lab would not synthesise a sequence of the wrong
            length. The round samples again until its quota is filled with fitting designs
            (each draw sized by the pass rate seen so far, at most 8x what is missing, up to
            ``max_draws`` draws); ``feedback/screen_pass_rate`` logs the fraction that fit. False:
            every design is paid for and an unfit one comes back NaN.
        screen_examples: with ``screen``, up to this many of each round's rejected designs
            (the first distinct ones drawn) join the reward model's fit as infeasible (NaN)
            examples, free of charge: under ``reward_model.infeasible="floor"`` they score below
            every measured design, so fine-tuning learns to keep away from what the screen
            rejects (e.g. RNA drifting off the target's length) instead of never seeing it.
            They live in the callback's state (its checkpoint), not in the store: they were
            never measured. 0 (default): the reward model sees measured designs only. Measured
            on the RNA task (docs/sequences_log.md, session 10): it slowed the generator's drift off
            the target length by about a round but did not stop it (the chain's truncated
            gradient does not reach the early steps that settle a sequence's length).
        select_from: from round 1 on, sample this many times the missing quota (after the
            screen) and query only the best of those new designs by the module's current reward:
            the bonus's acquisition value (UCB's upper bound, the bootstrap optimum, the Thompson
            sample, Greedy's mean). Batch Bayesian optimisation's acquisition step on top of
            the fine-tuned sampler: the generator proposes, the reward model picks. Costs
            ``select_from`` times the sampling, no oracle call. 1 (default): the round queries
            the designs as sampled, the SEIKO paper's choice. Round 0 (no reward model yet) and
            the non-adaptive baseline never select. With ``screen``, the pool is of fitting
            designs: the round keeps drawing (within ``max_draws``) until it holds
            ``select_from`` times the missing quota of designs that pass the screen, then picks.
            The logged fresh-design Spearman then measures the reward model on designs it chose
            (a range-restricted sample).
    """

    def __init__(
        self,
        oracle: Oracle,
        budget: int,
        queries_per_round: list[int],
        bonus: Bonus = UCBBonus(),
        reward_model: RewardModelConfig = RewardModelConfig(),
        reference: Literal["previous", "pretrained"] = "previous",
        store_path: str | None = None,
        warm_start: str | None = None,
        sample_batch_size: int = 256,
        seed: int = 0,
        fit_progress: bool = False,
        max_draws: int = 4,
        kl_budget: float | None = None,
        screen: bool = False,
        screen_examples: int = 0,
        select_from: int = 1,
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if not queries_per_round or min(queries_per_round) < 0:
            raise ValueError(
                f"queries_per_round must be non-empty and >= 0, got {queries_per_round}"
            )
        if reference not in ("previous", "pretrained"):
            raise ValueError(f"reference={reference!r} is not one of ('previous', 'pretrained')")
        self.oracle = load_oracle(oracle)
        self.budget = budget
        self.queries_per_round = list(queries_per_round)
        self.bonus = bonus
        self.reward_model = (
            RewardModelConfig(**reward_model) if isinstance(reward_model, dict) else reward_model
        )
        self.reference = reference
        self.store_path = store_path
        self.warm_start = warm_start
        self.sample_batch_size = sample_batch_size
        self.seed = seed
        self.fit_progress = fit_progress
        if max_draws < 1:
            raise ValueError(f"max_draws must be >= 1, got {max_draws}")
        self.max_draws = max_draws
        if kl_budget is not None and not kl_budget > 0:
            raise ValueError(f"kl_budget must be > 0 or None, got {kl_budget}")
        self.kl_budget = kl_budget
        if screen and not callable(getattr(self.oracle, "fits", None)):
            raise ValueError(
                f"screen=True needs an oracle with a free check fits(design) -> bool; "
                f"{type(self.oracle).__name__} has none (the RNA target oracles have one)"
            )
        self.screen = screen
        if screen_examples < 0:
            raise ValueError(f"screen_examples must be >= 0, got {screen_examples}")
        if screen_examples and not screen:
            raise ValueError("screen_examples needs screen=True (they are the screen's rejects)")
        self.screen_examples = screen_examples
        if not (isinstance(select_from, int) and select_from >= 1):
            raise ValueError(f"select_from must be an integer >= 1, got {select_from!r}")
        self.select_from = select_from
        # (round, design key) of rejected designs kept as free infeasible examples
        self.screened: list[tuple[int, str]] = []
        self.ledger: OracleLedger | None = None
        self.ensemble: RewardEnsemble | None = None
        self.features: nn.Module | None = (
            None
            if self.reward_model.features is None
            else load_features(self.reward_model.features)
        )
        self.history: list[dict[str, float]] = []
        self._pending_ensemble: dict[str, Any] | None = None
        self._resumed = False  # set by load_state_dict: the next round refits

    # ------------------------------------------------------------------ setup
    @property
    def store(self) -> FeedbackStore | None:
        """The FeedbackStore (rank 0 only; None elsewhere and before ``setup``)."""
        return None if self.ledger is None else self.ledger.store

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if getattr(pl_module, "mode", "finetune") not in ("finetune", "guidance"):
            raise ValueError(
                "OnlineExploration needs the module's mode='finetune' (SEIKO) or 'guidance' "
                "(reward-guided sampling)"
            )
        if self.store_path is None:
            self.store_path = str(Path(trainer.default_root_dir) / "feedback.sqlite")
        if trainer.is_global_zero and self.ledger is None:
            Path(self.store_path).parent.mkdir(parents=True, exist_ok=True)
            store = FeedbackStore(self.store_path)
            if self.warm_start is not None and store.spent() == 0 and len(store) == 0:
                imported = store.import_rows(self.warm_start, oracle=self.oracle.name)
                rank_zero_info(f"warm start: {imported} offline rows from {self.warm_start}")
            self.ledger = OracleLedger(self.oracle, store, self.budget)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.ledger is not None and stage == "fit":
            rank_zero_info(
                f"feedback: {self.ledger.spent}/{self.budget} oracle queries spent; "
                f"store at {self.store_path}"
            )

    # ------------------------------------------------------------------ one round
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.kl_budget is None or getattr(pl_module, "mode", None) != "finetune":
            return
        kl = trainer.callback_metrics.get("train/kl")
        over = kl is not None and float(kl) > self.kl_budget
        # every rank must skip together (a rank left in the epoch would wait in its all-reduce)
        over = trainer.strategy.reduce_boolean_decision(over, all=False)
        if over and not pl_module.stop_round:
            pl_module.stop_round = True  # the module skips the round's remaining steps
            self.history[-1]["finetune/steps"] = float(idx + 1)
            rank_zero_info(
                f"round {trainer.current_epoch}: chain KL {float(kl):.4g} > kl_budget "
                f"{self.kl_budget:g} after {idx + 1} steps; the round's other steps are skipped"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        round_ = trainer.current_epoch
        pl_module.stop_round = False
        if round_ == 0 or self.reference == "previous" or pl_module.reference is None:
            pl_module.snapshot_reference()
        quota = self._broadcast(trainer, self._quota(round_) if trainer.is_global_zero else None)
        stats: dict[str, float] = {"round": float(round_)}
        if quota > 0:
            stats.update(self._query(trainer, pl_module, round_, quota))
        if quota > 0 or self.ensemble is None or self._resumed:
            # a resumed run refits once on everything the store holds: its checkpointed
            # ensemble may predate answers paid just before the interruption
            stats.update(self._refit(trainer, pl_module, round_))
            self._resumed = False
        pl_module.reward = self._build_reward(trainer, pl_module, round_)
        if trainer.is_global_zero:
            stats.update(self._store_stats())
            stats["bonus/mean"] = self._bonus_scale(pl_module)
        stats = self._broadcast(trainer, stats)
        self.history.append(stats)
        for key, value in stats.items():
            if key != "round" and math.isfinite(value):
                pl_module.log(key, value, on_step=False, on_epoch=True, rank_zero_only=True)

    def _quota(self, round_: int) -> int:
        """This round's remaining quota: its schedule minus what the store shows it already paid."""
        assert self.ledger is not None
        wanted = self.queries_per_round[round_] if round_ < len(self.queries_per_round) else 0
        paid = len(self.ledger.store.rows(round=round_, oracle=self.oracle.name))
        return max(0, min(wanted - paid, self.ledger.remaining))

    def _query(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round_: int, quota: int
    ) -> dict[str, float]:
        """Measure ``quota`` new designs of the current model.

        A design already in the store (or drawn twice) is not paid again, so a model that repeats
        itself would leave the round short: the model is sampled again for what is missing, up to
        ``max_draws`` draws in all; what still misses is reported (a sign of mode collapse).
        """
        rank, world = trainer.global_rank, trainer.world_size
        generator = torch.Generator(device=pl_module.device)
        generator.manual_seed((self.seed * 1_000_003 + round_) * 1_009 + rank)
        all_designs: list[Any] = []
        all_values: list[Tensor] = []
        missing, draws = quota, 0
        proposed = passed = 0
        # the acquisition step: sample more, query the best by the current optimistic reward
        factor = 1
        if self.select_from > 1 and round_ > 0:
            if pl_module.reward is None and self.ensemble is not None:
                # a run resumed at this round's start: the previous round's reward, rebuilt
                pl_module.reward = self._build_reward(trainer, pl_module, round_ - 1)
            factor = self.select_from if pl_module.reward is not None else 1
        # with the screen, selection pools fitting designs over draws until it holds
        # select_from x the missing quota: the first draw of a round does not know the pass rate
        pool_screened = self.screen and factor > 1
        while missing > 0 and draws < self.max_draws:
            target = missing * factor
            designs: list[Any] = []
            while True:
                draws += 1
                want = target - len(designs)
                if self.screen and proposed:  # size the draw by the pass rate seen so far
                    rate = max(passed / proposed, 1 / 8)
                    want = min(math.ceil(want / rate), 8 * want)
                share = want // world + (1 if rank < want % world else 0)
                drawn: list[Any] = []
                if share > 0:
                    x = pl_module.sample(
                        share, batch_size=self.sample_batch_size, generator=generator
                    )
                    drawn = pl_module.decode(x)
                drawn = _gather(trainer, drawn)
                if self.screen:  # free: every rank holds the same list, filters it the same way
                    proposed += len(drawn)
                    fits = [bool(self.oracle.fits(design)) for design in drawn]
                    self._keep_screened(
                        pl_module, round_, [d for d, ok in zip(drawn, fits, strict=True) if not ok]
                    )
                    drawn = [d for d, ok in zip(drawn, fits, strict=True) if ok]
                    passed += len(drawn)
                designs += drawn
                if not pool_screened or len(designs) >= target or draws >= self.max_draws:
                    break
            if self.screen and factor == 1:
                designs = designs[:missing]
            if factor > 1:
                designs = self._broadcast(
                    trainer,
                    self._select(pl_module, designs, missing) if trainer.is_global_zero else None,
                )
            values = None
            if trainer.is_global_zero:
                assert self.ledger is not None
                spent = self.ledger.spent
                keys = design_keys(pl_module, designs)
                values = self.ledger.measure(designs, round=round_, keys=keys)
                report = self.ledger.last_report
                missing = max(0, min(missing - (self.ledger.spent - spent), self.ledger.remaining))
                screened = f", {proposed - passed} screened out" if self.screen else ""
                rank_zero_info(
                    f"round {round_}, draw {draws}: {report.queried} queried, {report.reused} "
                    f"reused, {report.infeasible} infeasible{screened}, "
                    f"{self.ledger.spent}/{self.budget} spent"
                )
            values, missing = self._broadcast(trainer, (values, missing))
            all_designs += designs
            all_values.append(values)
        if missing > 0:
            reason = (
                f"only {passed} of {proposed} sampled designs fit the oracle's screen"
                if self.screen and passed < proposed
                else "the model keeps proposing designs already measured (collapsing?)"
            )
            rank_zero_warn(
                f"round {round_}: {missing} of {quota} queries left unspent after {draws} draws: "
                + reason
            )
        values = torch.cat(all_values)
        stats = {"feedback/round_mean": _nanmean(values), "feedback/draws": float(draws)}
        if self.screen:
            stats["feedback/screen_pass_rate"] = passed / proposed if proposed else math.nan
        if self.ensemble is not None:
            stats["reward_model/spearman"] = self._spearman(pl_module, all_designs, values)
        return stats

    def _select(self, pl_module: L.LightningModule, designs: list[Any], n: int) -> list[Any]:
        """The ``n`` designs of ``designs`` not measured before (distinct) with the highest
        current reward (``pl_module.reward``, the bonus's optimistic value); a design the module
        cannot encode ranks last."""
        assert self.store is not None
        keys = design_keys(pl_module, designs)
        known = set(self.store.lookup(keys, oracle=self.oracle.name))
        fresh: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key not in known and key not in fresh:
                fresh[key] = index
        candidates = [designs[i] for i in fresh.values()]
        if len(candidates) <= n:
            return candidates
        x, keep = self._encode(pl_module, list(fresh), featurize=False)
        scores = torch.full((len(candidates),), -math.inf, dtype=torch.float64)
        with torch.no_grad():
            x = x.to(pl_module.device)
            values = torch.cat([pl_module.reward(chunk) for chunk in x.split(256)])
        scores[keep] = torch.nan_to_num(values.double().cpu(), nan=-math.inf)
        order = torch.sort(scores, descending=True, stable=True).indices[:n]
        return [candidates[i] for i in order.tolist()]

    def _keep_screened(self, pl_module: L.LightningModule, round_: int, rejected: list) -> None:
        """Remember up to ``screen_examples`` distinct rejected designs of this round."""
        room = self.screen_examples - sum(1 for r, _ in self.screened if r == round_)
        if room <= 0 or not rejected:
            return
        known = {key for _, key in self.screened}
        for key in design_keys(pl_module, rejected):
            if room <= 0:
                break
            if key not in known:
                known.add(key)
                self.screened.append((round_, key))
                room -= 1

    def _fit_data(self) -> tuple[list[str], Tensor]:
        """The reward model's training data: the store's answers and, interleaved after each
        round's rows, that round's screened designs as NaN. Round by round, so every point keeps
        its index (and its held-out draw) as later rounds append."""
        assert self.store is not None
        if not self.screened:
            return self.store.designs_and_values(oracle=self.oracle.name)
        points = [
            (row.round, 0, row.design, row.value)
            for row in self.store.rows(oracle=self.oracle.name)
        ]
        points += [(round_, 1, key, math.nan) for round_, key in self.screened]
        points.sort(key=lambda point: (point[0], point[1]))  # stable: insertion order within
        designs = [design for _, _, design, _ in points]
        values = torch.tensor([value for *_, value in points], dtype=torch.float64)
        return designs, values

    def _spearman(self, pl_module: L.LightningModule, designs: list[Any], values: Tensor) -> float:
        """Rank correlation of the current reward model with the oracle on fresh designs."""
        from torchmetrics.functional import spearman_corrcoef

        x, keep = self._encode(pl_module, design_keys(pl_module, designs))
        y = values[keep]
        finite = torch.isfinite(y)
        if int(finite.sum()) < 3:
            return math.nan
        with torch.no_grad():
            pred = self.ensemble.mean(x.to(pl_module.device)).double().cpu()
        return float(spearman_corrcoef(pred[finite], y[finite]))

    def _encode(
        self, pl_module: L.LightningModule, designs: list[str], featurize: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Reward-space inputs of the designs the module can encode, and which ones those are;
        with pretrained ``features`` (and ``featurize``), those inputs' features: what the
        ensemble reads."""
        try:
            x = pl_module.encode(designs)
            keep = torch.ones(len(designs), dtype=torch.bool)
        except ValueError:  # e.g. an invalid molecule: fit on the ones that encode
            rows, mask = [], []
            for design in designs:
                try:
                    rows.append(pl_module.encode([design]))
                    mask.append(True)
                except ValueError:
                    mask.append(False)
            keep = torch.tensor(mask, dtype=torch.bool)
            x = torch.cat(rows) if rows else torch.empty(0, *pl_module.data_shape)
        with torch.no_grad():
            x = pl_module.reward_input(x.to(pl_module.device))
            return (self._featurize(x) if featurize else x).cpu(), keep

    def _featurize(self, x: Tensor) -> Tensor:
        """What the ensemble reads of reward-space inputs: the pretrained features, if any."""
        if self.features is None:
            return x
        with torch.no_grad():
            return torch.cat(
                [self.features.to(x.device)(chunk) for chunk in x.split(256)]
                or [torch.empty(0, self.features.num_features, device=x.device)]
            )

    def _refit(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round_: int
    ) -> dict[str, float]:
        payload = None
        stats: dict[str, float] = {}
        if trainer.is_global_zero:
            designs, values = self._fit_data()
            x, keep = self._encode(pl_module, designs)
            y = values[keep]
            if x.shape[0] < 2 or not bool(torch.isfinite(y).any()):
                raise RuntimeError(
                    f"round {round_}: {x.shape[0]} encodable measured designs, "
                    f"{int(torch.isfinite(y).sum())} feasible; the reward model needs at least 2 "
                    "and one feasible (raise queries_per_round[0] or check the oracle)"
                )
            ensemble = self._ensemble(x.shape[1:])
            cfg = self.reward_model
            report = fit_ensemble(
                ensemble,
                x,
                y,
                bootstrap=cfg.bootstrap and self.bonus.members > 1,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                val_fraction=cfg.val_fraction,
                patience=cfg.patience,
                infeasible=cfg.infeasible,
                margin=cfg.margin,
                seed=self.seed * 1_000_003 + round_,
                progress=self.fit_progress,
            )
            stats = {
                "reward_model/val_spearman": report.spearman,
                "reward_model/fit_seconds": report.seconds,
                "reward_model/n_train": float(report.n_train),
            }
            payload = (tuple(x.shape[1:]), ensemble.state_dict())
        shape, state = self._broadcast(trainer, payload)
        if not trainer.is_global_zero:
            self._ensemble(shape).load_state_dict(state)
        return stats

    def _ensemble(self, input_shape: tuple[int, ...]) -> RewardEnsemble:
        if self.ensemble is None:
            cfg = self.reward_model
            self.ensemble = RewardEnsemble(
                input_shape,
                num_members=self.bonus.members,
                architecture=cfg.architecture,
                hidden=cfg.hidden,
                channels=cfg.channels,
                num_layers=cfg.num_layers,
                kernel_size=cfg.kernel_size,
                pool_size=cfg.pool_size,
                pool=cfg.pool,
                reverse_complement=cfg.reverse_complement,
                seed=self.seed,
            )
            if self._pending_ensemble is not None:
                self.ensemble.load_state_dict(self._pending_ensemble)
                self._pending_ensemble = None
        return self.ensemble

    def _build_reward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round_: int
    ) -> nn.Module:
        assert self.ensemble is not None
        measured = None
        if isinstance(self.bonus, UCBBonus):  # the bonus needs every measured design's features
            payload = None
            if trainer.is_global_zero:
                designs, _ = self.store.designs_and_values(oracle=self.oracle.name)
                payload = self._encode(pl_module, designs)[0]
            measured = self._broadcast(trainer, payload)
        self.ensemble.requires_grad_(False).eval()
        device = pl_module.device
        reward = self.bonus.build(self.ensemble.to(device), _to(measured, device), round_)
        if self.features is not None:
            reward = FeatureReward(self.features, reward)
        return reward.to(device).requires_grad_(False).eval()

    def _bonus_scale(self, pl_module: L.LightningModule) -> float:
        """Mean of (optimistic reward - ensemble mean) over the last 256 measured designs."""
        designs, _ = self.store.designs_and_values(oracle=self.oracle.name)
        x, _ = self._encode(pl_module, designs[-256:], featurize=False)
        if x.shape[0] == 0:
            return math.nan
        with torch.no_grad():
            x = x.to(pl_module.device)
            return float((pl_module.reward(x) - self.ensemble.mean(self._featurize(x))).mean())

    def _store_stats(self) -> dict[str, float]:
        _, values = self.store.designs_and_values(oracle=self.oracle.name)
        feasible = values[torch.isfinite(values)]
        top = feasible.sort(descending=True).values
        return {
            "feedback/queries": float(self.ledger.spent),
            "feedback/best": float(top[0]) if top.numel() else math.nan,
            "feedback/top10": float(top[:10].mean()) if top.numel() else math.nan,
            "feedback/feasible_fraction": float(feasible.numel() / max(values.numel(), 1)),
        }

    @staticmethod
    def _broadcast(trainer: L.Trainer, obj: Any) -> Any:
        return obj if trainer.world_size == 1 else trainer.strategy.broadcast(obj, src=0)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "store_path": self.store_path,
            "history": self.history,
            "ensemble": None if self.ensemble is None else self.ensemble.state_dict(),
            "ensemble_input_shape": None if self.ensemble is None else self.ensemble.input_shape,
            "reward_model": asdict(self.reward_model),
            "budget": self.budget,
            "screened": list(self.screened),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.store_path is None:
            self.store_path = state_dict["store_path"]  # the resumed run keeps its paid queries
        self.history = list(state_dict["history"])
        self.screened = [tuple(item) for item in state_dict.get("screened", [])]
        self._resumed = True
        if state_dict["ensemble"] is not None:
            shape = state_dict.get("ensemble_input_shape")
            if self.ensemble is None and shape is not None:
                self._ensemble(tuple(shape))  # built now: a resumed round can rank with it
            if self.ensemble is not None:
                self.ensemble.load_state_dict(state_dict["ensemble"])
            else:  # an older checkpoint without the shape: built at the next fit
                self._pending_ensemble = state_dict["ensemble"]


def _nanmean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def _to(x: Tensor | None, device: torch.device) -> Tensor | None:
    return None if x is None else x.to(device)
