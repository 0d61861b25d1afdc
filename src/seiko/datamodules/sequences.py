"""Datamodule for fixed-alphabet sequences (DNA, RNA, protein, or any letters).

Reads FASTA (Bio.SeqIO), plain text (one sequence a line) or CSV/TSV with a sequence column,
optionally gzipped. Each sequence is checked against the alphabet; a bad letter is reported with the
file, record and position, then skipped or fatal (``on_invalid``). Sequences are padded with
``pad_symbol`` (when given) or must have exactly ``seq_len`` letters; longer ones are cropped or
rejected (``on_long``).

Batches are ``{"x": (B, L, V) one-hot in {-1, +1}, "cond": (B,) long}`` ("cond" only with labels).
The same datamodule serves fine-tuning (the module uses only the batch size and labels) and
prediction (``predict_samples`` rows of ``{"index": ...}``).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

log = logging.getLogger(__name__)

ALPHABETS = {"dna": "ACGT", "rna": "ACGU", "protein": "ACDEFGHIKLMNPQRSTVWY"}


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz``."""
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - returned to the caller's with-block


def _format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".fa", ".fasta", ".fna", ".faa"):
        return "fasta"
    if last in (".tsv", ".csv"):
        return last[1:]
    return "text"


def read_sequences(
    path: str | Path, column: str = "sequence", label_column: str | None = None
) -> Iterator[tuple[str, int, str, str | None]]:
    """Yield (record id, line number, sequence, label) from FASTA / text / CSV / TSV (gz ok)."""
    path = Path(path)
    fmt = _format(path)
    with open_text(path) as handle:
        if fmt == "fasta":
            from Bio import SeqIO

            for n, record in enumerate(SeqIO.parse(handle, "fasta"), start=1):
                yield record.id, n, str(record.seq), None
        elif fmt in ("csv", "tsv"):
            reader = csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ",")
            missing = [
                c for c in (column, label_column) if c and c not in (reader.fieldnames or [])
            ]
            if missing:
                raise ValueError(f"{path}: no column {missing} (columns: {reader.fieldnames})")
            for n, row in enumerate(reader, start=2):
                label = row[label_column] if label_column else None
                yield f"line {n}", n, row[column], label
        else:
            for n, line in enumerate(handle, start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    yield f"line {n}", n, line, None


def _index_batch(items: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"index": torch.stack([it[0] for it in items])}


class SequenceDataModule(L.LightningDataModule):
    """Sequences over a fixed alphabet, one-hot encoded.

    Args:
        path: FASTA, text, CSV or TSV file (``.gz`` ok).
        alphabet: "dna", "rna", "protein", or the letters themselves (e.g. "ACGT").
        seq_len: L; shorter sequences are padded (needs ``pad_symbol``), longer ones: ``on_long``.
        pad_symbol: a padding letter not in the alphabet (appended to it), or None for fixed length.
        column: sequence column for CSV/TSV.
        label_column: optional class-label column for conditional models (CSV/TSV).
        uppercase: upper-case the input first.
        on_invalid: "skip" (report and drop) or "fatal" (raise) for a letter outside the alphabet.
        on_long: "crop" (keep the first L letters) or "skip" for sequences longer than L.
        val_fraction: fraction held out for validation (seeded split).
        max_sequences: keep only the first N valid sequences (None: all).
        batch_size, num_workers, seed: as usual.
        predict_samples: how many designs ``seiko predict`` draws.
    """

    def __init__(
        self,
        path: str,
        alphabet: str = "dna",
        seq_len: int = 200,
        pad_symbol: str | None = None,
        column: str = "sequence",
        label_column: str | None = None,
        uppercase: bool = True,
        on_invalid: Literal["skip", "fatal"] = "skip",
        on_long: Literal["crop", "skip"] = "crop",
        val_fraction: float = 0.05,
        max_sequences: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        predict_samples: int = 100,
    ) -> None:
        super().__init__()
        letters = ALPHABETS.get(alphabet.lower(), alphabet)
        if len(set(letters)) != len(letters):
            raise ValueError(f"alphabet {alphabet!r} repeats a letter")
        if pad_symbol is not None and (len(pad_symbol) != 1 or pad_symbol in letters):
            raise ValueError(
                f"pad_symbol must be one letter outside the alphabet, got {pad_symbol!r}"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.letters = letters
        self.vocabulary = list(letters) + ([pad_symbol] if pad_symbol else [])
        self.pad_symbol = pad_symbol
        self.seq_len = seq_len
        self.labels: list[str] | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.num_invalid = 0

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Read, validate and encode the file: (N, L, V) one-hot in {-1, +1} and labels or None."""
        hp = self.hparams
        index = {s: i for i, s in enumerate(self.vocabulary)}
        rows, labels = [], []
        self.num_invalid = 0
        for rid, line, seq, label in read_sequences(hp.path, hp.column, hp.label_column):
            seq = seq.strip().upper() if hp.uppercase else seq.strip()
            bad = next(((i, c) for i, c in enumerate(seq) if c not in self.letters), None)
            if bad is None and len(seq) > self.seq_len and hp.on_long == "skip":
                bad = (self.seq_len, f"length {len(seq)} > seq_len {self.seq_len}")
            if bad is None and len(seq) < self.seq_len and self.pad_symbol is None:
                bad = (len(seq), f"length {len(seq)} < seq_len {self.seq_len} and no pad_symbol")
            if bad is not None:
                msg = f"{hp.path}: record {rid} (entry {line}), position {bad[0]}: {bad[1]!r}"
                if hp.on_invalid == "fatal":
                    raise ValueError(
                        f"{msg} is not in the alphabet {self.letters!r} or breaks length"
                    )
                log.warning("skipping %s", msg)
                self.num_invalid += 1
                continue
            seq = seq[: self.seq_len]
            ids = [index[c] for c in seq] + [index.get(self.pad_symbol, 0)] * (
                self.seq_len - len(seq)
            )
            rows.append(ids)
            labels.append(label)
            if hp.max_sequences is not None and len(rows) >= hp.max_sequences:
                break
        if not rows:
            raise ValueError(f"{hp.path}: no valid sequence ({self.num_invalid} rejected)")
        if self.num_invalid:
            log.warning("%s: %d sequences rejected, %d kept", hp.path, self.num_invalid, len(rows))
        x = torch.nn.functional.one_hot(torch.tensor(rows), len(self.vocabulary)).float() * 2 - 1
        if hp.label_column is None:
            return x, None
        self.labels = sorted(set(labels))
        return x, torch.tensor([self.labels.index(lab) for lab in labels])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = self.load()
        n_val = int(round(len(x) * self.hparams.val_fraction))
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.seed))
        tensors = (x,) if y is None else (x, y)
        self.train_set = TensorDataset(*(t[perm[n_val:]] for t in tensors))
        self.val_set = TensorDataset(*(t[perm[:n_val]] for t in tensors))

    def _collate(self, items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        batch = {"x": torch.stack([it[0] for it in items])}
        if len(items[0]) > 1:
            batch["cond"] = torch.stack([it[1] for it in items])
        return batch

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=self._collate,
            drop_last=shuffle and len(dataset) >= self.hparams.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        index = TensorDataset(torch.arange(self.hparams.predict_samples))
        return DataLoader(
            index,
            batch_size=self.hparams.batch_size,
            collate_fn=_index_batch,
        )
