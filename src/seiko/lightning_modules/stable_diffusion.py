"""Stable Diffusion as a seiko system: latent, text-conditioned, LoRA or full fine-tuning.

The parts come from a local diffusers pipeline directory (what
``StableDiffusionPipeline.save_pretrained`` writes, e.g. a local copy of Stable Diffusion 1.5):
``unet/`` (``UNet2DConditionModel``), ``vae/`` (``AutoencoderKL``), ``text_encoder/``
(``CLIPTextModel``), ``tokenizer/`` (``CLIPTokenizer``) and ``scheduler/`` (its config gives the
noise schedule), each loaded with ``from_pretrained(..., local_files_only=True)``. Nothing is
downloaded. The weights are loaded by Lightning's ``configure_model`` hook (or the first method
that needs them), not by ``__init__``: a config parses and a module is built without them, and a
missing directory fails when fitting (or sampling) starts, naming the path and what is expected.

How it maps onto the engine. The chain is seiko's ``GaussianSampler`` unchanged (DDIM with eta,
per-step gradient checkpointing, truncated backprop, the exact per-step KL): x is the latent
(B, 4, H/8, W/8), ``cond`` the prompts' CLIP text embeddings (B, L, D), and the denoiser
``ClassifierFreeGuidance`` wraps the UNet to ``denoiser(x, t, cond)`` with classifier-free
guidance: eps = eps(x, t, "") + w (eps(x, t, prompt) - eps(x, t, "")), both in one batched UNet
call (Ho & Salimans 2022; the empty prompt as the unconditional input, as DDPO, AlignProp and the
SEIKO code do). The chain that is fine-tuned is thus the guided sampler that will be deployed,
and the KL is between guided chains, as in SEIKO's code. What the reward reads is
``reward_space``: with ``"pixels"`` (default) ``reward_input`` runs the frozen VAE decoder on
x0 / scaling_factor (+ shift_factor) with gradient, giving images in [0, 1] (clamped, as DDPO
and AlignProp do), so any differentiable image reward works (``seiko.oracles.images.
AestheticScorer``, or a user's); with ``"latents"`` it is the identity, and the reward reads the
latent x0 (B, 4, H/8, W/8) itself: what the online loop's learned reward needs (below).

The online loop (``seiko.callbacks.OnlineExploration``: SEIKO with a non-differentiable oracle
such as DDPO's JPEG compressibility, ``seiko.oracles.images.JPEGCompressibility``; and
``seiko.callbacks.OnlinePPO``, the DDPO baseline). The callbacks call ``sample(n, generator=g)``
without text, turn the latents into designs with ``decode`` (PIL images), key them with
``design_key`` and, every round, refit their reward model on ``reward_input(encode(stored
keys))``. Here:

* Prompts. ``sample`` without ``cond`` draws one prompt per chain, uniformly with replacement
  (as DDPO, and ``PromptDataModule`` by default, do) from ``sampling_prompts()``: the prompts of
  ``prompt_file`` if it is set (for use outside a Trainer), else the training prompts of the
  attached ``PromptDataModule``, so in ``Trainer.fit`` the chains measured by the oracle and the
  chains fine-tuned are conditioned on the same list (both given and different: an error at fit
  start). The draws come from the ``generator``, before the initial noise, so a seeded generator
  reproduces prompts and images; ``draw_prompts`` gives the prompts alone. CFG applies as
  configured (``cfg_scale``). ``sample_trajectories`` (PPO) draws prompts the same way and
  returns their embeddings with the trajectories ("cond"); ``OnlinePPO`` hands them on with the
  batch, and the PPO loss recomputes each chain's log-probs with its own prompt's embedding (per
  step checkpointed with ``sampler.checkpoint``, so a 50-step trajectory does not hold 50 UNets'
  activations). In ``mode="ppo"`` the datamodule's batches only pace the optimizer steps. Each
  PPO step takes the whole update's batch in one pass (one checkpointed UNet step on
  2 x ``samples_per_update`` latents at a time with CFG): keep ``samples_per_update`` small at
  512 x 512 (no gradient accumulation inside an update).
* Keys. ``design_key`` is the image's lossless PNG as a data URI (``seiko.lightning_modules.
  images.image_key``, the key ``ImageDiffusion`` uses). Measured on a photograph cropped and
  resized to 512 x 512: 0.51-0.65 MB per key; the store keeps each key once (its unique index is
  on the key's SHA-256), so a 1000-design store takes about 0.5-0.65 GB of disk, and those
  keys are read into memory at every refit; a PNG at zlib level 9 takes 0.2-0.3 s per image to
  write on one CPU core (smoother, more compressible images: less of all three).
* ``encode`` maps PIL images, keys or (3, H, W) pixel tensors (uint8, or floating in [0, 1]) at
  the module's resolution (other sizes are refused, not resized) back to latents: the VAE
  encoder's posterior mean, (mean - shift_factor) * scaling_factor, the inverse of
  ``decode_pixels``, ``batch_size`` images at a time (so 1000 stored 512 x 512 images never sit
  in memory as pixels at once). It is the space of the sampler's x0, so a reward model fitted on
  encoded stored designs is the reward applied to x0 when fine-tuning. Two costs: the VAE is not
  an exact autoencoder, so the reward model is fitted on re-encoded images, encode(decode(z)),
  and applied to sampled latents z (on the tests' tiny random VAE the two are unrelated, relative
  error 1.0; SD 1.5's VAE reconstructs far better, but its gap has not been measured here); and
  the callback re-encodes stored images two or three times a round (the refit, the UCB features
  of every measured design, the logged bonus of the last 256), one VAE encoder pass each.

``OnlineExploration`` needs ``reward_space="latents"`` (a CNN reward model on the (4, 64, 64)
latents of SD 1.5, not on 3 x 512 x 512 pixels re-decoded at every refit) and, with LoRA,
``reference="pretrained"`` (see the KL reference below); other settings are refused at fit start,
before any query.

LoRA (Hu et al. 2022) via peft: rank-r adapters on the attention projections of the UNet
(``to_q``, ``to_k``, ``to_v``, ``to_out.0``, diffusers' and SEIKO's choice), B initialised to zero
so the fine-tuned model starts as the pretrained one. Only the adapter weights train, and only
the trainable weights go into checkpoints (``on_save_checkpoint``); the rest is reloaded from
``pretrained_path``, so a checkpoint is a few MB and needs the same base weights to be used.
``lora_rank=None`` fine-tunes the whole UNet instead.

The KL reference without a second UNet. With LoRA the reference is the pretrained UNet, which is
the same network with its adapters switched off: ``reference(x, t, cond)`` runs the fine-tuned
denoiser inside ``adapters_disabled`` (diffusers' ``disable_adapters``/``enable_adapters``, which
make every peft LoRA layer return its base layer's output alone). The base weights are shared, so
the KL costs no memory beyond its activations, where a frozen copy would cost a second UNet (3.4
GB in float32 for SD 1.5). The price: the reference is always the pretrained model, whatever
round it is (SEIKO's ``reference="previous"`` would need the previous round's adapters kept as a
second adapter; not done, and ``OnlineExploration(reference="previous")`` is refused). With
``lora_rank=None`` the reference is a frozen deep copy of the UNet, as in every other seiko
module (the previous round's model in the online loop).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from PIL import Image
from torch import Tensor, nn

from seiko.datamodules.prompts import read_prompts
from seiko.diffusion import NoiseSchedule
from seiko.lightning_modules.base import DiffusionModule, SamplerConfig, ScheduleConfig
from seiko.lightning_modules.images import design_pixels, image_key
from seiko.oracles.images import to_pil

#: The pipeline directory's subfolders, each with the file that shows it is there.
PIPELINE_PARTS: dict[str, tuple[str, ...]] = {
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("tokenizer.json", "vocab.json"),  # either: fast or slow tokenizer files
    "scheduler": ("scheduler_config.json",),
}

_EXPECTED = (
    "a diffusers Stable Diffusion pipeline directory, as StableDiffusionPipeline.save_pretrained "
    "writes it (e.g. a local copy of stable-diffusion-v1-5), with the subfolders unet/, vae/, "
    "text_encoder/, tokenizer/ and scheduler/; nothing is downloaded"
)

#: The UNet modules that get LoRA adapters by default: the attention projections.
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def check_pipeline_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is a pipeline directory with every part; else a clear error.

    Raises:
        FileNotFoundError: naming the missing directory, subfolder or file, and what is expected.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"pretrained_path {str(path)!r} does not exist or is not a directory; expected "
            f"{_EXPECTED}"
        )
    for part, markers in PIPELINE_PARTS.items():
        folder = root / part
        if not folder.is_dir():
            raise FileNotFoundError(f"{str(root)!r} has no {part}/ subfolder; expected {_EXPECTED}")
        if not any((folder / marker).is_file() for marker in markers):
            raise FileNotFoundError(
                f"{str(folder)!r} has no {' or '.join(markers)}; expected {_EXPECTED}"
            )
    return root


@contextmanager
def adapters_disabled(unet: nn.Module) -> Iterator[None]:
    """Run ``unet`` (a diffusers model with peft adapters) as its base model inside the block.

    diffusers' ``disable_adapters``/``enable_adapters`` toggle every peft layer; peft also
    switches the adapters' ``requires_grad`` off and on as it does, so the flags of every
    parameter are put back exactly as they were (a frozen adapter stays frozen).
    """
    flags = [(p, p.requires_grad) for p in unet.parameters()]
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()
        for p, flag in flags:
            p.requires_grad_(flag)


class ClassifierFreeGuidance(nn.Module):
    """A text-conditioned UNet as a seiko denoiser ``(x_t, t, cond) -> prediction``.

    eps = eps(x_t, t, null) + scale * (eps(x_t, t, cond) - eps(x_t, t, null)), the conditional
    and unconditional passes in one batched UNet call; ``scale == 1`` is the conditional
    prediction alone (one pass of batch B).

    Args:
        unet: a ``UNet2DConditionModel`` (or anything called as ``unet(x, t,
            encoder_hidden_states=...)`` returning an object with ``.sample``).
        null_embedding: (1, L, D) the text embedding of the empty prompt.
        scale: the guidance scale w (>= 0; 0 is the unconditional model).
    """

    def __init__(self, unet: nn.Module, null_embedding: Tensor, scale: float) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {scale}")
        if null_embedding.dim() != 3 or null_embedding.shape[0] != 1:
            raise ValueError(
                f"null_embedding has shape {tuple(null_embedding.shape)}; expected (1, L, D)"
            )
        self.unet = unet
        self.scale = float(scale)
        # derived from the frozen text encoder: rebuilt on loading, so not saved
        self.register_buffer("null_embedding", null_embedding, persistent=False)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """x (B, C, h, w), t (B,) long, cond (B, L, D) text embeddings -> (B, C, h, w)."""
        if cond is None:
            raise ValueError(
                "a Stable Diffusion denoiser needs the prompts' text embeddings as cond (B, L, D)"
            )
        if cond.shape[1:] != self.null_embedding.shape[1:]:
            raise ValueError(
                f"cond has shape {tuple(cond.shape)}; expected (B, "
                f"{', '.join(map(str, self.null_embedding.shape[1:]))}) text embeddings"
            )
        if self.scale == 1.0:
            return self.unet(x, t, encoder_hidden_states=cond).sample
        null = self.null_embedding.to(cond.dtype).expand(cond.shape[0], -1, -1)
        both = self.unet(
            torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([null, cond])
        ).sample
        unconditional, conditional = both.chunk(2)
        return unconditional + self.scale * (conditional - unconditional)


class AdapterDisabled:
    """The KL reference of a LoRA model: its denoiser with the adapters switched off.

    A plain callable (not an ``nn.Module``): it holds no weights of its own, so nothing freezes,
    moves, casts or saves it as a separate network.
    """

    def __init__(self, denoiser: ClassifierFreeGuidance) -> None:
        self.denoiser = denoiser

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        with adapters_disabled(self.denoiser.unet):
            return self.denoiser(x, t, cond)


def _prompts_of(batch: Any) -> list[str]:
    """The prompt strings of a batch: ``{"prompt": [...]}`` or a list of strings."""
    prompts = batch.get("prompt") if isinstance(batch, dict) else batch
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    raise TypeError(
        "a Stable Diffusion batch is {'prompt': [str, ...]} (seiko.datamodules.PromptDataModule) "
        f"or a non-empty list of strings, got {type(batch).__name__}"
        + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else "")
    )


class StableDiffusion(DiffusionModule):
    """Reward fine-tuning of Stable Diffusion from a local pipeline directory (see module doc).

    Batches are prompts (``seiko.datamodules.PromptDataModule``): each fine-tuning step runs one
    chain per prompt, conditioned on it, and maximises reward(x0 in ``reward_space``) -
    kl_weight * KL. In ``mode="ppo"`` a batch only paces the steps: the chains are the ones
    ``OnlinePPO`` sampled, on prompts drawn by ``sample_trajectories``.

    Args:
        pretrained_path: the diffusers pipeline directory (unet/, vae/, text_encoder/,
            tokenizer/, scheduler/); loaded when the module is configured, not here.
        lora_rank: rank of the LoRA adapters on the UNet; None fine-tunes the whole UNet.
        lora_alpha: LoRA's alpha (the update is scaled by alpha / rank); None: the rank (scale 1,
            diffusers' LoRA training scripts' choice).
        lora_targets: names of the UNet modules that get adapters (peft ``target_modules``).
        cfg_scale: the classifier-free guidance scale w (7.5 in DDPO, AlignProp and SEIKO). Not
            ``sampler.guidance_scale``, which is the reward-guidance scale of ``mode="guidance"``.
        resolution: image size in pixels (square); None: the UNet's ``sample_size`` times the
            VAE's downsampling factor (512 for SD 1.x).
        reward: a factory of the differentiable reward, called when the module is configured
            (so a config parses without the reward's weights), e.g. a ``class_path`` to
            ``seiko.oracles.images.AestheticScorer`` in YAML. The reward takes what
            ``reward_space`` says and returns (B,). A plain function can be set as
            ``module.reward`` instead, as for every seiko module; the online loop's callbacks
            set it too.
        reward_space: what the reward reads: "pixels", (B, 3, H, W) decoded images in [0, 1]
            (gradient through the VAE decoder); "latents", the latent x0 (B, C, h, w) itself
            (the online loop's learned reward, fitted on ``encode(stored images)``).
        prompt_file: prompts (one a line, ``seiko.datamodules.prompts.read_prompts``) that
            ``sample`` draws from when it is given no ``cond``; None: the training prompts of
            the attached ``PromptDataModule``. Read on first use.
        decoder_checkpoint: gradient checkpointing inside the VAE decoder when the reward's
            gradient flows through it (its activations at 512 x 512 are the largest of a step).
        mode: "finetune" (the reward objective through the chain), "guidance" (no training:
            reward-guided sampling, see ``DiffusionModule``) or "ppo" (DDPO's clipped policy
            gradient on what ``seiko.callbacks.OnlinePPO`` samples and measures).
        sampler: the chain: DDIM eta, steps, checkpointing, truncation, KL reduction. Its
            timesteps are diffusers' with ``steps_offset=0``; SD's scheduler config says 1, so
            diffusers' SD pipeline steps at timesteps one later (out of 1000).
        kl_weight: alpha in reward - alpha * KL (KL per latent dimension with the default
            ``sampler.kl_reduction="mean"``, summed over steps, as the SEIKO code's KL).
        optimizer: optimizer factory over the trainable parameters (the adapters with LoRA).
    """

    def __init__(
        self,
        pretrained_path: str,
        lora_rank: int | None = 4,
        lora_alpha: float | None = None,
        lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS,
        cfg_scale: float = 7.5,
        resolution: int | None = None,
        reward: Callable[[], nn.Module] | None = None,
        reward_space: Literal["pixels", "latents"] = "pixels",
        prompt_file: str | None = None,
        decoder_checkpoint: bool = True,
        mode: Literal["finetune", "guidance", "ppo"] = "finetune",
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        if mode not in ("finetune", "guidance", "ppo"):
            raise ValueError(
                f"mode={mode!r} is not one of ('finetune', 'guidance', 'ppo') (a Stable "
                "Diffusion module is not pretrained here)"
            )
        if reward_space not in ("pixels", "latents"):
            raise ValueError(f"reward_space={reward_space!r} is not one of ('pixels', 'latents')")
        if lora_rank is not None and lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1 or None (full fine-tuning), got {lora_rank}")
        if lora_alpha is not None and lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0 or None, got {lora_alpha}")
        if not lora_targets:
            raise ValueError("lora_targets must name at least one UNet module, e.g. 'to_q'")
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be >= 1 or None, got {resolution}")
        # The schedule and data shape come from the pipeline when it is loaded (configure_model):
        # the base class gets placeholders until then.
        super().__init__(
            denoiser=None,
            data_shape=(),
            mode=mode,
            schedule=ScheduleConfig(),
            sampler=sampler,
            kl_weight=kl_weight,
            optimizer=optimizer,
        )
        own = inspect.signature(StableDiffusion.__init__).parameters
        for key in [key for key in self.hparams if key not in own and not key.startswith("_")]:
            del self.hparams[key]  # the base class's placeholders (not LightningCLI's _keys)
        if not isinstance(self.hparams.get("reward"), (dict, type(None))):
            del self.hparams["reward"]  # a Python object: not a hyper-parameter to save
        self.pretrained_path = pretrained_path
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha if lora_alpha is not None else lora_rank or 1)
        self.lora_targets = tuple(lora_targets)
        self.cfg_scale = cfg_scale
        self.resolution = resolution
        self.reward_factory = reward
        self.reward_space = reward_space
        self.prompt_file = prompt_file
        self._file_prompts: list[str] | None = None
        self.decoder_checkpoint = decoder_checkpoint
        self.vae: nn.Module | None = None
        self.text_encoder: nn.Module | None = None
        self.tokenizer: Any = None
        self.scaling_factor = 1.0
        self.shift_factor = 0.0
        self.vae_factor = 1  # pixels per latent cell along a side

    # ------------------------------------------------------------------ loading
    @property
    def loaded(self) -> bool:
        """Whether the pipeline's weights are in (``configure_model`` has run)."""
        return self.denoiser is not None

    def configure_model(self) -> None:
        """Load the pipeline from ``pretrained_path`` (once; Lightning calls this before fitting,
        sampling or loading a checkpoint) and add the LoRA adapters; then build the reward."""
        if self.loaded:
            return
        root = check_pipeline_dir(self.pretrained_path)
        # on the CPU whatever device Lightning's init context names; the Trainer moves the module
        with torch.device("cpu"):
            self._load(str(root))
        self.to(self.device)
        if self.reward is None and self.reward_factory is not None:
            self.reward = self.reward_factory()

    def _load(self, root: str) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        local = {"local_files_only": True}
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **local).float()
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **local).float()
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", **local)
        self.tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", **local)
        # DDIM on the pipeline's own training schedule (SD ships a PNDM config: same betas)
        scheduler = DDIMScheduler.from_pretrained(root, subfolder="scheduler", **local)

        self.vae = vae.requires_grad_(False).eval()
        if self.decoder_checkpoint:
            self.vae.enable_gradient_checkpointing()
        self.text_encoder = text_encoder.float().requires_grad_(False).eval()
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        if self.lora_rank is None:
            unet.requires_grad_(True)
        else:
            from peft import LoraConfig

            unet.requires_grad_(False)
            unet.add_adapter(
                LoraConfig(
                    r=self.lora_rank,
                    lora_alpha=self.lora_alpha,
                    target_modules=list(self.lora_targets),
                    init_lora_weights="gaussian",  # A ~ N(0, 1/r), B = 0: starts as the base
                )
            )
        self.data_shape = self._latent_shape(unet, vae)
        null_embedding = self._embed(self.text_encoder, [""])
        self.denoiser = ClassifierFreeGuidance(unet, null_embedding, self.cfg_scale)
        self.noise_schedule = NoiseSchedule.from_scheduler(scheduler)
        self.sampler = dataclasses.replace(self.sampler, schedule=self.noise_schedule)

    def _latent_shape(self, unet: nn.Module, vae: nn.Module) -> tuple[int, int, int]:
        """(C, h, w) of the latent for ``resolution`` (and the VAE's factor, kept)."""
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.vae_factor = factor
        resolution = self.resolution or int(unet.config.sample_size) * factor
        unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        if resolution % (factor * unet_factor):
            raise ValueError(
                f"resolution {resolution} must be a multiple of {factor * unet_factor} (the VAE "
                f"downsamples by {factor}, the UNet by {unet_factor} more)"
            )
        side = resolution // factor
        return (int(unet.config.in_channels), side, side)

    def train(self, mode: bool = True) -> StableDiffusion:
        super().train(mode)
        for frozen in (self.vae, self.text_encoder):
            if frozen is not None:
                frozen.eval()  # frozen: never in training mode
        return self

    # ------------------------------------------------------------------ text and images
    def _embed(self, text_encoder: nn.Module, prompts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(text_encoder.parameters()).device
        with torch.no_grad():
            return text_encoder(tokens.input_ids.to(device))[0].float()

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> (B, L, D) CLIP text embeddings (the chain's ``cond``), no gradient."""
        self.configure_model()
        if isinstance(prompts, str) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        return self._embed(self.text_encoder, prompts)

    def decode_pixels(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) latents -> (B, 3, H, W) images in [0, 1], differentiable in the latents
        (the VAE is frozen; its decoder is checkpointed with ``decoder_checkpoint``)."""
        self.configure_model()
        images = self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample
        return ((images.float() + 1) / 2).clamp(0.0, 1.0)

    def reward_input(self, x0: Tensor) -> Tensor:
        """What the reward reads (``reward_space``): decoded pixels (B, 3, H, W) in [0, 1], or
        the latents x0 (B, C, h, w) themselves."""
        return x0 if self.reward_space == "latents" else self.decode_pixels(x0)

    @property
    def image_size(self) -> int:
        """The side in pixels of the images the module makes (and ``encode`` takes)."""
        self.configure_model()
        return self.data_shape[-1] * self.vae_factor

    def decode(self, x: Tensor) -> list[Image.Image | None]:
        """(B, C, h, w) latents -> B PIL RGB images (quantised as DDPO does, round(255 p)); None
        for a sample whose decoded pixels are not all finite (every image oracle measures None as
        infeasible, NaN)."""
        with torch.no_grad():
            pixels = self.decode_pixels(x.detach().to(self.device)).float().cpu()
        return [to_pil(image) if torch.isfinite(image).all() else None for image in pixels]

    # ------------------------------------------------------------------ designs <-> latents
    def design_key(self, design: Image.Image | Tensor | None) -> str:
        """The FeedbackStore key of a design: its lossless PNG as a data URI (``image_key``; a
        (3, H, W) tensor is taken as pixels in [0, 1]); "" for None (not decoded)."""
        if design is None:
            return ""
        return image_key(to_pil(design, value_range="unit"))

    def encode(self, designs: Sequence[Image.Image | Tensor | str], batch_size: int = 8) -> Tensor:
        """Designs -> (B, C, h, w) latents on the CPU: the VAE encoder's posterior mean,
        (mean - shift_factor) * scaling_factor, the space of the sampler's x0 (no gradient).

        A design is a PIL image (converted to RGB), a key of ``design_key``, or a (3, H, W)
        pixel tensor, uint8 or floating in [0, 1], H = W = ``image_size``. The VAE encodes
        ``batch_size`` images at a time on the module's device.

        Raises:
            ValueError: a design of another size or shape, a string that is not an image key
                (e.g. "", the key of a sample that did not decode), non-finite pixels, or another
                type; the message names the design's index and what the module takes.
        """
        self.configure_model()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        designs = list(designs)
        dtype = next(self.vae.parameters()).dtype
        chunks = []
        for start in range(0, len(designs), batch_size):
            pixels = torch.stack(
                [
                    self._unit_pixels(start + n, design)
                    for n, design in enumerate(designs[start : start + batch_size])
                ]
            )
            with torch.no_grad():
                posterior = self.vae.encode(pixels.to(self.device, dtype) * 2 - 1).latent_dist
            latents = (posterior.mean.float() - self.shift_factor) * self.scaling_factor
            chunks.append(latents.cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, *self.data_shape)

    def _unit_pixels(self, n: int, design: Any) -> Tensor:
        """Design ``n`` as (3, H, W) float pixels in [0, 1] on the CPU (see ``encode``)."""
        size = self.image_size
        pixels = design_pixels(n, design, (3, size, size), "RGB")
        if pixels.dtype == torch.uint8:
            return pixels.float() / 255
        if not bool(torch.isfinite(pixels).all()):
            raise ValueError(f"design {n} has NaN or infinite pixels")
        return pixels.float().clamp(0.0, 1.0)

    # ------------------------------------------------------------------ sampling
    def sampling_prompts(self) -> list[str]:
        """The prompts ``sample`` draws from without ``cond``: ``prompt_file``'s, else the
        attached datamodule's ``train_prompts`` (a ``PromptDataModule`` set up for fitting).

        Raises:
            RuntimeError: neither is there, saying how to give prompts.
        """
        if self.prompt_file is not None:
            if self._file_prompts is None:
                self._file_prompts = read_prompts(self.prompt_file)
            return self._file_prompts
        prompts = getattr(self._datamodule(), "train_prompts", None)
        if prompts:
            return list(prompts)
        raise RuntimeError(
            "StableDiffusion.sample without cond draws prompts, and there are none: set "
            "prompt_file (a text file, one prompt a line), or fit with a PromptDataModule, whose "
            "training prompts are used; or pass cond=encode_prompts(prompts)"
        )

    def _datamodule(self) -> Any:
        trainer = self._trainer  # None when not attached (``self.trainer`` would raise)
        return None if trainer is None else getattr(trainer, "datamodule", None)

    def draw_prompts(self, n: int, generator: torch.Generator | None = None) -> list[str]:
        """n prompts drawn uniformly with replacement from ``sampling_prompts()`` with
        ``generator`` (reproducible for a seeded one)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        prompts = self.sampling_prompts()
        device = generator.device if generator is not None else torch.device("cpu")
        draws = torch.randint(len(prompts), (n,), generator=generator, device=device)
        return [prompts[i] for i in draws.tolist()]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        batch_size: int = 8,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """n latents (n, C, h, w), without gradient, for the text embeddings ``cond`` (n, L, D)
        (``encode_prompts``), or, without ``cond``, for n prompts that ``draw_prompts`` draws
        with ``generator`` (embedded ``batch_size`` at a time). ``generate`` goes from prompts
        to images."""
        self.configure_model()
        if cond is not None:
            if cond.shape[0] != n:
                raise ValueError(
                    f"cond must be (n={n}, L, D) prompt embeddings (encode_prompts), got "
                    f"{tuple(cond.shape)}"
                )
            return super().sample(n, cond=cond, batch_size=batch_size, generator=generator)
        prompts = self.draw_prompts(n, generator)
        chunks = []
        for start in range(0, n, batch_size):
            part = prompts[start : start + batch_size]
            cond = self.encode_prompts(part)
            chunks.append(super().sample(len(part), cond, len(part), generator))
        return torch.cat(chunks)

    @torch.no_grad()
    def sample_trajectories(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """n trajectories for PPO (see ``DiffusionModule``), on ``cond`` or on n prompts drawn
        with ``generator``; their embeddings (n, L, D) come back as "cond", with which the PPO
        loss recomputes each chain's log-probs."""
        self.configure_model()
        if cond is None:
            cond = self.encode_prompts(self.draw_prompts(n, generator))
        return super().sample_trajectories(n, cond=cond, generator=generator)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        batch_size: int = 8,
        generator: torch.Generator | None = None,
    ) -> list[Image.Image | None]:
        """One image per prompt, through the current (fine-tuned) guided chain (None for a
        sample that did not decode to finite pixels)."""
        cond = self.encode_prompts(prompts)
        return self.decode(self.sample(len(prompts), cond, batch_size, generator))

    # ------------------------------------------------------------------ the KL reference
    def set_reference(self, module: nn.Module | AdapterDisabled | None) -> None:
        """A network is frozen as in ``DiffusionModule``; an ``AdapterDisabled`` (weights shared
        with the trained denoiser) is taken as it is: freezing it would freeze the adapters."""
        if isinstance(module, AdapterDisabled):
            object.__setattr__(self, "_reference", module)
        else:
            super().set_reference(module)

    def snapshot_reference(self) -> nn.Module | AdapterDisabled:
        """With LoRA: the pretrained model, i.e. the denoiser with its adapters off (no copy).
        Full fine-tuning: a frozen copy of the current UNet, as ``DiffusionModule`` does."""
        self.configure_model()
        if self.lora_rank is None:
            return super().snapshot_reference()
        self.set_reference(AdapterDisabled(self.denoiser))
        return self.reference

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self) -> None:
        self._check_prompt_sources()
        self._check_online_callbacks()
        if self.mode == "finetune" and self.reference is None and self.kl_weight > 0:
            self.snapshot_reference()
        for part in (self.reference, self.reward):
            if isinstance(part, nn.Module):
                part.to(self.device)

    def _check_prompt_sources(self) -> None:
        """The chains the online loop samples and the chains fine-tuned must share prompts:
        ``prompt_file`` and an attached datamodule with other training prompts is an error."""
        theirs = getattr(self._datamodule(), "train_prompts", None)
        if self.prompt_file is not None and theirs and list(theirs) != self.sampling_prompts():
            raise ValueError(
                f"prompt_file {self.prompt_file!r} ({len(self.sampling_prompts())} prompts) and "
                f"the datamodule's training prompts ({len(theirs)}) differ: the designs sampled "
                "without cond (the online loop's queries) would not be the chains fine-tuned. "
                "Leave prompt_file unset to use the datamodule's prompts"
            )

    def _check_online_callbacks(self) -> None:
        """What the online loop's callbacks need of this module, checked before any sampling
        or oracle query: a reward on latents (the reward model is fitted on ``encode``'s
        latents) and, with LoRA, the pretrained model as the KL reference."""
        from seiko.callbacks.exploration import OnlineExploration

        for callback in self.trainer.callbacks:
            if not isinstance(callback, OnlineExploration):
                continue
            if self.reward_space != "latents":
                raise ValueError(
                    "OnlineExploration fits its reward model on encode(stored images), the VAE "
                    "latents, and sets it as the module's reward: set reward_space='latents' "
                    f"(got {self.reward_space!r}; 'pixels' would re-decode every stored image at "
                    "every refit and fit the reward model on 3 x H x W pixels)"
                )
            lora = self.lora_rank is not None
            if self.mode == "finetune" and lora and callback.reference == "previous":
                raise ValueError(
                    "OnlineExploration(reference='previous') needs the previous round's model as "
                    "the KL reference; with LoRA the reference is the pretrained UNet (the "
                    "adapters switched off, no copy): set the callback's reference='pretrained', "
                    "or lora_rank=None (full fine-tuning, a frozen copy per round)"
                )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        prompts = _prompts_of(batch)
        if self.mode == "guidance":
            return None  # nothing to train: Lightning skips the optimizer step
        if self.mode == "ppo":
            return self.ppo_step()  # the chains OnlinePPO sampled, with their own prompts
        terms = self.finetune_loss(len(prompts), self.encode_prompts(prompts))
        for key, value in terms.items():
            self.log(
                f"train/{key}", value, prog_bar=key in ("loss", "reward"), batch_size=len(prompts)
            )
        return terms["loss"]

    def predict_step(self, batch: Any, batch_idx: int) -> list[Image.Image | None]:
        """One image per prompt of the batch."""
        prompts = _prompts_of(batch)
        return self.generate(prompts, batch_size=len(prompts))

    # ------------------------------------------------------------------ checkpoints
    def trained_names(self) -> set[str]:
        """The state-dict keys a checkpoint holds: the trainable parameters (the adapters with
        LoRA, the UNet without); everything else is reloaded from ``pretrained_path``."""
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if isinstance(self.reference, nn.Module):
            super().on_save_checkpoint(checkpoint)  # full fine-tuning: the reference copy too
        else:
            checkpoint["seiko_mode"] = self.mode
        keep = self.trained_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.configure_model()
        super().on_load_checkpoint(checkpoint)

    def load_state_dict(
        self, state_dict: dict[str, Tensor], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a checkpoint's weights: the trainable ones (what ``on_save_checkpoint`` keeps),
        or any larger part of the state dict. With ``strict``, a trainable weight missing or a
        key the module does not have is an error naming them."""
        self.configure_model()
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            missing = sorted(set(result.missing_keys) & self.trained_names())
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"state dict does not fit this StableDiffusion (lora_rank={self.lora_rank}): "
                    f"trainable weights missing: {missing[:5]}{'...' if len(missing) > 5 else ''}"
                    f" ({len(missing)}); unexpected keys: {result.unexpected_keys[:5]}"
                    f"{'...' if len(result.unexpected_keys) > 5 else ''} "
                    f"({len(result.unexpected_keys)})"
                )
        return result


__all__ = [
    "AdapterDisabled",
    "ClassifierFreeGuidance",
    "DEFAULT_LORA_TARGETS",
    "PIPELINE_PARTS",
    "StableDiffusion",
    "adapters_disabled",
    "check_pipeline_dir",
]
