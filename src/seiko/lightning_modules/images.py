"""Pixel-space image diffusion with a diffusers ``UNet2DModel`` as the denoiser.

A design is a PIL image (mode "L" for one channel, "RGB" for three). In model space it is a
(C, S, S) tensor in [-1, 1] (the diffusers convention, and what ``ImageDataModule`` batches hold).
``decode`` clamps x0 to [-1, 1] and quantises it to uint8 by round(255 * (x + 1) / 2), exactly as
the image oracles (``seiko.oracles.images.to_pil`` with ``value_range="symmetric"``) do; a sample
with a NaN or infinite pixel decodes to None, which every image oracle measures as NaN.
``reward_input`` is the identity: a learned or known reward sees the continuous x0 (B, C, S, S).

**Design keys.** The online loop's ``FeedbackStore`` keys designs by strings, and it is the source
of truth the reward model is refitted from every round, so an image's key must hold the image
itself (a hash would not do: the loop re-encodes stored designs). ``design_key`` is the
image's lossless PNG as a data URI (``"data:image/png;base64,..."``, about 0.3-0.5 kB for an
MNIST digit); ``encode`` accepts these keys as well as PIL images and tensors, so
``encode([design_key(image)])`` gives back the image's pixels exactly. Two equal images have the
same key within one installation (Pillow and zlib fixed), so a design is never paid for twice; the
key of a design that did not decode (None) is "" and ``encode`` rejects it.

Class conditioning (e.g. the MNIST digit): ``labels`` is the label vocabulary in class order
(linked from ``ImageDataModule.labels`` by the CLI, kept in the checkpoint) and the denoiser needs
``num_classes=len(labels)`` (also linked); its class embedding has one more row, the null class,
which ``cond_dropout`` trains so the model also samples unconditionally. ``target_label`` is the
class that ``sample`` without ``cond``, the online loop and fine-tuning use (None: the null class);
fine-tuning ignores the labels of the data batches, which only say how many chains to run.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from PIL import Image
from torch import Tensor, nn

from seiko.lightning_modules.base import DiffusionModule, SamplerConfig, ScheduleConfig
from seiko.lightning_modules.labels import ClassLabels, check_labels
from seiko.oracles.images import to_pil

PNG_KEY_PREFIX = "data:image/png;base64,"
_MODES = {1: "L", 3: "RGB"}


# ---------------------------------------------------------------------- design keys
def image_key(image: Image.Image) -> str:
    """The store key of an image: its PNG (no metadata, zlib level 9) as a base64 data URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    return PNG_KEY_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_from_key(key: str) -> Image.Image:
    """The image a key of ``image_key`` holds (fully loaded).

    Raises:
        ValueError: ``key`` is not a PNG data URI of a readable image.
    """
    if not isinstance(key, str) or not key.startswith(PNG_KEY_PREFIX):
        shown = key[:40] if isinstance(key, str) else type(key).__name__
        raise ValueError(f"{shown!r} is not an image key (expected {PNG_KEY_PREFIX!r}...)")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(key[len(PNG_KEY_PREFIX) :], validate=True)))
        image.load()
    except (binascii.Error, OSError, ValueError) as error:
        raise ValueError(f"image key {key[:60]!r}... does not hold a PNG image: {error}") from None
    return image


def design_pixels(n: int, design: Any, shape: tuple[int, int, int], mode: str) -> Tensor:
    """Design ``n`` (an image key, a PIL image or a (C, H, W) tensor) as a CPU tensor of ``shape``:
    uint8 pixels for a key, an image or a uint8 tensor; a floating tensor as given (detached).

    Raises:
        ValueError: naming ``n`` and what was expected: an unreadable key, an image of another
            size, a tensor of another shape or dtype, or another type.
    """
    channels, height, width = shape
    if isinstance(design, str):
        try:
            design = image_from_key(design)
        except ValueError as error:
            raise ValueError(f"design {n}: {error}") from None
    if isinstance(design, Image.Image):
        if design.size != (width, height):
            raise ValueError(
                f"design {n} is a {design.size[0]}x{design.size[1]} image; the model makes "
                f"{width}x{height} images"
            )
        array = torch.frombuffer(bytearray(design.convert(mode).tobytes()), dtype=torch.uint8)
        return array.view(height, width, channels).permute(2, 0, 1)
    if isinstance(design, Tensor):
        if tuple(design.shape) != tuple(shape):
            raise ValueError(
                f"design {n} is a tensor of shape {tuple(design.shape)}; the model takes "
                f"{tuple(shape)}"
            )
        if design.dtype != torch.uint8 and not design.is_floating_point():
            raise ValueError(f"design {n} has dtype {design.dtype}; expected uint8 or float")
        return design.detach().cpu()
    raise ValueError(
        f"design {n} is a {type(design).__name__}; expected a PIL image, an image key "
        f"(design_key) or a {tuple(shape)} tensor"
    )


# ---------------------------------------------------------------------- the denoiser
class UNetDenoiser(nn.Module):
    """A diffusers ``UNet2DModel`` behind seiko's denoiser signature ``(x_t, t, cond=None)``.

    Args:
        sample_size: S, the side of the square images.
        in_channels: C, 1 (grayscale) or 3 (RGB); the prediction has as many channels.
        block_out_channels: channels of each resolution level; every level but the last halves
            the resolution, so S must be divisible by 2 ** (levels - 1) (28 with three levels).
        layers_per_block: ResNet layers per level.
        down_block_types: diffusers block names per level (None: "DownBlock2D" everywhere, no
            attention; "AttnDownBlock2D" adds self-attention at that level).
        up_block_types: the same for the up path (None: "UpBlock2D" everywhere).
        add_attention: self-attention in the middle block.
        attention_head_dim: channels per attention head.
        norm_num_groups: GroupNorm groups; must divide every entry of ``block_out_channels``.
        dropout: dropout in the ResNet layers.
        num_classes: if set, the UNet gets a class embedding with ``num_classes + 1`` rows; row
            ``num_classes`` is the null class, used for ``cond=None`` and for ``cond == -1``.
    """

    def __init__(
        self,
        sample_size: int = 28,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        down_block_types: tuple[str, ...] | None = None,
        up_block_types: tuple[str, ...] | None = None,
        add_attention: bool = True,
        attention_head_dim: int = 8,
        norm_num_groups: int = 8,
        dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        levels = len(block_out_channels)
        if in_channels not in _MODES:
            raise ValueError(f"in_channels={in_channels} is not one of (1, 3) (grayscale or RGB)")
        if levels < 1 or min(block_out_channels) < 1:
            raise ValueError(f"block_out_channels must be positive, got {block_out_channels}")
        if sample_size < 1 or sample_size % 2 ** (levels - 1):
            raise ValueError(
                f"sample_size={sample_size} is not divisible by 2 ** (levels - 1) = "
                f"{2 ** (levels - 1)} for {levels} levels (block_out_channels={block_out_channels})"
            )
        if any(c % norm_num_groups for c in block_out_channels):
            raise ValueError(
                f"norm_num_groups={norm_num_groups} does not divide every entry of "
                f"block_out_channels={block_out_channels}"
            )
        down = tuple(down_block_types) if down_block_types else ("DownBlock2D",) * levels
        up = tuple(up_block_types) if up_block_types else ("UpBlock2D",) * levels
        if len(down) != levels or len(up) != levels:
            raise ValueError(
                f"down_block_types ({len(down)}) and up_block_types ({len(up)}) need one entry per "
                f"level of block_out_channels ({levels})"
            )
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        self.sample_size, self.in_channels, self.num_classes = sample_size, in_channels, num_classes
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            add_attention=add_attention,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
            num_class_embeds=None if num_classes is None else num_classes + 1,
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, S, S): the shape of one image."""
        return (self.in_channels, self.sample_size, self.sample_size)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x (B, C, S, S) noisy images; t (B,) long timesteps; cond (B,) long classes, -1 or
        None for the null class (ignored by an unconditional UNet).

        Returns: (B, C, S, S) the prediction.
        """
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        labels = None
        if self.num_classes is not None:
            if cond is None:
                cond = t.new_full((x.shape[0],), self.num_classes)
            labels = torch.where(cond < 0, self.num_classes, cond).long()
        return self.unet(x, t, class_labels=labels).sample


# ---------------------------------------------------------------------- the system
class ImageDiffusion(ClassLabels, DiffusionModule):
    """Pixel-space diffusion on (C, S, S) images in [-1, 1]; designs are PIL images.

    Args:
        denoiser: e.g. ``UNetDenoiser``; it must have ``image_shape`` (C, S, S), which becomes
            the model's ``data_shape``, and ``num_classes`` (linked from the datamodule).
        labels: the class names in class order, for a class-conditional denoiser; None:
            unconditional. Saved in the checkpoint.
        target_label: the class that sampling without ``cond``, the online loop and fine-tuning
            use (one of ``labels``); None: the null class (unconditional).
        Other arguments: see ``DiffusionModule``.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        labels: list[str] | None = None,
        target_label: str | None = None,
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        shape = getattr(denoiser, "image_shape", None)
        if shape is None or len(shape) != 3 or shape[0] not in _MODES:
            raise ValueError(
                f"ImageDiffusion needs a denoiser with an image_shape (C, H, W), C in (1, 3), such "
                f"as UNetDenoiser; {type(denoiser).__name__} has image_shape={shape}"
            )
        check_labels("ImageDiffusion", denoiser, labels, target_label)
        super().__init__(
            denoiser,
            data_shape=tuple(int(d) for d in shape),
            mode=mode,
            schedule=schedule,
            sampler=sampler,
            kl_weight=kl_weight,
            learn_initial_noise=learn_initial_noise,
            cond_dropout=cond_dropout,
            pretrained_checkpoint=pretrained_checkpoint,
            optimizer=optimizer,
        )
        self.labels = None if labels is None else list(labels)
        self.target_label = target_label
        self.image_mode = _MODES[self.data_shape[0]]

    # ------------------------------------------------------------------ designs
    def decode(self, x: Tensor) -> list[Image.Image | None]:
        """(B, C, S, S) -> B PIL images (mode "L" or "RGB"); None for a non-finite sample."""
        images = []
        for pixels in x.detach().float().cpu():
            finite = bool(torch.isfinite(pixels).all())
            images.append(to_pil(pixels, value_range="symmetric") if finite else None)
        return images

    def design_key(self, design: Image.Image | Tensor | None) -> str:
        """The FeedbackStore key of a design (see the module docstring); "" for None."""
        if design is None:
            return ""
        return image_key(to_pil(design, value_range="symmetric"))

    def encode(self, designs: Sequence[Image.Image | Tensor | str]) -> Tensor:
        """Designs -> (B, C, S, S) in [-1, 1].

        A design is a PIL image (converted to the model's mode "L" or "RGB"), a key of
        ``design_key``, or a tensor: (C, S, S) uint8 pixels, or floating point in model space.

        Raises:
            ValueError: a design of another size or shape, a string that is not an image key
                (e.g. "", the key of a sample that did not decode), or another type; the message
                names the design's index and what the model takes.
        """
        rows = [self._model_space(n, design) for n, design in enumerate(designs)]
        return torch.stack(rows) if rows else torch.empty(0, *self.data_shape)

    def _model_space(self, n: int, design: Any) -> Tensor:
        pixels = design_pixels(n, design, self.data_shape, self.image_mode)
        if pixels.dtype == torch.uint8:
            return pixels.float() / 127.5 - 1.0
        return pixels.float()

    def finetune_loss(self, n: int, cond: Tensor | None = None) -> dict[str, Tensor]:
        """The fine-tuning objective on n chains of what ``sample()`` draws: ``target_label``'s
        class, or the null class without one. ``cond`` (the data batch's labels) is ignored:
        the chains being fine-tuned are the ones the online loop samples and measures."""
        return super().finetune_loss(n, self._target_cond(n))

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        shape = getattr(datamodule, "image_shape", None)
        if shape is not None and tuple(shape) != self.data_shape:
            raise ValueError(
                f"the datamodule gives images of shape {tuple(shape)} but the denoiser makes "
                f"{self.data_shape}: set the data's image_size/channels and the denoiser's "
                "sample_size/in_channels alike"
            )
        super().on_fit_start()


__all__ = [
    "PNG_KEY_PREFIX",
    "ImageDiffusion",
    "UNetDenoiser",
    "design_pixels",
    "image_from_key",
    "image_key",
]
