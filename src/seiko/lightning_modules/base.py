"""The system shared by every domain: a diffusion model that pretrains and reward fine-tunes.

One class, two objectives, chosen by ``mode`` (rather than two classes) because the two share
everything else: the denoiser, the schedule, the sampler, ``sample``/``decode``, and the checkpoint
a user moves from one to the other (pretrain, then fine-tune from that checkpoint):

* ``mode="pretrain"``: the denoising loss E_t ||f_theta(x_t, t) - target||^2 on data batches.
* ``mode="finetune"``: maximise E[reward(x0)] - kl_weight * KL(p_theta || p_ref) by backpropagating
  through the sampling chain (Uehara et al. 2024, eq. 7-8), where ``reward`` is any differentiable
  callable on x0 and ``reference`` a frozen denoiser (the previous round's model in SEIKO; by
  default
  a frozen copy of the denoiser taken when fine-tuning starts, i.e. the pretrained model).

The module needs no seiko callback: set ``module.reward`` to a known differentiable reward and
call ``Trainer.fit`` (AlignProp/DRaFT style). SEIKO's exploration callbacks set ``reward`` (learned
reward + uncertainty bonus) and ``reference`` at every round.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from seiko.diffusion import GaussianSampler, InitialNoise, NoiseSchedule, RewardGuidance
from seiko.diffusion.chain import KLGradient
from seiko.diffusion.ppo import ppo_loss
from seiko.diffusion.schedule import BetaSchedule, PredictionType, TimestepSpacing
from seiko.diffusion.step import KLReduction, SamplerKind

Reward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ScheduleConfig:
    """The forward process (see ``seiko.diffusion.NoiseSchedule.create``)."""

    num_train_timesteps: int = 1000
    beta_schedule: BetaSchedule = "squaredcos_cap_v2"
    prediction_type: PredictionType = "epsilon"
    clip_sample: float | None = None


@dataclass(frozen=True)
class SamplerConfig:
    """The reverse chain (see ``seiko.diffusion.GaussianSampler``).

    ``kl_reduction="mean"`` averages the squared mean difference over data dimensions, so one
    ``kl_weight`` works whatever the design's size; ``"sum"`` is the exact KL (see diffusion.step).
    ``kl_gradient="detached"`` takes the reference's prediction without gradient (the public SEIKO
    and AlignProp code's choice, ~5 forwards per checkpointed step); ``"exact"`` also backpropagates
    through the reference's input (~8); see ``seiko.diffusion.chain``. ``kl_sampled_steps=m``
    also gives the KL a gradient on m random steps of those a truncated chain runs without
    autograd (unbiased, m extra forward/backward passes a step; see ``seiko.diffusion.chain``).
    ``guidance_scale`` is used by ``mode="guidance"`` only.

    ``train_mode=False`` (default) runs the denoiser in eval mode inside the fine-tuning chain:
    the chain being optimised is then the sampler that will be deployed (``sample`` runs in eval
    mode), dropout does not make the reward gradient noisier, and the no-grad first pass of each
    checkpointed step can take torch's fused inference kernels (benchmarks/engine.py measures
    the difference). ``True`` keeps the training-mode behaviour (dropout active in the chain).
    """

    kind: SamplerKind = "ddim"
    num_steps: int = 50
    eta: float = 1.0
    spacing: TimestepSpacing = "leading"
    checkpoint: bool = True
    truncate: int | None = None
    truncate_min: int | None = None
    kl_reduction: KLReduction = "mean"
    kl_gradient: KLGradient = "detached"
    kl_sampled_steps: int = 0
    guidance_scale: float = 1.0
    train_mode: bool = False


def nets_to_ignore(*names: str) -> list[str]:
    """What ``save_hyperparameters`` must leave out: the networks (and the optimizer factory)
    when they came as Python objects, which do not belong in hyper-parameters; nothing but the
    optimizer when LightningCLI built the module, whose hyper-parameters are then the config
    (class paths and arguments), so ``LightningModule.load_from_checkpoint(path)`` rebuilds the
    networks from the checkpoint alone."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    if _given_hyperparameters.get() is not None:
        return ["optimizer"]
    return [*names, "optimizer"]


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, Tensor):
                return value.shape[0]
    if isinstance(batch, Tensor):
        return batch.shape[0]
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__} batch")


class DiffusionModule(L.LightningModule):
    """A diffusion model over fixed-shape designs that pretrains and reward fine-tunes.

    Batches are dicts: ``{"x": (B, *data_shape) designs in model space, "cond": (B,) long}`` for
    pretraining (``cond`` optional), and any dict with a (B,) tensor (``"cond"`` or ``"index"``) for
    fine-tuning and prediction, where B is the number of chains to run.

    Args:
        denoiser: ``forward(x_t, t, cond=None)`` -> prediction, e.g. ``seiko.nets.SequenceDenoiser``
        data_shape: shape of one design in model space, e.g. (L, V).
        mode: "pretrain" (denoising loss), "finetune" (reward objective through the chain), or
            "guidance" (no training: ``sample`` steers every step up the gradient of ``reward``,
            with ``sampler.guidance_scale``; see ``seiko.diffusion.guidance``; the online loop's
            reward-guided baseline), or "ppo" (online policy gradient, DDPO: the clipped PPO loss
            on the batches that ``seiko.callbacks.OnlinePPO`` samples and measures).
        schedule: the noise schedule.
        sampler: the sampling chain, its gradient checkpointing/truncation and KL reduction.
        kl_weight: alpha in reward - alpha * KL.
        learn_initial_noise: also fine-tune the mean and log-std of x_T (with its closed-form KL).
        cond_dropout: probability of dropping a pretraining label to the null class (for guidance).
        pretrained_checkpoint: a Lightning checkpoint whose ``denoiser.*`` weights are loaded at
            construction (how a fine-tuning config starts from a pretrained model).
        optimizer: optimizer factory over the trainable parameters.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        data_shape: Sequence[int],
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        super().__init__()
        modes = ("pretrain", "finetune", "guidance", "ppo")
        if mode not in modes:
            raise ValueError(f"mode={mode!r} is not one of {modes}")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
        # checkpoints store the two configs as dicts (see below): accept those when reloading
        schedule = ScheduleConfig(**schedule) if isinstance(schedule, dict) else schedule
        sampler = SamplerConfig(**sampler) if isinstance(sampler, dict) else sampler
        self.save_hyperparameters(ignore=nets_to_ignore("denoiser", "autoencoder"))
        # dataclasses are stored as plain dicts so checkpoints load with weights_only=True
        self.hparams["schedule"], self.hparams["sampler"] = asdict(schedule), asdict(sampler)
        self.denoiser = denoiser
        self.data_shape = tuple(int(d) for d in data_shape)
        self.mode = mode
        self.kl_weight = kl_weight
        self.cond_dropout = cond_dropout
        self.noise_schedule = NoiseSchedule.create(**asdict(schedule))
        chain = asdict(sampler)
        self.guidance_scale = chain.pop("guidance_scale")
        self.chain_train_mode = chain.pop("train_mode")
        self.sampler = GaussianSampler(self.noise_schedule, **chain)
        self.initial_noise = InitialNoise(self.data_shape) if learn_initial_noise else None
        self.optimizer_factory = optimizer
        # Not registered as submodules: the reward is a plain callable owned by whoever set it, and
        # the reference is frozen (it travels in the checkpoint through on_save_checkpoint).
        self.reward: Reward | None = None
        # set by a callback (OnlineExploration's kl_budget) to skip the epoch's remaining steps
        self.stop_round = False
        self.set_reference(None)
        if pretrained_checkpoint is not None:
            self.load_denoiser(pretrained_checkpoint)

    # ------------------------------------------------------------------ parts
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "reward":
            # A reward may be an nn.Module (a learned ensemble): keep it out of the module tree so
            # its weights are neither trained by our optimizer nor saved in our state_dict.
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def reference(self) -> nn.Module | None:
        """The frozen denoiser of the KL term (None: no KL)."""
        return self._reference

    def set_reference(self, module: nn.Module | None) -> None:
        """Make ``module`` (frozen here) the KL reference; None removes the KL term."""
        if module is not None:
            module.requires_grad_(False).eval()
        # object.__setattr__: nn.Module would otherwise register it as a trainable submodule
        object.__setattr__(self, "_reference", module)

    def snapshot_reference(self) -> nn.Module:
        """Freeze a copy of the current denoiser and make it the KL reference."""
        self.set_reference(copy.deepcopy(self.denoiser))
        return self._reference

    def load_denoiser(self, path: str) -> None:
        """Load ``denoiser.*`` weights from a Lightning checkpoint (or a plain state dict) file."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"pretrained_checkpoint {path!r} does not exist") from err
        state = state.get("state_dict", state)
        prefix = "denoiser."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"{path!r} holds no 'denoiser.*' weights (keys: {list(state)[:5]}...)")
        self.denoiser.load_state_dict(weights)

    # ------------------------------------------------------------------ domain hooks
    def reward_input(self, x0: Tensor) -> Tensor:
        """Map the chain's continuous x0 to what ``reward`` takes (identity; sequences override)."""
        return x0

    def project(self, x0: Tensor) -> Tensor:
        """Map the fine-tuning chain's x0 to the model-space point of the design it decodes to,
        before ``reward_input`` (identity here; ``LatentSequenceDiffusion`` can snap it onto its
        autoencoder's manifold with a straight-through gradient). Not applied to guidance."""
        return x0

    def decode(self, x: Tensor) -> list[Any]:
        """Turn (B, *data_shape) samples into designs (here: one tensor per design)."""
        return list(x.detach().cpu().unbind(0))

    def encode(self, designs: Sequence[Any]) -> Tensor:
        """Turn designs back into model space (B, *data_shape) (here: stack tensors)."""
        return torch.stack([torch.as_tensor(d, dtype=torch.float32) for d in designs])

    # ------------------------------------------------------------------ sampling
    def initial(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """x_T for n chains: the learned initial distribution if any, else N(0, I)."""
        if self.initial_noise is not None:
            return self.initial_noise(n, generator=generator)
        return self.sampler.prior(n, self.data_shape, device=self.device, generator=generator)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw n designs in model space, (n, *data_shape), without gradient, in batches."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                c = None if cond is None else cond[start : start + m].to(self.device)
                x_T = self.initial(m, generator=generator)
                out = self.sampler(
                    self.denoiser, x_T, cond=c, generator=generator, guidance=self._guidance()
                )
                chunks.append(out.x0)
            return torch.cat(chunks)
        finally:
            self.train(was_training)

    def _guidance(self) -> RewardGuidance | None:
        """Reward guidance in "guidance" mode once a reward is set, else None."""
        if self.mode != "guidance" or self.reward is None:
            return None
        reward, to_input = self.reward, self.reward_input
        return RewardGuidance(lambda x0: reward(to_input(x0)), scale=self.guidance_scale)

    @torch.no_grad()
    def sample_trajectories(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """n trajectories of the current model for PPO: {"x0", "trajectory", "log_probs",
        "cond"}, the log-probabilities (stochastic steps, n) those of the sampling model (no
        gradient), "cond" the conditioning they were sampled with (the PPO loss re-scores them
        with it)."""
        was_training = self.training
        self.eval()
        try:
            x_T = self.initial(n, generator=generator)
            out = self.sampler(
                self.denoiser, x_T, cond=cond, generator=generator, return_trajectory=True
            )
            log_probs, _ = self.sampler.log_prob(self.denoiser, out.trajectory, cond=cond)
        finally:
            self.train(was_training)
        return {"x0": out.x0, "trajectory": out.trajectory, "log_probs": log_probs, "cond": cond}

    def ppo_step(self) -> Tensor | None:
        """The clipped PPO loss (+ kl_weight * per-step KL to the reference) on ``ppo_batch``
        (its "cond", if any, is the conditioning the trajectories were sampled with)."""
        batch = getattr(self, "ppo_batch", None)
        if batch is None:
            return None  # nothing sampled for this step (budget spent, or a resumed update)
        reference = self.reference if self.kl_weight > 0 else None
        log_probs, kls = self.sampler.log_prob(
            self.denoiser, batch["trajectory"], cond=batch.get("cond"), reference=reference
        )
        loss, info = ppo_loss(
            log_probs, batch["old_log_probs"], batch["advantages"], batch["clip_range"]
        )
        kl = kls.sum(0).mean()
        total = loss + self.kl_weight * kl
        self.log("train/loss", total, prog_bar=True)
        self.log_dict(
            {"train/ppo_loss": loss, "train/kl": kl, **{f"ppo/{k}": v for k, v in info.items()}}
        )
        return total

    # ------------------------------------------------------------------ objectives
    def denoising_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean squared error of the denoiser's prediction at uniformly drawn timesteps."""
        x0 = batch["x"]
        cond = batch.get("cond")
        if cond is not None and self.training and self.cond_dropout > 0:
            drop = torch.rand(cond.shape, device=cond.device) < self.cond_dropout
            cond = torch.where(drop, torch.full_like(cond, -1), cond)  # -1: the null class
        t = torch.randint(
            0, self.noise_schedule.num_train_timesteps, (x0.shape[0],), device=x0.device
        )
        noise = torch.randn_like(x0)
        x_t = self.noise_schedule.add_noise(x0, noise, t)
        prediction = self.denoiser(x_t, t, cond)
        return nn.functional.mse_loss(prediction, self.noise_schedule.target(x0, noise, t))

    def finetune_loss(self, n: int, cond: Tensor | None = None) -> dict[str, Tensor]:
        """-E[reward(x0)] + kl_weight * E[KL] over n chains run with gradient.

        Returns a dict with "loss", "reward", "kl" (chain), "kl_initial" (scalars).
        """
        if self.reward is None:
            raise RuntimeError(
                "mode='finetune' needs a reward: set `module.reward` to a differentiable callable "
                "on x0, or add an exploration callback (seiko.callbacks) that sets it each round"
            )
        x_T = self.initial(n)
        was_training = self.denoiser.training
        self.denoiser.train(self.chain_train_mode)
        try:
            out = self.sampler(self.denoiser, x_T, cond=cond, reference=self.reference, grad=True)
        finally:
            self.denoiser.train(was_training)
        reward = self.reward(self.reward_input(self.project(out.x0)))
        if reward.shape != (n,):
            raise ValueError(f"reward returned shape {tuple(reward.shape)}, expected ({n},)")
        kl_initial = (
            self.initial_noise.kl(self.sampler.kl_reduction)
            if self.initial_noise is not None
            else reward.new_zeros(())
        )
        kl = out.kl.mean()
        loss = -reward.mean() + self.kl_weight * (kl + kl_initial)
        return {"loss": loss, "reward": reward.mean(), "kl": kl, "kl_initial": kl_initial}

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self) -> None:
        if self.mode == "finetune" and self.reference is None and self.kl_weight > 0:
            self.snapshot_reference()  # KL to the model fine-tuning started from
        if self.reference is not None:
            self.reference.to(self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """-1 (Lightning: skip the rest of this epoch) once ``stop_round`` is set."""
        return -1 if self.stop_round else None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.mode == "pretrain":
            loss = self.denoising_loss(batch)
            self.log("train/loss", loss, prog_bar=True)
            return loss
        if self.mode == "guidance":
            return None  # nothing to train: Lightning skips the optimizer step
        if self.mode == "ppo":
            return self.ppo_step()
        # In fine-tuning a batch only says how many chains to run (and their classes, if any):
        # any batch with a first dimension will do.
        cond = batch.get("cond") if isinstance(batch, dict) else None
        terms = self.finetune_loss(_batch_size(batch), cond)
        for key, value in terms.items():
            self.log(f"train/{key}", value, prog_bar=key in ("loss", "reward"))
        return terms["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.mode == "pretrain":
            self.log("val/loss", self.denoising_loss(batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.mode == "pretrain":
            self.log("test/loss", self.denoising_loss(batch), sync_dist=True)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[Any]:
        """Sample one design per batch row and return the decoded designs."""
        n = _batch_size(batch)
        return self.decode(self.sample(n, cond=batch.get("cond"), batch_size=n))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return self.optimizer_factory(params)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seiko_mode"] = self.mode
        if self.reference is not None:
            checkpoint["seiko_reference"] = self.reference.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        reference = checkpoint.get("seiko_reference")
        if reference is not None:
            self.snapshot_reference()
            self.reference.load_state_dict(reference)


def straight_through_one_hot(x0: Tensor, temperature: float = 1.0) -> Tensor:
    """Hard one-hot in the forward pass, softmax(x0 / temperature) gradient in the backward pass.

    Measured on SELFIES: temperature 1 keeps a useful gradient; 0.1 (or a hard clip) kills it.
    x0: (..., V) -> (..., V).
    """
    soft = torch.softmax(x0 / temperature, dim=-1)
    hard = nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


class SequenceVocabulary:
    """Strings <-> token ids over a fixed vocabulary, for the sequence modules.

    The class using it sets ``vocabulary``, ``seq_len`` and ``pad_symbol`` (``_set_vocabulary``);
    domains override ``tokenize``/``detokenize`` (SELFIES splits on brackets).
    """

    vocabulary: list[str]
    seq_len: int
    pad_symbol: str | None

    def _set_vocabulary(self, vocabulary: list[str], seq_len: int, pad_symbol: str | None) -> None:
        if len(set(vocabulary)) != len(vocabulary) or len(vocabulary) < 2:
            raise ValueError(f"vocabulary must have >= 2 distinct symbols, got {vocabulary}")
        if pad_symbol is not None and pad_symbol not in vocabulary:
            raise ValueError(f"pad_symbol {pad_symbol!r} is not in the vocabulary {vocabulary}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.vocabulary = list(vocabulary)
        self.seq_len = seq_len
        self.pad_symbol = pad_symbol
        self._index = {s: i for i, s in enumerate(self.vocabulary)}

    def tokenize(self, design: str) -> list[str]:
        """Split a design string into symbols (one character each; SELFIES overrides)."""
        return list(design)

    def detokenize(self, symbols: list[str]) -> str:
        return "".join(symbols)

    def token_ids(self, designs: Sequence[str]) -> Tensor:
        """Strings -> (B, L) long token ids, padded; unknown symbols or overlong designs raise."""
        pad = self._index.get(self.pad_symbol) if self.pad_symbol is not None else None
        rows = []
        for n, design in enumerate(designs):
            symbols = self.tokenize(design)
            if len(symbols) > self.seq_len or (len(symbols) < self.seq_len and pad is None):
                raise ValueError(
                    f"design {n} ({design[:40]!r}) has {len(symbols)} symbols; the model takes "
                    f"{self.seq_len}" + ("" if pad is not None else " exactly (no pad symbol)")
                )
            try:
                ids = [self._index[s] for s in symbols]
            except KeyError as err:
                raise ValueError(
                    f"design {n} ({design[:40]!r}) has symbol {err.args[0]!r} "
                    "outside the vocabulary"
                ) from None
            rows.append(ids + [pad] * (self.seq_len - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.seq_len)

    def strings(self, ids: Tensor, stop_at_pad: bool = False) -> list[str]:
        """(B, L) token ids -> B strings, pads dropped (``stop_at_pad``: each ends at its first)."""
        out = []
        for row in ids.detach().cpu().tolist():
            symbols = [self.vocabulary[i] for i in row]
            if stop_at_pad and self.pad_symbol in symbols:
                symbols = symbols[: symbols.index(self.pad_symbol)]
            out.append(self.detokenize([s for s in symbols if s != self.pad_symbol]))
        return out


class SequenceDiffusion(SequenceVocabulary, DiffusionModule):
    """Continuous diffusion on one-hot sequences over a fixed alphabet.

    A design is a string; in model space it is a (L, V) one-hot matrix scaled to {-1, +1}
    (so the data has the same scale as the N(0, I) prior). ``decode`` takes the argmax per position
    and drops ``pad_symbol``; ``reward_input`` is the straight-through one-hot of x0.

    Args:
        denoiser: e.g. ``seiko.nets.SequenceDenoiser`` (vocab_size, seq_len linked from the data).
        vocabulary: the symbols in one-hot order, pad included (linked from the datamodule by the
            CLI; saved in the checkpoint).
        seq_len: L, the padded sequence length.
        pad_symbol: the padding symbol (dropped when decoding), if the alphabet has one.
        Other arguments: see ``DiffusionModule``.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        vocabulary: list[str],
        seq_len: int,
        pad_symbol: str | None = None,
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        self._set_vocabulary(vocabulary, seq_len, pad_symbol)
        super().__init__(
            denoiser,
            data_shape=(seq_len, len(vocabulary)),
            mode=mode,
            schedule=schedule,
            sampler=sampler,
            kl_weight=kl_weight,
            learn_initial_noise=learn_initial_noise,
            cond_dropout=cond_dropout,
            pretrained_checkpoint=pretrained_checkpoint,
            optimizer=optimizer,
        )

    def decode(self, x: Tensor) -> list[str]:
        """(B, L, V) -> B strings: the argmax symbol per position, pads dropped."""
        return self.strings(x.detach().argmax(-1))

    def encode(self, designs: Sequence[str]) -> Tensor:
        """Strings -> (B, L, V) one-hot in {-1, +1}; unknown symbols or overlong designs raise."""
        one_hot = nn.functional.one_hot(self.token_ids(designs), len(self.vocabulary))
        return one_hot.float() * 2 - 1

    def reward_input(self, x0: Tensor) -> Tensor:
        """Straight-through one-hot in {0, 1} of the continuous x0 (gradient of softmax(x0))."""
        return straight_through_one_hot(x0)


__all__ = [
    "DiffusionModule",
    "SequenceVocabulary",
    "SamplerConfig",
    "ScheduleConfig",
    "SequenceDiffusion",
    "straight_through_one_hot",
]
