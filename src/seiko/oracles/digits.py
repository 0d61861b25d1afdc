"""Digit-class confidence: a small MNIST classifier as the ground truth of the pixel-diffusion demo.

``DigitConfidence(target=k)`` is the softmax probability that an image shows the digit k, by a
small CNN (``DigitClassifier``) trained on the shipped MNIST digits (``data/mnist_5k.csv.gz``) by
``scripts/train_digit_classifier.py``, whose weights ship as ``models/images/digit_classifier.pt``
(the script prints its held-out accuracy; docs/images.md records it). It is an honest oracle in
the sense that it is a real classifier measured on held-out real digits, not a hand-made score;
it is not a human judge, and like every classifier it can be fooled by images far from the data,
which is why the reward fine-tuning keeps a KL term to the pretrained model.

Designs, as for every image oracle (``seiko.oracles.images``): a PIL image (any mode; converted to
grayscale "L") or a (C, H, W) tensor (uint8, or floating point in ``value_range``). The classifier
sees 28 x 28 grayscale digits, white on black, in [-1, 1]; an image of another size is resized to
28 x 28 (Pillow's bilinear filter). A design that is not an image (None, a wrong shape, NaN
pixels) is NaN with its reason (``measure``); it never fails the batch.

``DigitScorer`` is the same probability as a frozen, differentiable ``nn.Module`` on image tensors
(B, C, H, W), a known reward for fine-tuning without the online loop (AlignProp/DRaFT style); it
differs from the oracle only by the uint8 quantisation of the oracle's PIL images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from seiko.oracles.base import Measurement
from seiko.oracles.images import ValueRange, _check_value_range, _images

DIGIT_SIZE = 28
NUM_DIGITS = 10


class DigitClassifier(nn.Module):
    """A small CNN: (B, 1, 28, 28) digits in [-1, 1] -> (B, 10) logits.

    Conv 3x3 (1 -> 16) - ReLU - max-pool 2 - conv 3x3 (16 -> 32) - ReLU - max-pool 2 -
    linear (32 * 7 * 7 -> 64) - ReLU - dropout 0.25 - linear (64 -> 10); 105,866 parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(64, NUM_DIGITS),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, 10) logits."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, DIGIT_SIZE, DIGIT_SIZE):
            raise ValueError(f"expected digits of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        return self.head(self.features(x))


def load_digit_classifier(path: str | Path) -> DigitClassifier:
    """A ``DigitClassifier`` in eval mode with the weights of a state-dict file (``torch.save``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file does not hold a ``DigitClassifier``'s weights.
    """
    path = Path(path)
    expected = (
        "a DigitClassifier state dict saved with torch.save, e.g. models/images/"
        "digit_classifier.pt (written by scripts/train_digit_classifier.py)"
    )
    if not path.is_file():
        raise FileNotFoundError(f"digit classifier weights {str(path)!r} do not exist; {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitClassifier()
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError, ValueError, OSError) as error:
        raise ValueError(f"{str(path)!r} is not {expected}: {error}") from error
    return model.eval().requires_grad_(False)


def _check_target(target: int) -> int:
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < NUM_DIGITS:
        raise ValueError(f"target must be a digit 0..9, got {target!r}")
    return target


def digit_pixels(image: Image.Image) -> Tensor:
    """A PIL image as the classifier's (1, 28, 28) input in [-1, 1] (grayscale, resized)."""
    gray = image.convert("L")
    if gray.size != (DIGIT_SIZE, DIGIT_SIZE):
        gray = gray.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BILINEAR)
    array = np.asarray(gray, dtype=np.float32).reshape(1, DIGIT_SIZE, DIGIT_SIZE)
    return torch.from_numpy(array.copy()) / 127.5 - 1.0


class DigitConfidence:
    """The classifier's probability that each image shows ``target``; NaN for a non-image.

    Args:
        target: the digit 0..9.
        weights: the classifier's state-dict file (``models/images/digit_classifier.pt``).
        value_range: the range of floating-point tensor designs, "unit" or "symmetric".
        batch_size: images per forward pass.
        device: where the classifier runs.
    """

    higher_is_better = True

    def __init__(
        self,
        target: int,
        weights: str = "models/images/digit_classifier.pt",
        value_range: ValueRange = "unit",
        batch_size: int = 256,
        device: str = "cpu",
    ) -> None:
        self.target = _check_target(target)
        _check_value_range(value_range)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = f"digit_{target}_confidence"
        self.value_range = value_range
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.classifier = load_digit_classifier(weights).to(self.device)

    def __repr__(self) -> str:
        return f"DigitConfidence(target={self.target}, value_range={self.value_range!r})"

    @torch.no_grad()
    def probabilities(self, images: Sequence[Image.Image]) -> Tensor:
        """(N, 10) float64 class probabilities of PIL images."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            x = torch.stack([digit_pixels(image) for image in chunk]).to(self.device)
            out.append(torch.softmax(self.classifier(x).double(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, NUM_DIGITS, dtype=torch.float64)

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """Values, and the error text of each design that is not an image."""
        images, errors = _images(designs, self.value_range)
        values = torch.full((len(designs),), math.nan, dtype=torch.float64)
        good = [index for index, image in enumerate(images) if image is not None]
        if good:
            values[good] = self.probabilities([images[index] for index in good])[:, self.target]
        return Measurement(values, None, errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 probabilities of ``target``, NaN where a design is not an image."""
        return self.measure(designs).values


class DigitScorer(nn.Module):
    """The probability of ``target``, differentiable in the pixels: (B, C, H, W) -> (B,).

    Frozen (no parameter requires grad; always in eval mode). Images are clamped to the value
    range (clamped pixels get no gradient), averaged to grayscale (the channel mean; the oracle's
    PIL conversion weighs R, G, B 0.299, 0.587, 0.114, the same for gray images), and resized to
    28 x 28 (bilinear, antialiased) if needed.

    Args:
        target: the digit 0..9.
        weights: the classifier's state-dict file.
        value_range: the range of the image tensors ("symmetric": an ``ImageDiffusion``'s x0).
    """

    def __init__(
        self,
        target: int,
        weights: str = "models/images/digit_classifier.pt",
        value_range: ValueRange = "symmetric",
    ) -> None:
        super().__init__()
        self.target = _check_target(target)
        self.low, self.high = _check_value_range(value_range)
        self.classifier = load_digit_classifier(weights)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DigitScorer:
        return super().train(False)  # frozen: the classifier's dropout stays off

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in the value range -> (B,) probabilities of ``target``."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images have shape {tuple(images.shape)}; expected (B, C, H, W) with C in (1, 3)"
            )
        x = ((images.float() - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        x = x.mean(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != (DIGIT_SIZE, DIGIT_SIZE):
            x = F.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", antialias=True)
        logits = self.classifier(x * 2.0 - 1.0)
        return torch.softmax(logits, dim=-1)[:, self.target]


__all__ = [
    "DIGIT_SIZE",
    "DigitClassifier",
    "DigitConfidence",
    "DigitScorer",
    "digit_pixels",
    "load_digit_classifier",
]
