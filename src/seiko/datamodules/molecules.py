"""Datamodule for molecules: SMILES files in, one-hot SELFIES tokens out.

Every molecule is canonicalised with RDKit first. The MOSES strings are not canonical for current
RDKit (a few in a thousand differ), and a SMILES has many spellings, so *both* sides of every
comparison (novelty against the training set, round trips, deduplication) use the canonical form.
The canonical SMILES is then written as SELFIES (Krenn et al. 2020, the ``selfies`` package), whose
every token sequence decodes to some molecule, and split into tokens ("[C]", "[=O]", "[Ring1]").

Reading: CSV/TSV with a SMILES column (``column``), or ``.smi``/``.txt`` (first
whitespace-separated field of each line, ``#`` comments skipped), each optionally gzipped. A line
whose SMILES RDKit cannot parse, that SELFIES cannot express, that has more than ``seq_len`` tokens,
or that has a token outside a given vocabulary is reported with its file and line number and then
skipped or fatal (``on_invalid``); the number skipped is logged and kept in ``num_invalid``.

Vocabulary: by default the sorted set of tokens of every molecule read, plus ``pad_symbol``
(deterministic for the same files). A fine-tuning run passes the pretrained model's vocabulary
instead (a list, a JSON file written by ``save_vocabulary``, or the pretrained Lightning
checkpoint), so the one-hot columns mean the same thing in both runs.

Batches are ``{"x": (B, L, V) one-hot in {-1, +1}}``, like ``SequenceDataModule``; the encoded
molecules are kept as (N, L) token indices and one-hot encoded per batch (50k molecules as float
one-hot would take about 350 MB). ``predict_dataloader`` yields ``predict_samples`` rows of
``{"index": ...}``.

Parsing (canonicalising and SELFIES-encoding) runs at roughly 500-1,000 molecules/s on one core,
so 55k MOSES molecules take one to two minutes. With ``cache_dir`` each file's parse (canonical
SMILES and SELFIES tokens of every line) is stored once, keyed by the file's SHA-256, the column and
the RDKit/SELFIES versions, and re-used: the same 55k then load in about 5 s.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import lightning as L
import rdkit
import selfies as sf
import torch
from torch.utils.data import DataLoader, TensorDataset

from seiko.chemistry import canonical_smiles, parse_smiles
from seiko.datamodules.sequences import open_text

log = logging.getLogger(__name__)

PAD_SYMBOL = "[nop]"  # SELFIES' own no-operation symbol: the decoder ignores it wherever it is
_CACHE_FORMAT = 1  # bump when the cached record layout changes
_MAX_REPORTED = 20  # invalid lines logged one by one; the rest are only counted


# ---------------------------------------------------------------------- chemistry helpers
# parse_smiles and canonical_smiles live in seiko.chemistry (imported above, re-exported).
def encode_smiles(smiles: str) -> tuple[str, str]:
    """(canonical SMILES, SELFIES of the canonical SMILES).

    Raises:
        ValueError: the SMILES does not parse, or SELFIES cannot express the molecule (e.g. an atom
            beyond SELFIES' valence constraints); the message says which.
    """
    canonical = canonical_smiles(smiles)
    if canonical is None:
        raise ValueError(f"{smiles!r} is not a valid SMILES (RDKit cannot parse it)")
    try:
        return canonical, sf.encoder(canonical)
    except sf.EncoderError as err:
        raise ValueError(f"{smiles!r} cannot be written as SELFIES ({err})") from None


def decode_selfies(selfies: str) -> str:
    """Canonical SMILES of a SELFIES string; "" when it is not a valid non-empty molecule.

    "" (rather than None) keeps decoded designs a plain ``list[str]``; every oracle in
    ``seiko.oracles.molecules`` returns NaN for "".
    """
    try:
        smiles = sf.decoder(selfies)
    except sf.DecoderError:  # a symbol SELFIES does not know
        return ""
    return canonical_smiles(smiles) or ""


# ---------------------------------------------------------------------- vocabulary files
def load_vocabulary(source: list[str] | str) -> list[str]:
    """A vocabulary from a list, a JSON file (a list of symbols) or a Lightning checkpoint.

    A checkpoint (any file not ending in ``.json``) is read for ``hyper_parameters["vocabulary"]``,
    which is where ``MoleculeDiffusion`` keeps it.
    """
    if isinstance(source, list):
        return list(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {str(path)!r} does not exist")
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as handle:
            symbols = json.load(handle)
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        symbols = checkpoint.get("hyper_parameters", {}).get("vocabulary")
        if symbols is None:
            raise ValueError(f"{path}: checkpoint has no hyper_parameters['vocabulary']")
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ValueError(f"{path}: expected a JSON list of symbol strings, got {type(symbols)}")
    return symbols


# ---------------------------------------------------------------------- reading
class MoleculeRecord(NamedTuple):
    """One data line: its number, the raw SMILES, and its canonical SMILES and SELFIES tokens, or
    the reason it cannot be used (``error``)."""

    line: int
    raw: str
    canonical: str | None
    tokens: list[str] | None
    error: str | None


def read_smiles(path: str | Path, column: str = "SMILES") -> Iterator[tuple[int, str]]:
    """Yield (line number, raw SMILES) from a CSV/TSV (``column``) or .smi/.txt file (gz ok)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    table = suffixes[-1] if suffixes and suffixes[-1] in (".csv", ".tsv") else None
    with open_text(path) as handle:
        if table is not None:
            reader = csv.DictReader(handle, delimiter="\t" if table == ".tsv" else ",")
            if column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
            for row in reader:
                yield reader.line_num, (row[column] or "").strip()
        else:
            for n, line in enumerate(handle, start=1):
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    yield n, fields[0]


def _parse(path: Path, column: str) -> Iterator[MoleculeRecord]:
    for line, raw in read_smiles(path, column):
        try:
            canonical, selfies = encode_smiles(raw)
        except ValueError as err:
            yield MoleculeRecord(line, raw, None, None, str(err))
        else:
            # split here so that the cache holds tokens: splitting 50k SELFIES again takes seconds
            yield MoleculeRecord(line, raw, canonical, list(sf.split_selfies(selfies)), None)


# ---------------------------------------------------------------------- datamodule
def _index_batch(items: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"index": torch.stack([it[0] for it in items])}


class MoleculeDataModule(L.LightningDataModule):
    """SMILES files as one-hot SELFIES token sequences.

    Args:
        path: training molecules (CSV/TSV with ``column``, or .smi/.txt; ``.gz`` ok).
        test_path: held-out test molecules (same format); None: the validation split serves as test.
        column: the SMILES column of a CSV/TSV file.
        vocabulary: None (build it from the data), a list of symbols, or the path of a JSON list
            or of a Lightning checkpoint of the pretrained model; must include ``pad_symbol``.
        seq_len: L, the padded number of SELFIES tokens (MOSES molecules have at most about 50).
        pad_symbol: the padding token; "[nop]" is SELFIES' no-op, so padding decodes to nothing.
        on_invalid: "skip" (report and drop) or "fatal" (raise) for an unusable line.
        val_fraction: fraction of the training molecules held out for validation (seeded split).
        max_molecules: keep only the first N usable molecules of each file (None: all).
        cache_dir: where to cache each file's parse (None: no cache); a file read only in part
            (``max_molecules``, or a fatal line) is not cached.
        batch_size, num_workers, seed: as usual.
        predict_samples: how many designs ``seiko predict`` draws.
    """

    def __init__(
        self,
        path: str,
        test_path: str | None = None,
        column: str = "SMILES",
        vocabulary: list[str] | str | None = None,
        seq_len: int = 64,
        pad_symbol: str = PAD_SYMBOL,
        on_invalid: Literal["skip", "fatal"] = "skip",
        val_fraction: float = 0.05,
        max_molecules: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        predict_samples: int = 100,
    ) -> None:
        super().__init__()
        if on_invalid not in ("skip", "fatal"):
            raise ValueError(f"on_invalid={on_invalid!r} is not one of ('skip', 'fatal')")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if max_molecules is not None and max_molecules < 1:
            raise ValueError(f"max_molecules must be >= 1 or None, got {max_molecules}")
        # the module's hparams hold the vocabulary itself; the argument (often None or a path)
        # would clash with it when Lightning merges both for the logger
        self.save_hyperparameters(ignore=["vocabulary"])
        self.seq_len = seq_len
        self.pad_symbol = pad_symbol
        self.num_invalid = 0
        self._vocabulary: list[str] | None = None
        if vocabulary is not None:
            self._vocabulary = load_vocabulary(vocabulary)
            if len(set(self._vocabulary)) != len(self._vocabulary):
                raise ValueError(f"vocabulary {vocabulary!r} repeats a symbol")
            if pad_symbol not in self._vocabulary:
                raise ValueError(f"vocabulary {vocabulary!r} lacks the pad symbol {pad_symbol!r}")
        self._smiles: dict[str, list[str]] | None = None
        self._sets: dict[str, TensorDataset] = {}

    # ------------------------------------------------------------------ public properties
    @property
    def vocabulary(self) -> list[str]:
        """The symbols in one-hot order (reads the data when the vocabulary was not given)."""
        if self._vocabulary is None:
            self._load()
        return self._vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def smiles(self) -> dict[str, list[str]]:
        """Canonical SMILES of each split: {"train": [...], "val": [...], "test": [...]}."""
        if self._smiles is None:
            self._load()
        return self._smiles

    def save_vocabulary(self, path: str | Path) -> None:
        """Write the vocabulary as a JSON list (what the ``vocabulary`` argument reads back)."""
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.vocabulary, handle, indent=1)

    # ------------------------------------------------------------------ loading
    def _cache_path(self, path: Path) -> Path:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        key = [self.hparams.column, rdkit.__version__, sf.__version__, _CACHE_FORMAT]
        digest.update(json.dumps(key).encode())
        name = path.name.split(".")[0]
        return Path(self.hparams.cache_dir) / f"{name}-{digest.hexdigest()[:16]}.json.gz"

    def _records(self, path: Path) -> Iterator[MoleculeRecord]:
        """The file's parsed lines, from the cache when there is one."""
        cache = self._cache_path(path) if self.hparams.cache_dir is not None else None
        if cache is not None and cache.is_file():
            with gzip.open(cache, "rt", encoding="utf-8") as handle:
                yield from (MoleculeRecord(*r) for r in json.load(handle))
            return
        records = []
        for record in _parse(path, self.hparams.column):
            records.append(record)
            yield record
        if cache is None:
            return
        # Reached only when the consumer read the whole file, so a cache is never partial. Written
        # to a temporary file and renamed, so concurrent ranks never read a half-written cache.
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8") as handle:
            json.dump([list(r) for r in records], handle)
        os.replace(tmp, cache)
        log.info("cached the parse of %s in %s", path, cache)

    def _reject(self, path: Path, line: int, reason: str) -> None:
        message = f"{path}:{line}: {reason}"
        if self.hparams.on_invalid == "fatal":
            raise ValueError(message)
        if self.num_invalid < _MAX_REPORTED:
            log.warning("skipping %s", message)
        self.num_invalid += 1

    def _read(self, path: Path) -> tuple[list[str], list[list[str]]]:
        """Canonical SMILES and SELFIES tokens of the usable molecules of one file."""
        allowed = set(self._vocabulary) if self._vocabulary is not None else None
        smiles, tokens = [], []
        for record in self._records(path):
            if record.error is not None:
                self._reject(path, record.line, record.error)
                continue
            symbols = record.tokens
            outside = sorted(set(symbols) - allowed) if allowed is not None else []
            if len(symbols) > self.seq_len:
                self._reject(
                    path,
                    record.line,
                    f"{record.raw!r} has {len(symbols)} SELFIES tokens, more than "
                    f"seq_len={self.seq_len}",
                )
            elif outside:
                self._reject(
                    path,
                    record.line,
                    f"{record.raw!r} has SELFIES tokens {outside} outside the given vocabulary "
                    f"({len(allowed)} symbols)",
                )
            else:
                smiles.append(record.canonical)
                tokens.append(symbols)
                if len(smiles) == self.hparams.max_molecules:
                    break
        if not smiles:
            raise ValueError(f"{path}: no usable molecule ({self.num_invalid} rejected so far)")
        return smiles, tokens

    def _encode(self, tokens: list[list[str]]) -> torch.Tensor:
        index = {s: i for i, s in enumerate(self._vocabulary)}
        pad = index[self.pad_symbol]
        rows = [[index[s] for s in seq] + [pad] * (self.seq_len - len(seq)) for seq in tokens]
        return torch.tensor(rows, dtype=torch.long)

    def _load(self) -> None:
        """Read every file, fix the vocabulary, encode, split; idempotent."""
        if self._smiles is not None:
            return
        hp = self.hparams
        self.num_invalid = 0
        files = {"train": Path(hp.path)}
        if hp.test_path is not None:
            files["test"] = Path(hp.test_path)
        read = {split: self._read(path) for split, path in files.items()}
        if self.num_invalid:
            names = [str(p) for p in files.values()]
            log.warning("%d lines rejected in %s", self.num_invalid, names)
        if self._vocabulary is None:
            symbols = {s for _, tokens in read.values() for seq in tokens for s in seq}
            self._vocabulary = sorted(symbols | {self.pad_symbol})

        train_smiles, train_tokens = read["train"]
        n_val = int(round(len(train_smiles) * hp.val_fraction))
        perm = torch.randperm(len(train_smiles), generator=torch.Generator().manual_seed(hp.seed))
        x = self._encode(train_tokens)
        split = {"train": perm[n_val:].tolist(), "val": perm[:n_val].tolist()}
        self._sets = {name: TensorDataset(x[idx]) for name, idx in split.items()}
        self._smiles = {name: [train_smiles[i] for i in idx] for name, idx in split.items()}
        if "test" in read:
            test_smiles, test_tokens = read["test"]
            self._sets["test"] = TensorDataset(self._encode(test_tokens))
            self._smiles["test"] = test_smiles
        else:
            self._sets["test"], self._smiles["test"] = self._sets["val"], self._smiles["val"]

    def setup(self, stage: str | None = None) -> None:
        self._load()

    # ------------------------------------------------------------------ loaders
    def _collate(self, items: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
        idx = torch.stack([it[0] for it in items])
        one_hot = torch.nn.functional.one_hot(idx, len(self._vocabulary)).float() * 2 - 1
        return {"x": one_hot, "tokens": idx}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
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


__all__ = [
    "PAD_SYMBOL",
    "MoleculeDataModule",
    "MoleculeRecord",
    "canonical_smiles",
    "decode_selfies",
    "encode_smiles",
    "load_vocabulary",
    "parse_smiles",
    "read_smiles",
]
