"""Text prompts for fine-tuning a text-to-image model (``seiko.lightning_modules.StableDiffusion``).

A prompt file is UTF-8 text, one prompt a line. Surrounding whitespace is stripped, blank lines
and lines whose first non-blank character is ``#`` are skipped (so a file can carry its own
provenance as a comment header), and runs of whitespace inside a prompt are kept as they are (the
tokenizer normalises them). A line that is not valid UTF-8 or holds a control character (other
than a tab) is an error naming ``file:line``; so is a file without a single prompt.

The shipped lists (``data/prompts/``, see their PROVENANCE.md) are those of the DDPO, AlignProp
and SEIKO image experiments: ``simple_animals.txt``, the 45 common animals DDPO trains on, and
``eval_simple_animals.txt``, the 6 animals AlignProp and SEIKO hold out for evaluation.

Batches are ``{"prompt": list of B strings, "index": (B,) long}``, ``index`` being each prompt's
position in the file's list of prompts (the module reads only ``prompt``; ``index`` gives every
batch a tensor, and a log a way back to the prompt). In fine-tuning a batch only says which
prompts the B chains of one step are conditioned on: by default each epoch draws
``samples_per_epoch`` prompts uniformly at random with replacement (DDPO samples one prompt per
image this way), or, with ``samples_per_epoch=None``, visits every prompt once in a shuffled order.
Prediction (``seiko predict``) goes through ``predict_file`` (default: the training file), each
prompt ``predict_repeats`` times, in file order.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a prompt file (see the module docstring for the format).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: a line is not UTF-8 or holds a control character (``file:line: reason``), or
            the file holds no prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt file {str(path)!r} does not exist; expected a UTF-8 text file with one "
            "prompt a line ('#' comments and blank lines are skipped)"
        )
    prompts = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}:{number}: not valid UTF-8 (byte {error.start}: {raw[error.start]:#04x})"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        for column, char in enumerate(text, start=1):
            if char != "\t" and unicodedata.category(char) == "Cc":
                raise ValueError(
                    f"{path}:{number}: control character U+{ord(char):04X} at column {column} "
                    f"in {text!r}"
                )
        prompts.append(text)
    if not prompts:
        raise ValueError(
            f"prompt file {str(path)!r} holds no prompt (only blank lines and '#' comments)"
        )
    return prompts


class PromptDataset(Dataset):
    """Prompts as a map-style dataset of ``(index, prompt)``, each prompt ``repeats`` times."""

    def __init__(self, prompts: list[str], repeats: int = 1) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.prompts = list(prompts)
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.prompts) * self.repeats

    def __getitem__(self, item: int) -> tuple[int, str]:
        if not 0 <= item < len(self):
            raise IndexError(f"index {item} is out of range for {len(self)} prompts")
        index = item // self.repeats
        return index, self.prompts[index]


class UniformDraws(Sampler[int]):
    """``num_samples`` indices drawn uniformly with replacement from ``range(size)``.

    Each pass draws anew from a generator seeded with ``seed`` and the number of passes made so
    far, so the sequence of epochs is reproducible, and the same on every DDP rank (Lightning
    wraps this sampler and gives each rank its share of one epoch's draws).
    """

    def __init__(self, size: int, num_samples: int, seed: int = 0) -> None:
        if size < 1 or num_samples < 1:
            raise ValueError(f"need size >= 1 and num_samples >= 1, got {size}, {num_samples}")
        self.size, self.num_samples, self.seed = size, num_samples, seed
        self.passes = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        self.passes += 1
        draws = torch.randint(self.size, (self.num_samples,), generator=generator)
        return iter(draws.tolist())


def collate_prompts(rows: list[tuple[int, str]]) -> dict[str, Any]:
    """``[(index, prompt), ...]`` -> ``{"prompt": [str, ...], "index": (B,) long}``."""
    return {
        "prompt": [prompt for _, prompt in rows],
        "index": torch.tensor([index for index, _ in rows], dtype=torch.long),
    }


class PromptDataModule(L.LightningDataModule):
    """Batches of prompts from a text file, for fine-tuning and sampling a text-to-image model.

    Args:
        train_file: the prompts conditioning fine-tuning (default: DDPO's 45 simple animals).
        predict_file: the prompts ``seiko predict`` samples images for (None: ``train_file``).
        batch_size: prompts per batch (= chains per fine-tuning step, per device).
        samples_per_epoch: prompts drawn per epoch, uniformly with replacement (None: every
            prompt once per epoch, shuffled). With a fixed ``limit_train_batches`` only the
            first batches are used.
        predict_repeats: how many images ``seiko predict`` samples per prompt.
        seed: seeds the draws (the epoch's order is reproducible across runs).
        num_workers: DataLoader workers (0: in the main process; the data are a few strings).
    """

    def __init__(
        self,
        train_file: str = "data/prompts/simple_animals.txt",
        predict_file: str | None = None,
        batch_size: int = 4,
        samples_per_epoch: int | None = 1024,
        predict_repeats: int = 1,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1 or None, got {samples_per_epoch}")
        if predict_repeats < 1:
            raise ValueError(f"predict_repeats must be >= 1, got {predict_repeats}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.train_file = train_file
        self.predict_file = predict_file
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.predict_repeats = predict_repeats
        self.seed = seed
        self.num_workers = num_workers
        self.train_prompts: list[str] = []
        self.predict_prompts: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not self.train_prompts:
            self.train_prompts = read_prompts(self.train_file)
        if stage in (None, "predict") and not self.predict_prompts:
            self.predict_prompts = read_prompts(self.predict_file or self.train_file)

    def train_dataloader(self) -> DataLoader:
        if not self.train_prompts:
            self.setup("fit")
        dataset = PromptDataset(self.train_prompts)
        if self.samples_per_epoch is None:
            generator = torch.Generator().manual_seed(self.seed)
            sampler: Sampler[int] = RandomSampler(dataset, generator=generator)
        else:
            sampler = UniformDraws(len(dataset), self.samples_per_epoch, self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_prompts,
            num_workers=self.num_workers,
        )

    def predict_dataloader(self) -> DataLoader:
        if not self.predict_prompts:
            self.setup("predict")
        return DataLoader(
            PromptDataset(self.predict_prompts, repeats=self.predict_repeats),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate_prompts,
            num_workers=self.num_workers,
        )


__all__ = [
    "PromptDataModule",
    "PromptDataset",
    "UniformDraws",
    "collate_prompts",
    "read_prompts",
]
