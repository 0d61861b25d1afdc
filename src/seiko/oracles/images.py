"""Image oracles: JPEG (in)compressibility (the DDPO tasks) and the LAION aesthetic predictor.

Every oracle takes a list of designs and returns an (N,) float64 tensor, NaN for a design that is
not an image (``measure`` keeps the reason): one bad image never fails the batch that pays for the
others. A design is

* a PIL image (any mode; JPEG and CLIP see it as RGB, or as grayscale "L" for the JPEG size), or
* a tensor (C, H, W) with C = 1 (grayscale) or 3 (RGB): ``uint8`` in [0, 255], or floating point
  in the oracle's ``value_range``: ``"unit"`` for [0, 1] (DDPO's and diffusers' decoded images),
  ``"symmetric"`` for [-1, 1] (diffusers' model space, e.g. a pixel-space ``UNet2DModel``'s x0).
  Floating pixels are clamped to the range and quantised to uint8 by round(255 * p), as DDPO
  does, so a slightly overshooting x0 is still an image; a NaN or infinite pixel, another shape,
  or another dtype makes the design infeasible (NaN).

JPEG (Black et al., "Training Diffusion Models with Reinforcement Learning", 2023, the DDPO
tasks; their code: ddpo_pytorch/rewards.py): the size in kB (1 kB = 1000 bytes) of the image saved
by Pillow as JPEG at quality 95. ``JPEGIncompressibility`` is +size, ``JPEGCompressibility`` is
-size; both are to be maximised. The byte count depends on the JPEG library Pillow was built with,
so compare values within one installation.

Aesthetics (the LAION "improved aesthetic predictor", github.com/christophschuhmann/
improved-aesthetic-predictor, used as a reward by DDPO, AlignProp and SEIKO): the CLIP ViT-L/14
image embedding, L2-normalised, goes through an MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with
dropouts 0.2, 0.2, 0.1 after the first three layers and no activation (the published
``simple_inference.py`` has its ReLUs commented out, so the head is affine in the normalised
embedding). The weights are files the user provides; nothing is downloaded:

* ``clip_path``: a directory written by ``save_pretrained`` holding the CLIP vision tower with
  its projection (``CLIPVisionModelWithProjection``, or a full ``CLIPModel`` checkpoint such as a
  local copy of ``openai/clip-vit-large-patch14``) and its ``preprocessor_config.json``;
  loaded with ``from_pretrained(clip_path, local_files_only=True)``;
* ``head_path``: the MLP's state dict as ``.pth`` (``torch.load``, weights only) or
  ``.safetensors``, with the keys of the published file (``layers.0.weight`` ... ``layers.7.bias``,
  e.g. ``sac+logos+ava1-l14-linearMSE.pth``).

``AestheticOracle`` is the ground truth: images are quantised to uint8 and preprocessed by the
CLIP image processor with its PIL backend (``CLIPImageProcessorPil`` in transformers 5,
``CLIPImageProcessor`` before), as OpenAI's own CLIP preprocessing that the head was trained
with (bicubic resize of the short side, centre crop, normalisation). ``AestheticScorer`` is the
differentiable reward on image tensors (B, C, H, W): the same steps in torch (bicubic resize with
antialiasing, centre crop, normalisation with the processor's constants) so gradients reach the
pixels. It differs from the oracle by the uint8 quantisation and by the resampling kernels' edge
handling: a few thousandths in normalised pixel values, a small fraction of the score's spread
(measured in the tests). Pixels outside the value range are clamped, so they get no gradient (as in
DDPO's and AlignProp's losses).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from seiko.oracles.base import Measurement, error_text

ValueRange = Literal["unit", "symmetric"]
VALUE_RANGES: dict[str, tuple[float, float]] = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}


def _check_value_range(value_range: str) -> tuple[float, float]:
    if value_range not in VALUE_RANGES:
        raise ValueError(
            f"value_range={value_range!r} is not one of {sorted(VALUE_RANGES)} "
            "('unit': floating pixels in [0, 1]; 'symmetric': in [-1, 1])"
        )
    return VALUE_RANGES[value_range]


# ---------------------------------------------------------------------- designs -> images
def to_pil(design: Any, value_range: ValueRange = "unit") -> Image.Image:
    """One design as a PIL image: a PIL image as it is, a (C, H, W) tensor converted.

    Raises:
        ValueError: a tensor of another shape, with non-finite pixels, or of another dtype.
        TypeError: anything else.
    """
    low, high = _check_value_range(value_range)
    if isinstance(design, Image.Image):
        return design
    if not isinstance(design, Tensor):
        raise TypeError(
            f"an image design is a PIL image or a (C, H, W) tensor, got a {type(design).__name__}"
        )
    if design.dim() != 3 or design.shape[0] not in (1, 3) or min(design.shape[1:]) < 1:
        raise ValueError(
            f"image tensor has shape {tuple(design.shape)}; expected (C, H, W) with C in (1, 3)"
        )
    pixels = design.detach().cpu()
    if pixels.dtype != torch.uint8:
        if not pixels.is_floating_point():
            raise ValueError(
                f"image tensor has dtype {pixels.dtype}; expected torch.uint8 or floating point"
            )
        finite = torch.isfinite(pixels)
        if not bool(finite.all()):
            raise ValueError(f"image tensor has {int((~finite).sum())} NaN or infinite pixels")
        unit = ((pixels.double() - low) / (high - low)).clamp(0.0, 1.0)
        pixels = (unit * 255).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _as_jpeg_mode(image: Image.Image) -> Image.Image:
    """JPEG stores grayscale or RGB: keep "L" and "RGB", convert anything else to RGB."""
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def jpeg_size_kb(image: Image.Image, quality: int = 95) -> float:
    """Size in kB (1000 bytes) of ``image`` saved by Pillow as JPEG at ``quality``."""
    buffer = io.BytesIO()
    _as_jpeg_mode(image).save(buffer, format="JPEG", quality=quality)
    return buffer.tell() / 1000.0


def _images(
    designs: Sequence[Any], value_range: ValueRange
) -> tuple[list[Image.Image | None], list[str | None]]:
    """Each design as a PIL image, or None with the reason."""
    images: list[Image.Image | None] = []
    errors: list[str | None] = []
    for design in designs:
        try:
            images.append(to_pil(design, value_range))
            errors.append(None)
        except (TypeError, ValueError) as error:
            images.append(None)
            errors.append(error_text(error))
    return images, errors


# ---------------------------------------------------------------------- JPEG
class _JPEGSize:
    """+/- the JPEG size in kB of each image (see the module docstring)."""

    name: str
    sign: float
    higher_is_better = True

    def __init__(self, quality: int = 95, value_range: ValueRange = "unit") -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in [1, 100] (Pillow's JPEG scale), got {quality}")
        _check_value_range(value_range)
        self.quality = quality
        self.value_range = value_range

    def __repr__(self) -> str:
        return f"{type(self).__name__}(quality={self.quality}, value_range={self.value_range!r})"

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """Values, and the error text of each design that is not an image."""
        images, errors = _images(designs, self.value_range)
        values = []
        for index, image in enumerate(images):
            value = math.nan
            if image is not None:
                try:  # a corrupt image must not sink the batch
                    value = self.sign * jpeg_size_kb(image, self.quality)
                except (OSError, ValueError) as error:
                    errors[index] = error_text(error)
            values.append(value)
        return Measurement(torch.tensor(values, dtype=torch.float64), None, errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values, NaN where a design is not an image."""
        return self.measure(designs).values


class JPEGIncompressibility(_JPEGSize):
    """The JPEG size in kB (DDPO's incompressibility task): higher is a more detailed image.

    Args:
        quality: Pillow's JPEG quality (DDPO: 95).
        value_range: the range of floating-point tensor designs, "unit" or "symmetric".
    """

    name = "jpeg_incompressibility"
    sign = 1.0


class JPEGCompressibility(_JPEGSize):
    """Minus the JPEG size in kB (DDPO's compressibility task): higher is a simpler image.

    Args:
        quality: Pillow's JPEG quality (DDPO: 95).
        value_range: the range of floating-point tensor designs, "unit" or "symmetric".
    """

    name = "jpeg_compressibility"
    sign = -1.0


# ---------------------------------------------------------------------- the aesthetic predictor
class AestheticHead(nn.Module):
    """The LAION improved-aesthetic-predictor MLP on L2-normalised CLIP image embeddings.

    ``layers`` = Linear(input_size, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2),
    Linear(128, 64), Dropout(0.1), Linear(64, 16), Linear(16, 1): the layout (and so the state
    dict keys) of the published weights.

    Args:
        input_size: the embedding's width (768 for CLIP ViT-L/14, the published head's).
    """

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: Tensor) -> Tensor:
        """(B, input_size) normalised embeddings -> (B,) scores."""
        return self.layers(embeddings).squeeze(-1)


def load_aesthetic_head(path: str | Path, input_size: int = 768) -> AestheticHead:
    """An ``AestheticHead`` with the weights of a ``.pth`` or ``.safetensors`` state dict file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file's keys or shapes are not those of the head.
    """
    path = Path(path)
    expected = (
        "a .pth or .safetensors state dict of the LAION improved-aesthetic-predictor MLP "
        "(keys layers.0.weight ... layers.7.bias, e.g. sac+logos+ava1-l14-linearMSE.pth)"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"aesthetic head weights {str(path)!r} do not exist; expected {expected}"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    head = AestheticHead(input_size)
    try:
        head.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as error:
        raise ValueError(
            f"{str(path)!r} is not the weights of an AestheticHead(input_size={input_size}): "
            f"expected {expected}; loading said: {error}"
        ) from error
    return head.eval()


def _image_processor_class() -> type:
    """The PIL backend of the CLIP image processor (see the module docstring)."""
    try:
        from transformers import CLIPImageProcessorPil  # transformers >= 5

        return CLIPImageProcessorPil
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL-based one
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def load_clip_vision(path: str | Path) -> tuple[nn.Module, Any]:
    """The CLIP vision tower with projection and its image processor from a local directory
    written by ``save_pretrained``: of a ``CLIPVisionModelWithProjection``, or of a full
    ``CLIPModel`` (its text tower is not loaded).

    Raises:
        FileNotFoundError: the directory, its config.json or its preprocessor_config.json is
            missing (nothing is downloaded).
    """
    from transformers import CLIPVisionModelWithProjection

    path = Path(path)
    expected = (
        "a directory written by save_pretrained holding a CLIP vision model with projection "
        "(config.json and its weights) and its preprocessor_config.json, e.g. a local copy of "
        "openai/clip-vit-large-patch14 (nothing is downloaded)"
    )
    if not path.is_dir():
        raise FileNotFoundError(f"CLIP directory {str(path)!r} does not exist; expected {expected}")
    for name in ("config.json", "preprocessor_config.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{str(path)!r} has no {name}; expected {expected}")
    config = None
    if json.loads((path / "config.json").read_text()).get("model_type") == "clip":
        # A full CLIPModel checkpoint: its projection width is the top-level projection_dim,
        # which the vision sub-config alone does not carry (it would default to 512).
        from transformers import CLIPConfig

        full = CLIPConfig.from_pretrained(str(path), local_files_only=True)
        config = full.vision_config
        config.projection_dim = full.projection_dim
    model = CLIPVisionModelWithProjection.from_pretrained(
        str(path), config=config, local_files_only=True
    )
    processor = _image_processor_class().from_pretrained(str(path), local_files_only=True)
    return model.float().eval().requires_grad_(False), processor


_RESAMPLING = {2: "bilinear", 3: "bicubic"}  # PIL's resampling codes -> F.interpolate modes


class AestheticScorer(nn.Module):
    """The LAION aesthetic score, differentiable in the pixels: (B, C, H, W) -> (B,).

    Frozen (no parameter requires grad; always in eval mode): usable as a fine-tuning ``reward``
    on decoded image tensors, and it is what ``AestheticOracle`` evaluates (through the
    processor's PIL preprocessing instead, see the module docstring).

    Args:
        clip_path: local directory of the CLIP vision model with projection and its processor.
        head_path: the MLP head's ``.pth`` or ``.safetensors`` file.
        value_range: the range of the image tensors, "unit" ([0, 1]) or "symmetric" ([-1, 1]).
    """

    def __init__(self, clip_path: str, head_path: str, value_range: ValueRange = "unit") -> None:
        super().__init__()
        self.low, self.high = _check_value_range(value_range)
        self.value_range = value_range
        self.clip, self.processor = load_clip_vision(clip_path)
        self.head = load_aesthetic_head(head_path, self.clip.config.projection_dim)
        processor = self.processor
        rescale = getattr(processor, "rescale_factor", 1 / 255)
        if not (processor.do_rescale and math.isclose(rescale, 1 / 255)):
            raise ValueError(
                f"the processor in {clip_path!r} rescales by {rescale} (do_rescale="
                f"{processor.do_rescale}); expected CLIP's 1/255 of uint8 pixels"
            )
        resample = int(processor.resample)
        if processor.do_resize and resample not in _RESAMPLING:
            raise ValueError(
                f"the processor in {clip_path!r} resamples with PIL code {resample}; "
                f"supported: {_RESAMPLING}"
            )
        self.mode = _RESAMPLING.get(resample, "bicubic")
        self.size = processor.size if processor.do_resize else None
        crop = processor.crop_size if processor.do_center_crop else None
        self.crop = None if crop is None else (int(crop.get("height")), int(crop.get("width")))
        # plain numbers, not buffers: this module holds no tensor of its own, so a precision
        # cast (seiko.callbacks.FrozenPrecision) leaves the preprocessing in float32
        self.mean = (
            tuple(float(m) for m in processor.image_mean) if processor.do_normalize else None
        )
        self.std = tuple(float(s) for s in processor.image_std) if processor.do_normalize else None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> AestheticScorer:
        return super().train(False)  # frozen: the head's dropouts stay off

    def _resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The processor's output size: the short side to ``shortest_edge`` (the long side
        scaled and floored), or (height, width) as given."""
        shortest = self.size.get("shortest_edge")
        if shortest is None:
            return int(self.size.get("height")), int(self.size.get("width"))
        short, long = min(height, width), max(height, width)
        new_long = int(shortest * long / short)
        return (new_long, shortest) if width <= height else (shortest, new_long)

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in the value range -> (B, 3, h, w) CLIP pixel values, in torch
        (float32, or float64 for float64 images)."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images have shape {tuple(images.shape)}; expected (B, C, H, W) with C in (1, 3)"
            )
        # float32 at least: the antialiased resize has no bf16 kernel on CPU
        x = images.to(torch.promote_types(images.dtype, torch.float32))
        x = ((x - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if self.size is not None:
            shape = self._resized_shape(x.shape[-2], x.shape[-1])
            if shape != tuple(x.shape[-2:]):
                x = F.interpolate(
                    x, size=shape, mode=self.mode, align_corners=False, antialias=True
                )
        if self.crop is not None:
            height, width = self.crop
            top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
            if top < 0 or left < 0:
                raise ValueError(
                    f"images of size {tuple(images.shape[-2:])} are smaller than the crop "
                    f"{self.crop} after resizing"
                )
            x = x[..., top : top + height, left : left + width]
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, h, w) CLIP pixel values -> (B, D) L2-normalised image embeddings."""
        embeddings = self.clip(pixel_values=pixel_values).image_embeds
        return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def score_pixel_values(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, h, w) CLIP pixel values -> (B,) aesthetic scores."""
        return self.head(self.embed(pixel_values))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in the value range -> (B,) scores, differentiable in the pixels."""
        return self.score_pixel_values(self.preprocess(images))


class AestheticOracle:
    """The LAION aesthetic score of each image (higher is better); NaN for a non-image design.

    Args:
        clip_path: local directory of the CLIP vision model with projection and its processor.
        head_path: the MLP head's ``.pth`` or ``.safetensors`` file.
        value_range: the range of floating-point tensor designs, "unit" or "symmetric".
        batch_size: images per forward pass.
        device: where the networks run ("cpu", "cuda", "cuda:1", ...).
    """

    name = "laion_aesthetic"
    higher_is_better = True

    def __init__(
        self,
        clip_path: str,
        head_path: str,
        value_range: ValueRange = "unit",
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scorer = AestheticScorer(clip_path, head_path, value_range).to(device)
        self.value_range = value_range
        self.batch_size = batch_size
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"AestheticOracle(value_range={self.value_range!r}, device={str(self.device)!r})"

    @torch.no_grad()
    def score_images(self, images: Sequence[Image.Image]) -> Tensor:
        """(N,) float64 scores of PIL images through the CLIP processor (PIL preprocessing)."""
        scores = []
        for start in range(0, len(images), self.batch_size):
            chunk = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            pixels = self.scorer.processor(images=chunk, return_tensors="pt")["pixel_values"]
            scores.append(self.scorer.score_pixel_values(pixels.to(self.device)).double().cpu())
        return torch.cat(scores) if scores else torch.empty(0, dtype=torch.float64)

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """Values, and the error text of each design that is not an image."""
        images, errors = _images(designs, self.value_range)
        values = torch.full((len(designs),), math.nan, dtype=torch.float64)
        good = [index for index, image in enumerate(images) if image is not None]
        if good:
            values[good] = self.score_images([images[index] for index in good])
        return Measurement(values, None, errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 scores, NaN where a design is not an image."""
        return self.measure(designs).values


__all__ = [
    "AestheticHead",
    "AestheticOracle",
    "AestheticScorer",
    "JPEGCompressibility",
    "JPEGIncompressibility",
    "VALUE_RANGES",
    "jpeg_size_kb",
    "load_aesthetic_head",
    "load_clip_vision",
    "to_pil",
]
