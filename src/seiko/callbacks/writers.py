"""Writes what ``seiko predict`` samples to the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter


class DesignWriter(BasePredictionWriter):
    """Writes decoded designs, one per line, to ``<dirpath or log_dir>/predictions.txt``.

    Args:
        dirpath: where to write; default: the trainer's log directory.
        filename: the file name.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "predictions.txt") -> None:
        super().__init__(write_interval="epoch")
        self.dirpath, self.filename = dirpath, filename
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        root = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        name = (
            self.filename
            if trainer.world_size == 1
            else f"rank{trainer.global_rank}_{self.filename}"
        )
        self.path = root / name
        designs = [d for batch in predictions for d in batch]
        with open(self.path, "w", encoding="utf-8") as handle:
            for design in designs:
                handle.write(f"{design}\n")
        print(f"wrote {len(designs)} designs to {self.path}")
