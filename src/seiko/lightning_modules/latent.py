"""Latent diffusion for token sequences: a frozen autoencoder, Gaussian diffusion on its latent.

Two stages, each a LightningModule trained with ``seiko fit``:

1. ``SequenceAutoencoderModule`` trains ``seiko.nets.SequenceAutoencoder`` as a beta-VAE on the
   datamodule's token ids (``batch["tokens"]``).
2. ``LatentSequenceDiffusion`` loads that autoencoder frozen, encodes each batch to the posterior
   mean mu(x), scales it to unit variance (``latent_scale``, measured on the first training batch
   like Stable Diffusion's scaling factor, then saved), and trains a denoiser on it. A design is
   decoded by greedy autoregressive decoding of z / latent_scale.

The chain is the engine's ``GaussianSampler`` unchanged (x is (B, latent_dim)), so fine-tuning,
the KL and the online loop work as in every other domain. The learned reward reads the latent
itself (``reward_input`` is the identity; ``encode`` maps a measured design to its posterior
mean), which makes it a function of the design, not of one of its many token spellings, and
differentiable in the chain's output without passing through discrete decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from seiko.lightning_modules.base import (
    DiffusionModule,
    SamplerConfig,
    ScheduleConfig,
    SequenceVocabulary,
    nets_to_ignore,
)


def _tokens(batch: dict[str, Tensor]) -> Tensor:
    """The batch's token ids (B, L): ``tokens`` if present, else the argmax of the one-hot ``x``."""
    if "tokens" in batch:
        return batch["tokens"]
    return batch["x"].argmax(-1)


class SequenceAutoencoderModule(LightningModule):
    """Trains a ``SequenceAutoencoder`` as a beta-VAE.

    Loss per sequence: the summed token cross-entropy (every position, pads included, so the
    decoder learns where a sequence ends) + beta * KL(q(z|x) || N(0, I)), beta ramped linearly
    from 0 over ``beta_warmup_steps`` (so the latent is used before the KL can switch it off).

    Args:
        autoencoder: the network (vocab_size, seq_len linked from the data by the CLI).
        beta: final weight of the KL term.
        beta_warmup_steps: optimizer steps of the linear ramp of beta.
        input_dropout: word dropout on the decoder's inputs (see ``SequenceAutoencoder``).
        optimizer: optimizer factory.
        vocabulary, seq_len, pad_symbol: the data's tokens (linked from the datamodule by the
            CLI), kept in the checkpoint so the diffusion stage can read the exact vocabulary
            from it (``MoleculeDataModule(vocabulary=<this checkpoint>)``).
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        vocabulary: list[str] | None = None,
        seq_len: int | None = None,
        pad_symbol: str | None = None,
        beta: float = 0.05,
        beta_warmup_steps: int = 2000,
        input_dropout: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        super().__init__()
        if beta < 0 or beta_warmup_steps < 0 or not 0 <= input_dropout < 1:
            raise ValueError(
                f"need beta >= 0, beta_warmup_steps >= 0, input_dropout in [0, 1); got {beta}, "
                f"{beta_warmup_steps}, {input_dropout}"
            )
        self.save_hyperparameters(ignore=nets_to_ignore("autoencoder"))
        self.autoencoder = autoencoder
        self.optimizer_factory = optimizer

    def _beta(self) -> float:
        ramp = self.hparams.beta_warmup_steps
        return self.hparams.beta * min(1.0, self.global_step / ramp) if ramp else self.hparams.beta

    def losses(self, batch: dict[str, Tensor], sample: bool = True) -> dict[str, Tensor]:
        """Reconstruction (nats per sequence), KL (nats), token and whole-sequence accuracy."""
        tokens = _tokens(batch)
        mean, logvar = self.autoencoder.encode(tokens)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        logits = self.autoencoder(z, tokens, input_dropout=self.hparams.input_dropout)
        recon = nn.functional.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        correct = logits.argmax(-1) == tokens
        return {
            "recon": recon.sum(-1).mean(),
            "kl": kl.mean(),
            "token_accuracy": correct.float().mean(),
            "sequence_accuracy": correct.all(-1).float().mean(),
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        loss = terms["recon"] + self._beta() * terms["kl"]
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=False)
        self.log("train/beta", self._beta())
        return loss

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        terms = self.losses(batch, sample=False)
        terms["loss"] = terms["recon"] + self.hparams.beta * terms["kl"]
        for key, value in terms.items():
            self.log(f"{stage}/{key}", value, prog_bar=key != "kl", sync_dist=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())


def load_prefixed(path: str, prefix: str) -> dict[str, Tensor]:
    """The ``prefix``-ed weights of a Lightning checkpoint (or plain state dict), prefix removed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"checkpoint {path!r} does not exist") from err
    state = state.get("state_dict", state)
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{path!r} holds no {prefix!r} weights (keys: {list(state)[:5]}...)")
    return weights


class LatentSequenceDiffusion(SequenceVocabulary, DiffusionModule):
    """Gaussian diffusion in the latent space of a frozen ``SequenceAutoencoder``.

    Args:
        denoiser: e.g. ``seiko.nets.VectorDenoiser`` (dim = the autoencoder's latent_dim).
        autoencoder: the ``SequenceAutoencoder`` architecture (vocab_size, seq_len linked from
            the data by the CLI); frozen here.
        vocabulary, seq_len, pad_symbol: as in ``SequenceDiffusion`` (linked from the data).
        autoencoder_checkpoint: checkpoint with ``autoencoder.*`` weights (the autoencoder
            stage's, or a latent model's); None when ``pretrained_checkpoint`` brings them.
        latent_scale: multiplies the posterior mean into model space; None: 1 / (std of the
            first training batch's means), measured at the start of pretraining.
        decode_temperature: 0 decodes greedily; > 0 samples each token at that temperature.
        decode_beam_width: > 1 decodes by beam search (with ``decode_temperature`` 0): the
            decoder's most likely whole sequence rather than its token-by-token argmax.
        cache_latents: remember each training sequence's posterior mean during pretraining
            (the autoencoder is frozen and deterministic in eval mode, so the mean is a pure
            function of the tokens): after the first epoch no batch is encoded again. Encoding
            was about two thirds of a pretraining step on 2 CPU cores (256 sequences: 0.13 s
            encode, 0.06 s denoiser forward+backward). The cache holds latent_dim floats per
            distinct sequence (13 MB for 50,000 molecules at latent_dim 64); False encodes
            every batch.
        reward_projection: "straight_through" evaluates the fine-tuning reward at the latent of
            the design each chain actually produces, ``encode(decode(x0))``, with the gradient
            passed to x0 unchanged (a straight-through estimator): x0 + (that - x0).detach().
            Why: the learned reward is fit on ``encode`` of measured designs, which lie on the
            autoencoder's manifold; a diffusion sample can lie far off it (measured for the
            shipped molecular prior: median |x0 - encode(decode(x0))| 8.2 at |x0| 7.5, cosine
            0.45, against 1.5 and 0.98 for real molecules' latents), where the reward model
            extrapolates and can be driven up without the designs improving (reward hacking).
            Costs one decode and encode of the chains per fine-tuning step. A design that does
            not decode or encode keeps its x0. "none": the reward reads x0 itself.
        pretrained_checkpoint: a latent model's checkpoint: loads the denoiser and, when present,
            the autoencoder and the latent scale (what a fine-tuning config starts from).
        decoder_noise: stage 3 of pretraining ("decoder hardening"; ``mode="pretrain"`` with a
            trained latent model as ``pretrained_checkpoint``). Instead of the denoiser, train
            the autoencoder's decoder side (``SequenceAutoencoder.decoder_parameters``) to
            decode each training sequence from its model-space latent plus N(0,
            decoder_noise²) noise; the encoder, the embedding and the denoiser stay frozen, so
            every latent, and the diffusion model's distribution over them, is unchanged. Why:
            diffusion samples land about a unit off the data's latents, where a decoder trained
            only on narrow posteriors produces worse molecules; measured on the molecular prior
            (300 samples; docs/molecules.md): QED 0.686 -> 0.764, SA 3.53 -> 2.97 after 16
            minutes at noise 1.0 (0.5: 0.723, 3.40). None: ordinary pretraining.
        Other arguments: see ``DiffusionModule``.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        autoencoder: nn.Module,
        vocabulary: list[str],
        seq_len: int,
        pad_symbol: str | None = None,
        autoencoder_checkpoint: str | None = None,
        latent_scale: float | None = None,
        decode_temperature: float = 0.0,
        decode_beam_width: int = 1,
        cache_latents: bool = True,
        reward_projection: Literal["none", "straight_through"] = "none",
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        decoder_noise: float | None = None,
    ) -> None:
        self._set_vocabulary(vocabulary, seq_len, pad_symbol)
        if decoder_noise is not None:
            if mode != "pretrain":
                raise ValueError(
                    f"decoder_noise is a pretraining stage: needs mode='pretrain', got {mode!r}"
                )
            if not decoder_noise >= 0:
                raise ValueError(f"decoder_noise must be >= 0 or None, got {decoder_noise}")
            if pretrained_checkpoint is None:
                raise ValueError(
                    "decoder_noise tunes the decoder of a trained latent model: set "
                    "pretrained_checkpoint (its denoiser, autoencoder and latent_scale)"
                )
        if decode_beam_width < 1 or decode_temperature < 0:
            raise ValueError(
                f"need decode_beam_width >= 1 and decode_temperature >= 0, got "
                f"{decode_beam_width} and {decode_temperature}"
            )
        latent_dim = getattr(autoencoder, "latent_dim", None)
        if latent_dim is None:
            raise ValueError("autoencoder needs a latent_dim (a seiko.nets.SequenceAutoencoder)")
        if latent_scale is not None and latent_scale <= 0:
            raise ValueError(f"latent_scale must be > 0 or None, got {latent_scale}")
        super().__init__(
            denoiser,
            data_shape=(latent_dim,),
            mode=mode,
            schedule=schedule,
            sampler=sampler,
            kl_weight=kl_weight,
            learn_initial_noise=learn_initial_noise,
            cond_dropout=cond_dropout,
            pretrained_checkpoint=None,
            optimizer=optimizer,
        )
        self.hparams["pretrained_checkpoint"] = pretrained_checkpoint
        self.decode_temperature = decode_temperature
        self.decode_beam_width = decode_beam_width
        self.cache_latents = cache_latents
        if reward_projection not in ("none", "straight_through"):
            raise ValueError(
                f"reward_projection must be 'none' or 'straight_through', got {reward_projection!r}"
            )
        self.reward_projection = reward_projection
        self._latent_cache: dict[bytes, Tensor] = {}  # token row -> unscaled posterior mean
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        # 0 = not measured yet; a buffer, so it travels in the checkpoint
        self.register_buffer("latent_scale", torch.tensor(float(latent_scale or 0.0)))
        if autoencoder_checkpoint is not None:
            self.autoencoder.load_state_dict(load_prefixed(autoencoder_checkpoint, "autoencoder."))
        if pretrained_checkpoint is not None:
            self.load_denoiser(pretrained_checkpoint)
        self.decoder_noise = decoder_noise
        if decoder_noise is not None:
            self._scale()  # the checkpoint must have brought a measured latent scale
            self.denoiser.requires_grad_(False)
            for parameter in self.autoencoder.decoder_parameters():
                parameter.requires_grad_(True)
            # Lightning keeps each submodule's train/eval mode as it finds it at fit start
            self.autoencoder.train(self.training)

    def load_denoiser(self, path: str) -> None:
        """Denoiser weights, and the autoencoder and latent scale when the checkpoint has them."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        super().load_denoiser(path)
        if any(k.startswith("autoencoder.") for k in state):
            self.autoencoder.load_state_dict(load_prefixed(path, "autoencoder."))
        if "latent_scale" in state:
            self.latent_scale.copy_(state["latent_scale"])
        self._latent_cache.clear()

    def train(self, mode: bool = True) -> LatentSequenceDiffusion:
        super().train(mode)
        # frozen: never in training mode (its dropout stays off), except in the decoder stage
        self.autoencoder.train(mode and getattr(self, "decoder_noise", None) is not None)
        return self

    # ------------------------------------------------------------------ latent <-> designs
    def _scale(self) -> Tensor:
        if float(self.latent_scale) <= 0:
            raise RuntimeError(
                "latent_scale is not set: pretrain first (it is measured on the first batch), "
                "pass latent_scale, or load a pretrained_checkpoint"
            )
        return self.latent_scale

    @torch.no_grad()
    def latents(self, tokens: Tensor) -> Tensor:
        """Token ids (B, L) -> model-space latents (B, latent_dim): the scaled posterior mean."""
        mean, _ = self.autoencoder.encode(tokens.to(self.device))
        return mean * self._scale()

    @torch.no_grad()
    def _posterior_means(self, tokens: Tensor) -> Tensor:
        """Unscaled posterior means of token rows (B, L) -> (B, latent_dim), through the cache
        when ``cache_latents`` (only rows not seen before are encoded)."""
        if not self.cache_latents:
            return self.autoencoder.encode(tokens)[0]
        keys = [row.tobytes() for row in tokens.cpu().numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self._latent_cache]
        if missing:
            # unique rows only: a batch may hold the same sequence twice
            first: dict[bytes, int] = {}
            for i in missing:
                first.setdefault(keys[i], i)
            rows = list(first.values())
            means = self.autoencoder.encode(tokens[rows])[0]
            for i, mean in zip(rows, means, strict=True):
                self._latent_cache[keys[i]] = mean.detach().clone()
        return torch.stack([self._latent_cache[key] for key in keys]).to(tokens.device)

    def decode(self, x: Tensor) -> list[str]:
        """(B, latent_dim) -> B strings, each ending at the decoder's first pad."""
        z = x.detach().to(self.device) / self._scale()
        ids = self.autoencoder.generate(
            z, temperature=self.decode_temperature, beam_width=self.decode_beam_width
        )
        return self.strings(ids, stop_at_pad=True)

    def encode(self, designs: Sequence[Any]) -> Tensor:
        """Strings -> (B, latent_dim) model-space latents (posterior means)."""
        return self.latents(self.token_ids(designs)).cpu()

    def project(self, x0: Tensor) -> Tensor:
        """x0, or with ``reward_projection="straight_through"`` the latent of the design it
        decodes to in the forward pass and the identity in the backward pass."""
        if self.reward_projection == "none":
            return x0
        with torch.no_grad():
            target = x0.detach().clone()
            for i, design in enumerate(self.decode(x0)):
                if not design:
                    continue  # does not decode to a design: keep x0
                try:
                    target[i] = self.encode([design])[0].to(target)
                except ValueError:
                    continue  # decodes to a design the vocabulary cannot encode: keep x0
        return x0 + (target - x0).detach()

    # ------------------------------------------------------------------ pretraining
    def decoder_loss(self, batch: dict[str, Tensor], noise: float | None = None) -> Tensor:
        """Summed token cross-entropy (nats per sequence) of decoding each batch sequence from
        its model-space latent plus N(0, noise²) (default ``decoder_noise``; teacher forcing, with
        the autoencoder stage's 10 % word dropout while training)."""
        tokens = _tokens(batch)
        latent = self._posterior_means(tokens) * self._scale()
        sigma = self.decoder_noise if noise is None else noise
        if sigma:
            latent = latent + sigma * torch.randn_like(latent)
        # word dropout as in the autoencoder stage (active only while training)
        logits = self.autoencoder(latent / self._scale(), tokens, input_dropout=0.1)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        return loss.sum(-1).mean()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.decoder_noise is None:
            return super().validation_step(batch, batch_idx)
        self.log("val/loss", self.decoder_loss(batch), prog_bar=True, sync_dist=True)
        self.log("val/recon_clean", self.decoder_loss(batch, noise=0.0), sync_dist=True)

    def denoising_loss(self, batch: dict[str, Tensor]) -> Tensor:
        if self.decoder_noise is not None:  # stage 3: the decoder learns, not the denoiser
            return self.decoder_loss(batch)
        tokens = _tokens(batch)
        mean = self._posterior_means(tokens)
        if float(self.latent_scale) <= 0:
            self.latent_scale.fill_(1.0 / float(mean.std().clamp_min(1e-6)))
        latent_batch = {k: v for k, v in batch.items() if k not in ("x", "tokens")}
        latent_batch["x"] = mean * self.latent_scale
        return super().denoising_loss(latent_batch)


__all__ = ["LatentSequenceDiffusion", "SequenceAutoencoderModule", "load_prefixed"]
