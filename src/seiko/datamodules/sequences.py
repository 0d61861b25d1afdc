"""Datamodule for fixed-alphabet sequences: DNA, RNA, protein, or any letters.

Reading: FASTA, FASTQ and GenBank through ``Bio.SeqIO``; CSV/TSV with a sequence column (and
optionally an id, a label and a split column); plain text, one sequence a line (``#`` comments
skipped). Any of them may be gzipped (``.gz``). The format comes from the file name (``.fa``,
``.fasta``, ``.fna``, ``.faa``; ``.fq``, ``.fastq``; ``.gb``, ``.gbk``, ``.gbff``; ``.csv``;
``.tsv``; anything else is text) or from ``file_format``. A malformed FASTA/FASTQ/GenBank file is
an error naming the file and the last good record.

Checking: every sequence is upper-cased (``uppercase``) and checked against the alphabet. A record
that cannot be used is reported with the file, the record (its id, and its number or line), and
the reason, e.g. ``dna.fa: record 'chr1_17' (#3): position 41: letter 'N' is not in the DNA
alphabet 'ACGT'`` (positions count from 1). ``on_invalid="skip"`` logs it (the first 20 one by
one) and drops it, ``"fatal"`` raises; the count is logged and kept in ``num_invalid``.

Length policy: every sequence becomes exactly ``seq_len`` letters.

=================================  ==============================  ==============================
                                   shorter than ``seq_len``        longer than ``seq_len``
=================================  ==============================  ==============================
``pad_symbol=None`` (fixed)        rejected                        ``on_long``: crop or reject
``pad_symbol="-"`` (padded)        padded at the end               ``on_long``: crop or reject
=================================  ==============================  ==============================

``on_long="crop"`` keeps the first ``seq_len`` letters. The numbers padded and cropped are logged.

Labels (conditional models): ``label_column`` of a CSV/TSV, e.g. the DHS cell type. The label
vocabulary (``labels``) is the sorted set of labels read, or the list given (a fine-tuning run gives
the pretrained model's, so class k means the same in both runs); the CLI links it into the model,
which keeps it in its checkpoint. Batches then carry ``"cond"``, the label's index.

Splits: by default a seeded random ``val_fraction`` of the sequences is held out for validation
and also serves as the test set. With ``split_column`` each row's split is read from the file
(the DHS file's ``data_label``: chromosome 1 is test, 2 validation, the rest training), mapped
through ``split_values`` (column value -> "train", "val" or "test"; the key "*" catches other
values); without test rows the validation rows serve as test.

Batches are ``{"x": (B, L, V) one-hot in {-1, +1}, "cond": (B,) long}`` ("cond" only with labels);
the data are kept as (N, L) token indices and one-hot encoded per batch. The same datamodule serves
fine-tuning (the module uses only the batch size and labels) and prediction (``predict_samples``
rows of ``{"index": ...}``).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

log = logging.getLogger(__name__)

ALPHABETS = {"dna": "ACGT", "rna": "ACGU", "protein": "ACDEFGHIKLMNPQRSTVWY"}
ALPHABET_NAMES = {"dna": "DNA", "rna": "RNA", "protein": "protein"}

FileFormat = Literal["auto", "fasta", "fastq", "genbank", "csv", "tsv", "text"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: How ``split_column`` values map to splits unless ``split_values`` is given.
DEFAULT_SPLIT_VALUES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}

_SUFFIX_FORMATS = {
    **dict.fromkeys((".fa", ".fasta", ".fna", ".faa", ".ffn", ".frn", ".fas"), "fasta"),
    **dict.fromkeys((".fq", ".fastq"), "fastq"),
    **dict.fromkeys((".gb", ".gbk", ".gbff", ".genbank"), "genbank"),
    ".csv": "csv",
    ".tsv": "tsv",
}
_SEQIO_NAMES = {"fasta": "FASTA", "fastq": "FASTQ", "genbank": "GenBank"}
_MAX_REPORTED = 20  # rejected records logged one by one; the rest are only counted


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz``."""
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - returned to the caller's with-block


def detect_format(path: str | Path) -> str:
    """The format a file name says: "fasta", "fastq", "genbank", "csv", "tsv" or "text"."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return _SUFFIX_FORMATS.get(suffixes[-1] if suffixes else "", "text")


class SequenceRecord(NamedTuple):
    """One record read from a file.

    ``id`` is the FASTA/FASTQ/GenBank id, the ``id_column`` value, or "line N"; ``where`` says
    where it is, for messages ("record 'chr1_17' (#3)", "line 7 (id 'DA0260')").
    """

    id: str
    where: str
    sequence: str
    label: str | None
    split: str | None


def _check_fasta_start(path: Path) -> None:
    """Biopython's FASTA parser refuses text before the first header with a long generic
    message; say where and what instead."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if line.startswith(">"):
                return
            hint = (
                " (this looks like FASTQ: name it .fastq/.fq or set file_format='fastq')"
                if line.startswith("@")
                else ""
            )
            raise ValueError(
                f"{path}: line {number}: malformed FASTA: expected a header line starting with "
                f"'>', found {line.strip()[:40]!r}{hint}"
            )


def _read_seqio(path: Path, fmt: str) -> Iterator[SequenceRecord]:
    from Bio import SeqIO
    from Bio.Seq import UndefinedSequenceError

    if fmt == "fasta":
        _check_fasta_start(path)
    number, last = 0, None
    with open_text(path) as handle:
        records = SeqIO.parse(handle, fmt)
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except ValueError as err:  # Biopython's parsers raise ValueError on malformed input
                after = f"after record {last!r} (#{number})" if number else "in its first record"
                reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise ValueError(
                    f"{path}: malformed {_SEQIO_NAMES[fmt]} {after}: {reason}"
                ) from None
            number += 1
            last = record.id
            try:
                sequence = str(record.seq)
            except UndefinedSequenceError:  # e.g. a GenBank CONTIG record: no letters in the file
                sequence = ""
            yield SequenceRecord(
                record.id, f"record {record.id!r} (#{number})", sequence, None, None
            )


def _read_table(
    path: Path,
    fmt: str,
    column: str,
    id_column: str | None,
    label_column: str | None,
    split_column: str | None,
) -> Iterator[SequenceRecord]:
    with open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ",")
        fields = reader.fieldnames or []
        wanted = [c for c in (column, id_column, label_column, split_column) if c is not None]
        missing = [c for c in wanted if c not in fields]
        if missing:
            raise ValueError(f"{path}: no column {missing} in the header (columns: {fields})")
        for row in reader:
            line = reader.line_num
            rid = (row[id_column] or "") if id_column else f"line {line}"
            where = f"line {line} (id {rid!r})" if id_column else f"line {line}"
            yield SequenceRecord(
                rid,
                where,
                row[column] or "",  # None when the row is short
                (row[label_column] or "") if label_column else None,
                (row[split_column] or "") if split_column else None,
            )


def read_sequences(
    path: str | Path,
    column: str = "sequence",
    label_column: str | None = None,
    *,
    file_format: FileFormat = "auto",
    id_column: str | None = None,
    split_column: str | None = None,
) -> Iterator[SequenceRecord]:
    """Yield the records of a FASTA/FASTQ/GenBank, CSV/TSV or text file (``.gz`` ok).

    Args:
        path: the file.
        column: the sequence column of a CSV/TSV.
        label_column, id_column, split_column: optional CSV/TSV columns.
        file_format: "auto" (from the file name) or the format.

    Raises:
        ValueError: a malformed FASTA/FASTQ/GenBank file, a missing column, or label/id/split
            columns asked of a format that has none; the message names the file and where.
    """
    path = Path(path)
    fmt = detect_format(path) if file_format == "auto" else file_format
    if fmt not in ("csv", "tsv") and (label_column or id_column or split_column):
        raise ValueError(
            f"{path} is read as {fmt}: label_column, id_column and split_column need a CSV/TSV file"
        )
    if fmt in _SEQIO_NAMES:
        yield from _read_seqio(path, fmt)
    elif fmt in ("csv", "tsv"):
        yield from _read_table(path, fmt, column, id_column, label_column, split_column)
    elif fmt == "text":
        with open_text(path) as handle:
            for n, line in enumerate(handle, start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    yield SequenceRecord(f"line {n}", f"line {n}", line, None, None)
    else:
        raise ValueError(f"file_format={fmt!r} is not one of {list(get_args(FileFormat))}")


def _index_batch(items: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"index": torch.stack([it[0] for it in items])}


class SequenceDataModule(L.LightningDataModule):
    """Sequences over a fixed alphabet, one-hot encoded (see the module docstring).

    Args:
        path: FASTA, FASTQ, GenBank, CSV, TSV or text file (``.gz`` ok).
        alphabet: "dna" (ACGT), "rna" (ACGU), "protein" (the 20 amino acids), or the letters
            themselves (e.g. "ACGTN").
        seq_len: L, the length of every encoded sequence (see the length policy).
        pad_symbol: a padding letter outside the alphabet (appended to the vocabulary), or None
            for fixed-length data (shorter sequences are rejected).
        column: the sequence column of a CSV/TSV.
        label_column: a class-label column of a CSV/TSV, for conditional models.
        labels: the label vocabulary in class order (e.g. the pretrained model's); None: the
            sorted set of labels read. A label outside a given list is rejected (``on_invalid``).
        file_format: "auto" (from the file name) or the format.
        id_column: a CSV/TSV column naming each record in messages (None: the line number).
        split_column: a CSV/TSV column that assigns each row to a split (None: seeded random).
        split_values: column value -> "train", "val" or "test" ("*": any other value); None:
            ``DEFAULT_SPLIT_VALUES`` (train/training, val/valid/validation, test).
        uppercase: upper-case the input first (soft-masked genomes use lower case).
        on_invalid: "skip" (report and drop) or "fatal" (raise) for an unusable record.
        on_long: "crop" (keep the first L letters) or "skip" for sequences longer than L.
        val_fraction: fraction held out for validation by the seeded random split (unused with
            ``split_column``).
        max_sequences: keep only the first N usable sequences (None: all).
        batch_size, num_workers, seed: as usual; ``seed`` fixes the random split.
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
        labels: list[str] | None = None,
        file_format: FileFormat = "auto",
        id_column: str | None = None,
        split_column: str | None = None,
        split_values: dict[str, Split] | None = None,
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
        if not letters or len(set(letters)) != len(letters):
            raise ValueError(f"alphabet {alphabet!r} is empty or repeats a letter")
        if len(letters) > 255:  # token indices are stored as bytes
            raise ValueError(f"alphabet {alphabet!r} has {len(letters)} letters; at most 255")
        if pad_symbol is not None and (len(pad_symbol) != 1 or pad_symbol in letters):
            raise ValueError(
                f"pad_symbol must be one letter outside the alphabet {letters!r}, "
                f"got {pad_symbol!r}"
            )
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if on_invalid not in ("skip", "fatal"):
            raise ValueError(f"on_invalid={on_invalid!r} is not one of ('skip', 'fatal')")
        if on_long not in ("crop", "skip"):
            raise ValueError(f"on_long={on_long!r} is not one of ('crop', 'skip')")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_sequences is not None and max_sequences < 1:
            raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")
        fmt = detect_format(path) if file_format == "auto" else file_format
        table_only = {
            "label_column": label_column,
            "id_column": id_column,
            "split_column": split_column,
        }
        given = [name for name, value in table_only.items() if value is not None]
        if given and fmt not in ("csv", "tsv"):
            raise ValueError(f"{given} need a CSV/TSV file; {path!r} is read as {fmt}")
        if labels is not None:
            if label_column is None:
                raise ValueError("labels were given but no label_column to read them from")
            if len(set(labels)) != len(labels) or not labels:
                raise ValueError(f"labels must be a non-empty list without repeats, got {labels}")
        split_values = DEFAULT_SPLIT_VALUES if split_values is None else dict(split_values)
        wrong = {k: v for k, v in split_values.items() if v not in SPLITS}
        if wrong:
            raise ValueError(f"split_values {wrong} map to splits other than {SPLITS}")
        # the module's hyper-parameters hold the label vocabulary itself; the argument (often
        # None) would clash with it when Lightning merges both for the logger
        self.save_hyperparameters(ignore=["labels"])
        self.letters = letters
        self._letter_set = frozenset(letters)
        self.alphabet_name = ALPHABET_NAMES.get(alphabet.lower(), "given")
        self.vocabulary = list(letters) + ([pad_symbol] if pad_symbol else [])
        self.pad_symbol = pad_symbol
        self.seq_len = seq_len
        self.file_format = fmt
        self.split_values = split_values
        self.num_invalid = 0
        self.num_padded = 0
        self.num_cropped = 0
        self._given_labels = list(labels) if labels is not None else None
        self._labels: list[str] | None = None
        self._sequences: dict[str, list[str]] | None = None
        self._sets: dict[str, Dataset] = {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # ------------------------------------------------------------------ public properties
    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def labels(self) -> list[str] | None:
        """The label vocabulary in class order (None without ``label_column``); reads the data
        when it was not given."""
        if self.hparams.label_column is None:
            return None
        if self._given_labels is not None:
            return list(self._given_labels)
        self._load()
        return list(self._labels)

    @property
    def num_classes(self) -> int | None:
        """The number of labels (None without ``label_column``): the denoiser's classes."""
        labels = self.labels
        return None if labels is None else len(labels)

    @property
    def sequences(self) -> dict[str, list[str]]:
        """The sequences kept in each split, as encoded (cropped, no pads):
        ``{"train": [...], "val": [...], "test": [...]}`` (for novelty metrics)."""
        self._load()
        return self._sequences

    # ------------------------------------------------------------------ loading
    def _reject(self, where: str, reason: str) -> None:
        message = f"{self.hparams.path}: {where}: {reason}"
        if self.hparams.on_invalid == "fatal":
            raise ValueError(message)
        if self.num_invalid < _MAX_REPORTED:
            log.warning("skipping %s", message)
        self.num_invalid += 1

    def _problem(self, record: SequenceRecord, seq: str) -> str | None:
        """Why the record cannot be used, or None."""
        hp = self.hparams
        if not seq:
            return "empty sequence"
        if not set(seq) <= self._letter_set:
            bad = [(i, c) for i, c in enumerate(seq) if c not in self._letter_set]
            position, letter = bad[0]
            more = f" ({len(bad)} letters outside it in all)" if len(bad) > 1 else ""
            return (
                f"position {position + 1}: letter {letter!r} is not in the {self.alphabet_name} "
                f"alphabet {self.letters!r}{more}"
            )
        if len(seq) > self.seq_len and hp.on_long == "skip":
            return f"length {len(seq)} is longer than seq_len={self.seq_len} (on_long='skip')"
        if len(seq) < self.seq_len and self.pad_symbol is None:
            return (
                f"length {len(seq)} is shorter than seq_len={self.seq_len} and there is no "
                "pad_symbol (fixed length)"
            )
        if hp.label_column is not None:
            if not record.label:
                return f"no label in column {hp.label_column!r}"
            if self._given_labels is not None and record.label not in self._given_labels:
                return f"label {record.label!r} is not one of the given labels {self._given_labels}"
        if hp.split_column is not None and self._split_of(record) is None:
            return (
                f"{hp.split_column} value {record.split!r} is none of the split_values keys "
                f"{list(self.split_values)}"
            )
        return None

    def _split_of(self, record: SequenceRecord) -> str | None:
        return self.split_values.get(record.split, self.split_values.get("*"))

    def _load(self) -> None:
        """Read, check and encode the file, then split it; idempotent."""
        if self._sequences is not None:
            return
        hp = self.hparams
        # letter -> chr(token index): str.translate then latin-1 encodes a row in one C call
        to_ids = {ord(s): chr(i) for i, s in enumerate(self.vocabulary)}
        pad = chr(len(self.letters))  # the pad symbol's index (unused without one)
        self.num_invalid = self.num_padded = self.num_cropped = 0
        rows, kept, labels, splits = [], [], [], []
        records = read_sequences(
            hp.path,
            hp.column,
            hp.label_column,
            file_format=self.file_format,
            id_column=hp.id_column,
            split_column=hp.split_column,
        )
        for record in records:
            seq = record.sequence.strip()
            seq = seq.upper() if hp.uppercase else seq
            problem = self._problem(record, seq)
            if problem is not None:
                self._reject(record.where, problem)
                continue
            self.num_padded += len(seq) < self.seq_len
            self.num_cropped += len(seq) > self.seq_len
            seq = seq[: self.seq_len]
            rows.append((seq.translate(to_ids) + pad * (self.seq_len - len(seq))).encode("latin-1"))
            kept.append(seq)
            labels.append(record.label)
            splits.append(self._split_of(record) if hp.split_column is not None else None)
            if len(rows) == hp.max_sequences:
                break
        if not rows:
            raise ValueError(f"{hp.path}: no usable sequence ({self.num_invalid} rejected)")
        summary = (
            f"{hp.path}: {len(rows)} sequences kept ({self.num_padded} padded, "
            f"{self.num_cropped} cropped to {self.seq_len}), {self.num_invalid} rejected"
        )
        (log.warning if self.num_invalid else log.info)(summary)

        ids = torch.frombuffer(bytearray(b"".join(rows)), dtype=torch.uint8)
        tensors = [ids.view(len(rows), self.seq_len)]
        if hp.label_column is not None:
            self._labels = self._given_labels or sorted(set(labels))
            class_of = {label: k for k, label in enumerate(self._labels)}
            tensors.append(torch.tensor([class_of[label] for label in labels], dtype=torch.long))

        if hp.split_column is not None:
            split_rows = {s: [i for i, x in enumerate(splits) if x == s] for s in SPLITS}
            if not split_rows["test"]:
                split_rows["test"] = split_rows["val"]
        else:
            n_val = int(round(len(rows) * hp.val_fraction))
            generator = torch.Generator().manual_seed(hp.seed)
            perm = torch.randperm(len(rows), generator=generator).tolist()
            split_rows = {"train": perm[n_val:], "val": perm[:n_val], "test": perm[:n_val]}
        self._sets = {
            s: TensorDataset(*(t[torch.tensor(idx, dtype=torch.long)] for t in tensors))
            for s, idx in split_rows.items()
        }
        self.train_set, self.val_set, self.test_set = (self._sets[s] for s in SPLITS)
        self._sequences = {s: [kept[i] for i in idx] for s, idx in split_rows.items()}

    def setup(self, stage: str | None = None) -> None:
        self._load()

    # ------------------------------------------------------------------ loaders
    def _collate(self, items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        ids = torch.stack([it[0] for it in items]).long()
        batch = {"x": torch.nn.functional.one_hot(ids, len(self.vocabulary)).float() * 2 - 1}
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
        return self._loader(self._sets["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._sets["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._sets["test"], shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        index = TensorDataset(torch.arange(self.hparams.predict_samples))
        return DataLoader(
            index,
            batch_size=self.hparams.batch_size,
            collate_fn=_index_batch,
        )


__all__ = [
    "ALPHABETS",
    "DEFAULT_SPLIT_VALUES",
    "SequenceDataModule",
    "SequenceRecord",
    "detect_format",
    "open_text",
    "read_sequences",
]
