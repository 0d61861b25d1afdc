"""MoleculeDataModule: reading, canonicalisation, bad lines, vocabulary, padding, splits, cache."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
import selfies as sf
import torch

from seiko.datamodules import molecules as mol_data
from seiko.datamodules.molecules import (
    MoleculeDataModule,
    canonical_smiles,
    decode_selfies,
    encode_smiles,
    load_vocabulary,
    read_smiles,
)

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
# line numbers as in the file: the header is line 1
GOOD = {2: "CCO", 3: "OCC", 4: "c1ccccc1O", 7: ASPIRIN, 8: "C1=CC=CC=C1"}
BAD = {5: "C1CC", 6: "", 9: "not_a_smiles"}


def tokens(smiles: str) -> list[str]:
    return list(sf.split_selfies(encode_smiles(smiles)[1]))


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    """A CSV with good lines, non-canonical spellings and three bad lines (5, 6, 9)."""
    lines = {**GOOD, **BAD}
    rows = ["name,SMILES"] + [f'm{n},"{lines[n]}"' for n in sorted(lines)]
    path = tmp_path / "mols.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def make(path: Path, **kwargs) -> MoleculeDataModule:
    kwargs.setdefault("seq_len", 32)
    kwargs.setdefault("val_fraction", 0.0)
    kwargs.setdefault("batch_size", 4)
    return MoleculeDataModule(str(path), **kwargs)


def test_chemistry_helpers_canonicalise_and_reject():
    assert canonical_smiles("OCC") == canonical_smiles("C(O)C") == "CCO"
    for bad in ("", "  ", None, "C1CC", "xyz", 3):
        assert canonical_smiles(bad) is None
    canonical, selfies = encode_smiles("c1ccccc1O")
    assert canonical == "Oc1ccccc1" and decode_selfies(selfies) == canonical
    with pytest.raises(ValueError, match="'C1CC' is not a valid SMILES"):
        encode_smiles("C1CC")
    assert decode_selfies("") == ""  # no atoms
    assert decode_selfies("[Xyz]") == ""  # a symbol SELFIES does not know


def test_skip_reports_file_and_line_and_counts(csv_file: Path, caplog: pytest.LogCaptureFixture):
    dm = make(csv_file)
    with caplog.at_level(logging.WARNING, logger="seiko.datamodules.molecules"):
        dm.setup()
    assert dm.num_invalid == len(BAD)
    for line, raw in BAD.items():
        assert f"{csv_file}:{line}: {raw!r}" in caplog.text
    assert "3 lines rejected" in caplog.text
    # canonical, in file order (val_fraction 0 keeps everything in train; the split permutes it)
    expected = [canonical_smiles(GOOD[n]) for n in sorted(GOOD)]
    assert sorted(dm.smiles["train"]) == sorted(expected)
    assert dm.smiles["train"].count("CCO") == 2  # "CCO" and "OCC" are one molecule
    assert "c1ccccc1" in dm.smiles["train"]  # Kekulé benzene read aromatic


def test_fatal_names_the_first_bad_line(csv_file: Path):
    dm = make(csv_file, on_invalid="fatal")
    with pytest.raises(ValueError, match=rf"{csv_file}:5: 'C1CC' is not a valid SMILES"):
        dm.setup()


def test_too_long_for_seq_len_is_an_invalid_line(csv_file: Path, caplog: pytest.LogCaptureFixture):
    limit = len(tokens(ASPIRIN)) - 1
    dm = make(csv_file, seq_len=limit)
    with caplog.at_level(logging.WARNING, logger="seiko.datamodules.molecules"):
        dm.setup()
    assert ASPIRIN not in dm.smiles["train"] and dm.num_invalid == len(BAD) + 1
    assert f"{csv_file}:7: {ASPIRIN!r} has {limit + 1} SELFIES tokens" in caplog.text
    only_long = csv_file.with_name("long.smi")
    only_long.write_text(f"CCO\n{ASPIRIN}\n")
    with pytest.raises(ValueError, match=rf"long.smi:2: .* more than seq_len={limit}"):
        make(only_long, seq_len=limit, on_invalid="fatal").setup()


def test_symbol_outside_a_given_vocabulary(tmp_path: Path):
    path = tmp_path / "mols.smi"
    path.write_text("# a comment\nCCO ethanol\n\nCCN ethylamine\n")
    vocabulary = ["[C]", "[O]", "[nop]"]
    dm = make(path, vocabulary=vocabulary)
    dm.setup()
    assert dm.smiles["train"] == ["CCO"] and dm.num_invalid == 1
    assert dm.vocabulary == vocabulary  # a given vocabulary is used as is, order included
    with pytest.raises(ValueError, match=r"mols.smi:4: 'CCN' has SELFIES tokens \['\[N\]'\]"):
        make(path, vocabulary=vocabulary, on_invalid="fatal").setup()


def test_vocabulary_is_sorted_deterministic_and_round_trips_through_json(
    csv_file: Path, tmp_path: Path
):
    dm = make(csv_file)
    vocabulary = dm.vocabulary  # reading the property loads the data (what the CLI link does)
    expected = sorted({s for smiles in GOOD.values() for s in tokens(smiles)} | {"[nop]"})
    assert vocabulary == expected and dm.vocab_size == len(expected)
    assert make(csv_file, seed=123).vocabulary == vocabulary
    dm.save_vocabulary(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text()) == vocabulary
    again = make(csv_file, vocabulary=str(tmp_path / "vocab.json"))
    assert again.vocabulary == vocabulary
    assert load_vocabulary(vocabulary) == vocabulary
    with pytest.raises(ValueError, match="lacks the pad symbol"):
        make(csv_file, vocabulary=["[C]", "[O]"])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        make(csv_file, vocabulary=str(tmp_path / "missing.json"))


def test_batches_are_padded_one_hot(csv_file: Path):
    seq_len = 24
    dm = make(csv_file, seq_len=seq_len, test_path=str(csv_file))  # test: in file order
    dm.setup()
    x = next(iter(dm.test_dataloader()))["x"]
    assert x.shape == (4, seq_len, dm.vocab_size)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert torch.all((x > 0).sum(-1) == 1)  # exactly one hot symbol per position
    pad = dm.vocabulary.index("[nop]")
    for row, smiles in zip(x, dm.smiles["test"], strict=False):
        n = len(tokens(smiles))
        ids = row.argmax(-1)
        assert torch.all(ids[n:] == pad) and not torch.any(ids[:n] == pad)
        assert "".join(dm.vocabulary[i] for i in ids[:n]) == encode_smiles(smiles)[1]


def test_split_is_seeded_and_test_file_is_separate(csv_file: Path, tmp_path: Path):
    test_file = tmp_path / "test.txt.gz"
    with gzip.open(test_file, "wt") as handle:
        handle.write("OCC\nCCCC\n")
    a = make(csv_file, test_path=str(test_file), val_fraction=0.4, seed=1)
    b = make(csv_file, test_path=str(test_file), val_fraction=0.4, seed=1)
    assert a.smiles == b.smiles
    assert len(a.smiles["val"]) == 2 and len(a.smiles["train"]) == len(GOOD) - 2
    assert a.smiles["test"] == ["CCO", "CCCC"]
    a.setup()
    assert len(a.train_dataloader().dataset) == len(GOOD) - 2
    assert len(a.test_dataloader().dataset) == 2
    predict = list(make(csv_file, predict_samples=6).predict_dataloader())
    assert torch.cat([b["index"] for b in predict]).tolist() == list(range(6))


def test_max_molecules_and_missing_column(csv_file: Path):
    dm = make(csv_file, max_molecules=2)
    assert dm.smiles["train"] and len(dm.smiles["train"]) == 2
    with pytest.raises(ValueError, match="no column 'smiles'"):
        make(csv_file, column="smiles").setup()
    assert [line for line, _ in read_smiles(csv_file)] == sorted({**GOOD, **BAD})


def test_cache_is_reused(csv_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "cache"
    first = make(csv_file, cache_dir=str(cache))
    first.setup()
    assert len(list(cache.glob("mols-*.json.gz"))) == 1

    def no_parsing(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mol_data, "_parse", no_parsing)
    second = make(csv_file, cache_dir=str(cache))
    second.setup()
    assert second.smiles == first.smiles and second.vocabulary == first.vocabulary
    assert second.num_invalid == first.num_invalid
    # a changed file has another key: it is parsed again
    csv_file.write_text("SMILES\nCCO\n")
    with pytest.raises(AssertionError, match="cache should have been used"):
        make(csv_file, cache_dir=str(cache)).setup()


def test_shipped_moses_subset_reads_without_rejections():
    root = Path(__file__).resolve().parents[2] / "data"
    dm = MoleculeDataModule(str(root / "moses_test_5k.csv.gz"), max_molecules=300, seq_len=64)
    dm.setup()
    assert dm.num_invalid == 0 and len(dm.smiles["train"]) + len(dm.smiles["val"]) == 300
    assert "[nop]" in dm.vocabulary and len(dm.vocabulary) <= 27
