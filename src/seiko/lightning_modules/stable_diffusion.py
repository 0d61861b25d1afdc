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
and the KL is between guided chains, as in SEIKO's code. The reward reads decoded pixels:
``reward_input`` runs the frozen VAE decoder on x0 / scaling_factor (+ shift_factor) with
gradient, giving images in [0, 1] (clamped, as DDPO and AlignProp do), so any differentiable
image reward works: ``seiko.oracles.images.AestheticScorer``, or a user's.

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
second adapter; not done). With ``lora_rank=None`` the reference is a frozen deep copy of the
UNet, as in every other seiko module (the previous round's model in the online loop).
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

from seiko.diffusion import NoiseSchedule
from seiko.lightning_modules.base import DiffusionModule, SamplerConfig, ScheduleConfig
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
    chain per prompt, conditioned on it, and maximises reward(decoded x0) - kl_weight * KL.

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
            ``seiko.oracles.images.AestheticScorer`` in YAML. The reward takes (B, 3, H, W)
            images in [0, 1] and returns (B,). A plain function can be set as ``module.reward``
            instead, as for every seiko module; the online loop's callbacks set it too.
        decoder_checkpoint: gradient checkpointing inside the VAE decoder when the reward's
            gradient flows through it (its activations at 512 x 512 are the largest of a step).
        mode: "finetune" (the reward objective through the chain) or "guidance" (no training:
            reward-guided sampling, see ``DiffusionModule``).
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
        decoder_checkpoint: bool = True,
        mode: Literal["finetune", "guidance"] = "finetune",
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        if mode not in ("finetune", "guidance"):
            raise ValueError(
                f"mode={mode!r} is not one of ('finetune', 'guidance') (a Stable Diffusion "
                "module is not pretrained here, and its PPO path is not wired to prompts)"
            )
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
        self.decoder_checkpoint = decoder_checkpoint
        self.vae: nn.Module | None = None
        self.text_encoder: nn.Module | None = None
        self.tokenizer: Any = None
        self.scaling_factor = 1.0
        self.shift_factor = 0.0

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
        """(C, h, w) of the latent for ``resolution``."""
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
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
        """The reward reads decoded pixels: (B, 3, H, W) in [0, 1]."""
        return self.decode_pixels(x0)

    def decode(self, x: Tensor) -> list[Image.Image]:
        """(B, C, h, w) latents -> B PIL RGB images (quantised as DDPO does, round(255 p))."""
        with torch.no_grad():
            pixels = self.decode_pixels(x.detach().to(self.device))
        return [to_pil(image) for image in pixels.cpu()]

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        batch_size: int = 8,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """n latents (n, C, h, w) for the text embeddings ``cond`` (n, L, D), without gradient
        (``encode_prompts`` makes ``cond``; ``generate`` goes from prompts to images)."""
        self.configure_model()
        if cond is None or cond.shape[0] != n:
            raise ValueError(
                f"Stable Diffusion samples from text: cond must be (n={n}, L, D) prompt "
                f"embeddings (encode_prompts), got {None if cond is None else tuple(cond.shape)}"
            )
        return super().sample(n, cond=cond, batch_size=batch_size, generator=generator)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        batch_size: int = 8,
        generator: torch.Generator | None = None,
    ) -> list[Image.Image]:
        """One image per prompt, through the current (fine-tuned) guided chain."""
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
        self._refuse_online_callbacks()
        if self.mode == "finetune" and self.reference is None and self.kl_weight > 0:
            self.snapshot_reference()
        for part in (self.reference, self.reward):
            if isinstance(part, nn.Module):
                part.to(self.device)

    def _refuse_online_callbacks(self) -> None:
        """The online loop's callbacks sample without ``cond`` and refit their reward on
        ``encode(stored designs)``; this module has no prompts of its own to sample from and no
        way from a stored image back to its latent yet. Fail before any sampling or oracle query
        rather than after."""
        from seiko.callbacks.exploration import OnlineExploration
        from seiko.callbacks.policy_gradient import OnlinePPO

        online = [
            type(callback).__name__
            for callback in self.trainer.callbacks
            if isinstance(callback, (OnlineExploration, OnlinePPO))
        ]
        if online:
            raise NotImplementedError(
                f"{', '.join(online)} cannot drive a StableDiffusion module yet: the online loop "
                "samples designs without prompts (sample(n) with no cond) and refits its reward "
                "model on encode(stored designs), and this module has neither a prompt source "
                "for such sampling nor an encoder from stored images back to latents. Fine-tune "
                "with a differentiable reward on decoded pixels instead "
                "(configs/images/sd_aesthetic.yaml)"
            )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        prompts = _prompts_of(batch)
        if self.mode == "guidance":
            return None  # nothing to train: Lightning skips the optimizer step
        terms = self.finetune_loss(len(prompts), self.encode_prompts(prompts))
        for key, value in terms.items():
            self.log(
                f"train/{key}", value, prog_bar=key in ("loss", "reward"), batch_size=len(prompts)
            )
        return terms["loss"]

    def predict_step(self, batch: Any, batch_idx: int) -> list[Image.Image]:
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
