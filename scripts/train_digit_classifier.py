"""Train the digit classifier behind ``seiko.oracles.digits.DigitConfidence`` and measure it.

    OMP_NUM_THREADS=1 python scripts/train_digit_classifier.py      # writes the shipped weights
    python scripts/train_digit_classifier.py --out /tmp/c.pt --epochs 2

Data: the shipped MNIST digits (data/mnist_5k.csv.gz) through ``ImageDataModule`` with its
default seeded split (seed 0, 20% held out): the classifier trains on the same 4,000 digits the
diffusion model of configs/images/mnist_pretrain.yaml pretrains on, and its accuracy is measured
on the 1,000 held-out digits, which neither model sees. The number of epochs is fixed in advance
(no early stopping on the held-out set, so its accuracy is an honest estimate).

Training: AdamW (lr 1e-3, weight decay 1e-4), batch 64, each digit shifted by up to 2 pixels at
random (zero padding) so the classifier does not rely on MNIST's exact centring, which generated
digits need not share. Seeded: the same weights on the same torch build.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of (B, 1, H, W) moved by up to ``max_shift`` pixels each way (background -1)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[float]]:
    """Overall and per-class accuracy of ``model`` on (N, 1, 28, 28) digits in [-1, 1]."""
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(-1) for chunk in x.split(500)])
    per_class = [float((predicted[y == k] == k).float().mean()) for k in range(10)]
    return float((predicted == y).float().mean()), per_class


def main(argv: list[str] | None = None) -> int:
    from seiko.datamodules.images import ImageDataModule
    from seiko.oracles.digits import DigitClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "mnist_5k.csv.gz"))
    parser.add_argument("--out", default=str(ROOT / "models" / "images" / "digit_classifier.pt"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = ImageDataModule(args.data, class_labels=True)  # the split of mnist_pretrain.yaml
    if data.labels != [str(k) for k in range(10)]:
        raise ValueError(f"{args.data}: expected the digits 0..9 as labels, got {data.labels}")
    scale = lambda images: images.float() / 127.5 - 1.0  # noqa: E731
    x_train, y_train = scale(data.images("train")), data.targets("train")
    x_val, y_val = scale(data.images("val")), data.targets("val")
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for batch in order.split(64):
            x = random_shift(x_train[batch], 2, generator)
            loss = F.cross_entropy(model(x), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            acc, _ = accuracy(model, x_val, y_val)
            print(
                f"epoch {epoch + 1}: train loss {total / len(x_train):.4f}, held-out acc {acc:.4f}"
            )
    train_acc, _ = accuracy(model, x_train, y_train)
    val_acc, per_class = accuracy(model, x_val, y_val)
    print(
        f"{len(x_train)} training digits, {len(x_val)} held out; {args.epochs} epochs in "
        f"{time.time() - start:.0f} s\ntraining accuracy {train_acc:.4f}\n"
        f"held-out accuracy {val_acc:.4f} ({round(val_acc * len(x_val))}/{len(x_val)})\n"
        "held-out accuracy per digit: "
        + ", ".join(f"{k}: {a:.3f}" for k, a in enumerate(per_class))
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"wrote {out} ({out.stat().st_size / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
